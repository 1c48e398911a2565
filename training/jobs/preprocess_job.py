"""spark-submit entry point of a task's preprocessing (feature) job.

    spark-submit --master spark://127.0.0.1:7077 training/jobs/preprocess_job.py --task stock_forecast \
        --input file:///data/snapshot/raw --output file:///data/runs/x/preprocess

``--input`` and ``--output`` are folders: a plain path, ``file://``, ``s3a://`` or ``s3://`` (read
as ``s3a://``). A task's job reads and writes local folders, so object-store locations are copied
through Hadoop's FileSystem API into ``--staging-dir`` and back. That needs the cluster's S3
connector (hadoop-aws and the AWS SDK bundle jars, docs/operations.md "Scale out"); without it
the job stops with a message that names them. On a multi-node cluster the staging folder must be
one every executor reaches; on the local standalone cluster any local folder is.

Locally, ``flywheel pipeline preprocess`` stages the snapshot with boto3 and calls the task's
``preprocess`` in-process, on ``local[*]`` or on the configured cluster master.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from tasks.registry import DEFAULT_TASK, task_names

    parser = argparse.ArgumentParser(description="Flywheel preprocessing (Spark)")
    parser.add_argument("--task", default=DEFAULT_TASK, choices=task_names(), help="the task whose job runs")
    parser.add_argument("--input", required=True, help="folder of the snapshot's raw files (path or URI)")
    parser.add_argument("--output", required=True, help="folder for Parquet and JSON outputs (path or URI)")
    parser.add_argument("--master", default=None, help="Spark master; spark-submit's --master wins")
    parser.add_argument(
        "--staging-dir", default=None, help="where object-store folders are copied (default: a temp folder)"
    )
    args = parser.parse_args(argv)

    from tasks.base import PreprocessError
    from tasks.registry import get_task
    from training.locations import LocationError, staged_folders
    from training.spark import build_spark_session

    spark = build_spark_session(master=args.master, app_name=f"flywheel-preprocess-{args.task}")
    try:
        with staged_folders(spark, args.input, args.output, args.staging_dir) as (raw_dir, output_dir):
            report = get_task(args.task).preprocess(spark, raw_dir, output_dir)
    except (PreprocessError, LocationError) as error:
        print(f"preprocess failed: {error}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
