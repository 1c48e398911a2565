"""spark-submit entry point of a task's preprocessing (feature) job.

    spark-submit --master local[*] training/jobs/preprocess_job.py --task stock_forecast \
        --input DIR --output DIR

On a cluster, point ``--input`` at an ``s3a://`` path of the snapshot's raw folder and
``--output`` at an ``s3a://`` run folder; the cluster's Spark distribution brings the hadoop-aws
jars and credentials (docs/operations.md, "Spark on a cluster"). Locally, `flywheel pipeline
preprocess` stages the snapshot with boto3 and calls the task's ``preprocess`` in-process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from tasks.registry import DEFAULT_TASK, task_names

    parser = argparse.ArgumentParser(description="Flywheel preprocessing (Spark)")
    parser.add_argument("--task", default=DEFAULT_TASK, choices=task_names(), help="the task whose job runs")
    parser.add_argument("--input", required=True, type=Path, help="folder of the snapshot's raw files")
    parser.add_argument("--output", required=True, type=Path, help="folder for Parquet and JSON outputs")
    parser.add_argument("--master", default=None, help="Spark master; spark-submit's --master wins")
    args = parser.parse_args(argv)

    from tasks.base import PreprocessError
    from tasks.registry import get_task
    from training.spark import build_spark_session

    spark = build_spark_session(master=args.master, app_name=f"flywheel-preprocess-{args.task}")
    try:
        report = get_task(args.task).preprocess(spark, args.input, args.output)
    except PreprocessError as error:
        print(f"preprocess failed: {error}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
