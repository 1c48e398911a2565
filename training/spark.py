"""The Spark session the preprocessing job runs in.

``local[*]`` in-process by default; ``spark://``, ``yarn`` or ``k8s://`` masters work unchanged
through ``spark-submit``. Session start costs 14-16 s here, so tests share one per run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def build_spark_session(
    master: str | None = "local[*]",
    app_name: str = "flywheel",
    driver_memory: str = "4g",
    shuffle_partitions: int = 8,
) -> SparkSession:
    """A session tuned for a small machine: few shuffle partitions, no UI, loopback driver.

    ``master=None`` leaves the master to spark-submit (or PySpark's default, ``local[*]``).
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder if master is None else SparkSession.builder.master(master)
    return (
        builder.appName(app_name)
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
