"""spark-submit entry point of the preprocessing job.

    spark-submit --master local[*] training/jobs/preprocess_job.py --input DIR --output DIR

On a cluster, point ``--input`` at an ``s3a://`` path of the snapshot's raw folder and
``--output`` at an ``s3a://`` run folder; the cluster's Spark distribution brings the hadoop-aws
jars and credentials (docs/operations.md, "Spark on a cluster"). Locally, `flywheel pipeline
preprocess` stages the snapshot with boto3 and calls :func:`training.preprocess.run_preprocess`
in-process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Flywheel preprocessing (Spark)")
    parser.add_argument("--input", required=True, type=Path, help="folder of raw Yahoo-style CSVs")
    parser.add_argument("--output", required=True, type=Path, help="folder for Parquet and JSON outputs")
    parser.add_argument("--master", default=None, help="Spark master; spark-submit's --master wins")
    args = parser.parse_args(argv)

    from training.preprocess import PreprocessError, run_preprocess
    from training.spark import build_spark_session

    spark = build_spark_session(master=args.master, app_name="flywheel-preprocess")
    try:
        report = run_preprocess(spark, args.input, args.output)
    except PreprocessError as error:
        print(f"preprocess failed: {error}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(json.dumps(report.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
