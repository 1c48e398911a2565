"""A Spark session starts here (local mode, on the shared session) and runs a real shuffle."""

from __future__ import annotations

from typing import Any


def test_spark_session_runs_a_groupby(spark: Any) -> None:
    frame = spark.createDataFrame([("AAPL", 1.0), ("AAPL", 3.0), ("TSLA", 5.0)], ["symbol", "close"])
    rows = {
        row["symbol"]: row["mean_close"]
        for row in frame.groupBy("symbol")
        .avg("close")
        .withColumnRenamed("avg(close)", "mean_close")
        .collect()
    }
    assert rows == {"AAPL": 2.0, "TSLA": 5.0}
    assert spark.conf.get("spark.sql.shuffle.partitions") == "8"
    # The shared session is in-process; tests/components/test_spark_cluster.py runs the cluster.
    assert spark.sparkContext.master.startswith("local")
