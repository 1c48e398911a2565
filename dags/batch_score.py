"""The batch-scoring DAG: new raw data -> the champion's predictions in S3 -> a labeling set.

Thin wiring around ``flywheel batch score`` (see ``training/batch_score.py``): it finds the raw
objects no earlier scoring took, computes the training features with Spark, scores them with the
pinned champion on TorchServe (PyTorch) and the TF-Serving runtime (TensorFlow), writes
predictions with the model version in every row to ``s3://<raw_bucket>/scored/<model>/``, and
the rows the two models disagree on most to ``s3://<raw_bucket>/labeling/<model>/``. Exit code 3
(nothing new) skips the run.

Schedule: ``FLYWHEEL_BATCH_SCORE_SCHEDULE`` (cron; empty turns it off). The runner
(``FLYWHEEL_DAG_RUNNER``, ``flywheel_runners.py``) makes the task a BashOperator (local) or a
KubernetesPodOperator in the platform image (kubernetes); under spark-submit it stays local.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Param, dag

# The runners sit beside this file. Airflow 3 puts the DAG folder on sys.path when it parses a bundle,
# but a bare DagBag or dag.test() does not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))
from flywheel_runners import flywheel_step

MODEL = os.environ.get("FLYWHEEL_MODEL_NAME", "stock-forecaster")
NOTHING_NEW = 3


@dag(
    dag_id="flywheel_batch_score",
    description="Score new raw data with the champion; send low-confidence rows to labeling.",
    schedule=os.environ.get("FLYWHEEL_BATCH_SCORE_SCHEDULE", "0 * * * *") or None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 1,
        "retry_delay": timedelta(seconds=10),
        "execution_timeout": timedelta(minutes=30),
    },
    params={
        "model": Param(MODEL, type="string", description="Model whose champion scores."),
        "label_share": Param(
            0.05, type="number", minimum=0, maximum=1, description="Share sent to labeling."
        ),
    },
    tags=["flywheel"],
)
def flywheel_batch_score() -> None:
    flywheel_step(
        "score",
        ["batch", "score", "{{ params.model }}", "--label-share", "{{ params.label_share }}", "--json"],
        skip_on_exit_code=NOTHING_NEW,
    )


batch_score = flywheel_batch_score()
