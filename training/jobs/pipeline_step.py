"""spark-submit entry point that runs one ``flywheel pipeline`` step on the submitted session.

    spark-submit --master spark://127.0.0.1:7077 training/jobs/pipeline_step.py \
        pipeline preprocess --model stock-forecaster --json

The arguments are a ``flywheel`` command line. The step works exactly as ``flywheel pipeline
preprocess`` does (it stages the snapshot from the store, preprocesses, uploads the run's result),
but on the master spark-submit was given: ``training.spark`` leaves the master alone when
spark-submit launched the process. The retrain DAG's ``spark-submit`` runner submits this file.
"""

from __future__ import annotations

import sys


def main() -> None:
    from flywheel.cli.main import main as flywheel_main

    sys.argv = ["flywheel", *sys.argv[1:]]
    flywheel_main()


if __name__ == "__main__":
    main()
