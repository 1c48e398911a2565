"""The DAG files parse in .venv-airflow without errors or cycles and wire the expected tasks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flywheel.stack.airflow_env import airflow_environment
from tests.support import REPO_ROOT

AIRFLOW_PYTHON = REPO_ROOT / ".venv-airflow" / "bin" / "python"


def parse_dags(home: Path, runner: str) -> dict[str, Any]:
    env = {**os.environ, **airflow_environment(home, REPO_ROOT / "dags"), "FLYWHEEL_RETRAIN_SCHEDULE": ""}
    env["FLYWHEEL_BATCH_SCORE_SCHEDULE"] = "0 * * * *"
    env["FLYWHEEL_DAG_RUNNER"] = runner
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(AIRFLOW_PYTHON), str(Path(__file__).with_name("dag_report.py")), str(REPO_ROOT / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["import_errors"] == {}, report["import_errors"]
    return report["dags"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return parse_dags(tmp_path_factory.mktemp("airflow-home"), "local")


def test_retrain_dag_wires_ingest_to_canary_with_gate_and_replay_branches(dags: dict[str, Any]) -> None:
    dag = dags["flywheel_retrain"]
    assert dag["tasks"] == sorted(
        ["ingest", "preprocess", "tune", "train_pytorch", "train_tensorflow", "evaluate", "gate_failed",
         "package", "replay", "replay_failed", "publish", "deploy", "report"]
    )  # fmt: skip
    edges = {tuple(edge) for edge in dag["edges"]}
    assert edges == {
        ("ingest", "preprocess"),
        ("preprocess", "tune"),
        ("tune", "train_pytorch"),
        ("tune", "train_tensorflow"),
        ("train_pytorch", "evaluate"),
        ("train_tensorflow", "evaluate"),
        ("evaluate", "package"),
        ("evaluate", "gate_failed"),
        ("package", "replay"),
        ("replay", "publish"),
        ("replay", "replay_failed"),
        ("publish", "deploy"),
        ("deploy", "report"),
        ("gate_failed", "report"),
        ("replay_failed", "report"),
    }
    assert {"model", "data_prefix", "reason", "alert_labels"} <= set(dag["params"])
    assert dag["max_active_runs"] == 1 and dag["has_failure_callback"]
    assert all(retries >= 1 for retries in dag["retries"].values())
    assert all(dag["timeouts"].values())
    assert dag["schedule"] == "NullTimetable", "FLYWHEEL_RETRAIN_SCHEDULE='' turns the schedule off"


def test_batch_score_dag_runs_one_scoring_task_with_retries(dags: dict[str, Any]) -> None:
    dag = dags["flywheel_batch_score"]
    assert dag["tasks"] == ["score"] and dag["edges"] == []
    assert {"model", "label_share"} <= set(dag["params"])
    assert dag["retries"]["score"] >= 1 and dag["timeouts"]["score"]


PIPELINE_STEPS = [
    "ingest",
    "preprocess",
    "tune",
    "train_pytorch",
    "train_tensorflow",
    "package",
    "publish",
    "deploy",
]


def pipeline_arguments(step: str) -> list[str]:
    command = {"train_pytorch": ["train", "--framework", "pytorch"],
               "train_tensorflow": ["train", "--framework", "tensorflow"]}.get(step, [step])  # fmt: skip
    return ["pipeline", *command, "--model", "{{ params.model }}", "--json"]


def test_the_local_runner_keeps_a_runs_params_out_of_the_shell_line(dags: dict[str, Any]) -> None:
    operators = dags["flywheel_retrain"]["operators"]
    for step in PIPELINE_STEPS:
        bash = operators[step]
        assert bash["operator"] == "BashOperator"
        assert "{{" not in bash["bash_command"], "templated values travel in the environment"
        assert bash["bash_command"].startswith('"$FLYWHEEL" pipeline ')
        assert bash["env"]["FLYWHEEL"].endswith("/.venv/bin/flywheel")
        assert "{{ params.model }}" in bash["env"].values()
    score = dags["flywheel_batch_score"]["operators"]["score"]
    assert score["operator"] == "BashOperator"
    # `flywheel batch score` exits 3 when nothing is new: a skipped task, not a failed run.
    assert score["skip_on_exit"] in (3, [3]), score


def test_the_kubernetes_runner_runs_each_step_as_a_pod_with_gpus_only_for_training(
    tmp_path: Path,
) -> None:
    dags = parse_dags(tmp_path, "kubernetes")
    operators = {
        **dags["flywheel_retrain"]["operators"],
        "score": dags["flywheel_batch_score"]["operators"]["score"],
    }
    for step in [*PIPELINE_STEPS, "score"]:
        pod = operators[step]
        assert pod["operator"] == "KubernetesPodOperator", step
        image, _, tag = pod["image"].rpartition(":")
        training = step.startswith("train_") or step == "tune"  # the search trains too
        expected = "/flywheel-train-gpu" if training else "/flywheel"
        assert image.endswith(expected) and tag and tag != "latest", "a pinned platform (or CUDA) image"
        assert pod["mounts"] == ["/tmp", "/var/lib/flywheel"], "writable scratch on a read-only root"
        assert pod["command"][0] == "flywheel" and pod["command"][-1] == "--json"
        if step != "score":
            assert pod["command"][1:] == pipeline_arguments(step)
        assert [source["config_map_ref"]["name"] for source in pod["env_from"]] == ["flywheel-settings"]
        assert ["FLYWHEEL_S3_SECRET_ACCESS_KEY", "flywheel-s3", "secret-access-key"] in pod["secrets"]
        assert not any("SECRET" in name or "TOKEN" in name for name in pod["env"]), "secrets by reference"
        resources = pod["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(
            resources["limits"]
        )
        assert pod["run_as_non_root"] is True
        assert ("nvidia.com/gpu" in resources["limits"]) is training, step
        assert bool(pod["node_selector"]) is training and bool(pod["tolerations"]) is training, step
    assert operators["train_pytorch"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_the_spark_submit_runner_submits_preprocess_and_keeps_the_rest_local(tmp_path: Path) -> None:
    operators = parse_dags(tmp_path, "spark-submit")["flywheel_retrain"]["operators"]
    submit = operators["preprocess"]
    assert submit["operator"] == "SparkSubmitOperator"
    assert submit["conn_id"] == "spark_default" and submit["spark_binary"] == "spark-submit"
    assert Path(submit["application"]) == REPO_ROOT / "training" / "jobs" / "pipeline_step.py"
    assert Path(submit["application"]).exists()
    assert submit["command"] == pipeline_arguments("preprocess")
    assert {"PYSPARK_PYTHON", "PATH"} <= set(submit["env"])
    assert {operators[step]["operator"] for step in PIPELINE_STEPS if step != "preprocess"} == {
        "BashOperator"
    }
