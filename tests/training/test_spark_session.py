"""The commands' Spark sessions keep Spark's own output off the terminal: a log file, no bars."""

from __future__ import annotations

from typing import Any


def test_driver_logs_go_to_the_file_and_the_progress_bar_is_off(spark: Any) -> None:
    log_file = spark.flywheel_log_file
    jvm = spark.sparkContext._jvm
    assert jvm.System.getProperty("flywheel.spark.log") == str(log_file)
    assert spark.conf.get("spark.ui.showConsoleProgress") == "false"
    # A warning from the driver lands in the file, through the log4j2 configuration it was given.
    jvm.org.apache.logging.log4j.LogManager.getLogger("flywheel.test").warn("marker from the test")
    assert "marker from the test" in log_file.read_text()
