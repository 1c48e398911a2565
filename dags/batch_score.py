"""The batch-scoring DAG: new raw data -> the champion's predictions in S3 -> a labeling set.

Thin wiring around ``flywheel batch score`` (see ``training/batch_score.py``): it finds the raw
objects no earlier scoring took, computes the training features with Spark, scores them with the
pinned champion on TorchServe (PyTorch) and the TF-Serving runtime (TensorFlow), writes
predictions with the model version in every row to ``s3://<raw_bucket>/scored/<model>/``, and
the rows the two models disagree on most to ``s3://<raw_bucket>/labeling/<model>/``. Exit code 3
(nothing new) skips the run.

Schedule: ``FLYWHEEL_BATCH_SCORE_SCHEDULE`` (cron; empty turns it off). In production the task is
a KubernetesPodOperator with the platform image, and the feature step a SparkSubmitOperator.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param, dag

REPO = Path(__file__).resolve().parents[1]
HOME = Path(os.environ.get("FLYWHEEL_HOME") or REPO)
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
    BashOperator(
        task_id="score",
        bash_command='"$FLYWHEEL" batch score "$MODEL" --label-share "$LABEL_SHARE" --json',
        env={
            "FLYWHEEL": str(REPO / ".venv" / "bin" / "flywheel"),
            "MODEL": "{{ params.model }}",
            "LABEL_SHARE": "{{ params.label_share }}",
        },
        append_env=True,
        cwd=str(HOME),
        skip_on_exit_code=NOTHING_NEW,
    )


batch_score = flywheel_batch_score()
