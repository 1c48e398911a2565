"""The Spark session the preprocessing job runs in.

``local[*]`` in-process by default; ``spark://``, ``yarn`` or ``k8s://`` masters work unchanged
through ``spark-submit``. Session start costs 14-16 s here, so tests share one per run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


LOG4J2_CONFIG = Path(__file__).with_name("spark-log4j2.properties")


def build_spark_session(
    master: str | None = "local[*]",
    app_name: str = "flywheel",
    driver_memory: str = "4g",
    shuffle_partitions: int = 8,
    log_file: Path | None = None,
) -> SparkSession:
    """A session tuned for a small machine: few shuffle partitions, no UI, a loopback driver when the
    executors are local (see driver_stays_on_loopback).

    ``master=None`` leaves the master to spark-submit (or PySpark's default, ``local[*]``).
    ``log_file``: the driver's log4j output goes there instead of the terminal, and the stage
    progress bar is off, so a command's own progress is what the user reads.
    """
    from pyspark.sql import SparkSession

    # spark-submit started this process: its --master and driver settings win.
    submitted = launched_by_spark_submit()
    if submitted:
        master = None
    on_this_machine = not submitted and driver_stays_on_loopback(master)
    if on_this_machine:
        # The JVM inherits this process's environment: without it Spark warns that the host name
        # resolves to loopback and picks another interface's address.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python UDF workers (a task's vectorised UDFs) must run this venv's interpreter, not the
    # first python3 on PATH, which lacks Flywheel's packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder if master is None else SparkSession.builder.master(master)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        builder = builder.config(
            "spark.driver.extraJavaOptions",
            f"-Dlog4j.configurationFile=file:{LOG4J2_CONFIG} -Dflywheel.spark.log={log_file}",
        ).config("spark.ui.showConsoleProgress", "false")
    if on_this_machine:
        builder = builder.config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.bindAddress", "127.0.0.1"
        )
    return (
        builder.appName(app_name)
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )


def launched_by_spark_submit() -> bool:
    """spark-submit runs a Python application with the JVM already up and tells PySpark its port."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))


def driver_stays_on_loopback(master: str | None) -> bool:
    """Pin the driver to 127.0.0.1 only when every executor runs on this machine: in local mode or
    with a master on loopback. A remote cluster's executors must reach the driver, so there Spark
    picks the address (``SPARK_LOCAL_IP``/``spark.driver.host`` from spark-submit still win)."""
    if master is None or master.startswith("local"):
        return True
    host = urlsplit(master).hostname or ""
    return host in {"127.0.0.1", "localhost", "::1"}
