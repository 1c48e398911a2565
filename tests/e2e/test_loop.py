"""The whole loop on one real stack, in order: a DAG run publishes and deploys v1; a REST-triggered run
with nothing new skips; calm traffic fires nothing; drifted traffic fires FeatureDrift, which
reaches the bridge through Alertmanager and starts exactly one Airflow run; new data retrains by
itself and the canary promotes the new version; every dashboard query has data from all of that."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.datasets import DatasetStore
from monitoring.grafana.panels import all_queries
from monitoring.grafana.render import query_range, render
from monitoring.traffic import replay
from tasks.stock_forecast.synthetic import regime_windows
from tests.e2e.loop_stack import DAG_ID, MODEL, LoopStack, Traffic
from tests.support import wait_until
from training.run_area import RunArea

pytestmark = pytest.mark.timeout(900)
DRIFT_ALERTS = 'ALERTS{alertname=~"FeatureDrift|PredictionDrift"}'
CLASSIFIER = "image-classifier"


def generate(stack: LoopStack, *args: str, env: dict[str, str] | None = None) -> None:
    stack.flywheel_json("data", "generate", "--symbols", "4", "--days", "500", *args, env=env)


def test_new_data_starts_a_run_by_itself_which_publishes_and_deploys_v1(loop_stack: LoopStack) -> None:
    stack = loop_stack
    generate(stack, "--start", "2021-01-04")
    wait_until(lambda: 1 in stack.store.list_versions(MODEL), 240, "a scheduled run to publish v1", 1)

    def published() -> list[dict[str, Any]]:
        return [
            run
            for run in stack.runs()
            if any(
                t.task_id == "publish" and t.state == "success"
                for t in stack.airflow.task_states(DAG_ID, run["dag_run_id"])
            )
        ]

    # The manifest appears a moment before Airflow records the publish task's success.
    wait_until(lambda: bool(published()), 60, "the publish task to be recorded", 1)
    [run] = published()
    assert run["run_type"] == "scheduled", "nobody triggered it"
    states = {t.task_id: t.state for t in stack.airflow.task_states(DAG_ID, run["dag_run_id"])}
    expected = ("ingest", "preprocess", "train_pytorch", "train_tensorflow", "evaluate", "package",
                "replay", "publish")  # fmt: skip
    assert {task: states[task] for task in expected} == {task: "success" for task in expected}, states
    assert states["gate_failed"] == "skipped" and states["replay_failed"] == "skipped", states
    # The version names what it was trained on: the snapshot ingest took, by id and content hash.
    manifest = stack.store.get_manifest(MODEL, 1)
    snapshot = DatasetStore(stack.store.storage).latest(MODEL)
    assert manifest.lineage.dataset_snapshot == snapshot.snapshot_id
    assert manifest.lineage.dataset_hash == snapshot.content_hash
    wait_until(
        lambda: [(v["version"], v["weight"]) for v in stack.deployment()["variants"]] == [(1, 100.0)],
        120,
        "the run's deploy task to serve v1",
        interval_s=1,
    )
    # The stack's profile: the Celery workers ran the tasks, and preprocess went through spark-submit.
    assert stack.celery_tasks_run() >= 9, "ingest to report, each on a Celery worker"
    preprocessed = RunArea(stack.store.storage, MODEL, snapshot.snapshot_id).result("preprocess")
    assert preprocessed is not None and preprocessed["spark"]["spark_submit"] is True, preprocessed


def test_a_rest_triggered_run_with_nothing_new_skips_cleanly(loop_stack: LoopStack) -> None:
    stack = loop_stack
    result = stack.flywheel_json("retrain", MODEL, "--reason", "manual", "--wait", "--timeout", "300")
    assert result["state"] == "success"
    assert result["tasks"]["ingest"] == "skipped" and result["tasks"]["report"] == "success"
    assert {task for task, state in result["tasks"].items() if state == "success"} == {"report"}
    metrics = stack.http.get(f"{stack.settings.gateway_url}/metrics").text
    assert f'flywheel_retrain_runs_total{{model="{MODEL}",state="skipped"}}' in metrics


def test_a_failed_run_is_reported_and_fires_retrain_failed(loop_stack: LoopStack) -> None:
    """Ingest refuses a CSV without the OHLCV header on both tries; the DAG's failure callback
    reports it and Prometheus fires RetrainFailed for that model."""
    from model_store.backends.s3 import s3_client

    stack = loop_stack
    s3_client(stack.settings).put_object(
        Bucket=stack.settings.raw_bucket, Key="broken/ZZZ.csv", Body=b"when,what\n2024-01-02,oops\n"
    )
    result = stack.flywheel(
        "retrain", "ghost", "--data-prefix", "broken/", "--reason", "failure test", "--wait", "--json",
        "--timeout", "300",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["state"] == "failed" and outcome["tasks"]["ingest"] == "failed", outcome
    assert outcome["tasks"]["report"] in ("upstream_failed", "skipped"), outcome
    wait_until(
        lambda: any(
            a["metric"].get("model") == "ghost" for a in stack.prometheus('ALERTS{alertname="RetrainFailed"}')
        ),
        120,
        "RetrainFailed for ghost",
        interval_s=1,
    )
    metrics = stack.http.get(f"{stack.settings.gateway_url}/metrics").text
    assert 'flywheel_retrain_runs_total{model="ghost",state="failed"} 1.0' in metrics


def test_calm_traffic_fires_no_drift_alert(loop_stack: LoopStack) -> None:
    stack = loop_stack
    with Traffic(stack) as traffic:
        wait_until(
            lambda: (
                stack.exporter_gauge("flywheel_drift_window_samples").get(f'model="{MODEL}",version="1"', 0)
                >= 2000
            ),
            120,
            "a full drift window of calm traffic",
            interval_s=0.5,
        )
        wait_until(lambda: len(stack.prometheus("flywheel_feature_psi")) == 8, 30, "Prometheus to scrape PSI")
        seen: list[float] = []
        deadline = time.monotonic() + 15  # several rule evaluations (1 s) beyond the alerts' 2 s `for`
        while time.monotonic() < deadline:
            assert stack.prometheus(DRIFT_ALERTS) == [], "no drift alert, not even pending"
            seen += [float(s["value"][1]) for s in stack.prometheus("flywheel_feature_psi")]
            time.sleep(1)  # sampling the alert state over time, not waiting for a server
    assert traffic.statuses.keys() == {"200"}
    assert seen and max(seen) < 0.2
    assert stack.runs("alert__") == []


def test_drifted_traffic_fires_feature_drift_and_starts_exactly_one_run(loop_stack: LoopStack) -> None:
    stack = loop_stack
    url = f"{stack.settings.gateway_url}/admin/alerts"
    assert stack.http.post(url, json={"status": "firing", "alerts": []}).status_code == 401
    malformed = stack.http.post(
        url, content=b'{"status": "firing", "alerts": [{}]}', headers=stack.admin_headers
    )
    assert malformed.status_code == 400 and "error" in malformed.json()

    with Traffic(stack, shift={"volatility_5d": 2.0}, seed=1):
        wait_until(
            lambda: any(
                a["metric"]["alertname"] == "FeatureDrift" and a["metric"].get("feature") == "volatility_5d"
                for a in stack.prometheus('ALERTS{alertstate="firing"}')
            ),
            120,
            "FeatureDrift on volatility_5d to fire",
            interval_s=0.5,
        )
        wait_until(
            lambda: len(stack.runs("alert__")) >= 1, 60, "the bridge to trigger the DAG", interval_s=0.5
        )
        # Keep drifting well past Alertmanager's group interval: repeats must not start more runs.
        time.sleep(15)  # observing that nothing more happens; no server is being waited for
    runs = stack.runs("alert__")
    assert len(runs) == 1, [run["dag_run_id"] for run in runs]
    [run] = runs
    assert run["conf"]["model"] == MODEL and "FeatureDrift" in run["conf"]["reason"]
    assert any(labels.get("feature") == "volatility_5d" for labels in run["conf"]["alert_labels"])
    outbox = stack.http.get(f"{stack.settings.gateway_url}/admin/retrain", headers=stack.admin_headers).json()
    assert outbox["pending"] == [] and [e["trigger"]["dag_run_id"] for e in outbox["delivered"]] == [
        run["dag_run_id"]
    ]
    finished = stack.wait_run_finished(run["dag_run_id"], 300)
    assert finished["state"] == "success"  # skipped inside: the alert came without new data


def test_new_data_retrains_by_itself_and_the_canary_promotes_the_new_version(loop_stack: LoopStack) -> None:
    stack = loop_stack
    before = {run["dag_run_id"] for run in stack.runs()}
    generate(stack, "--start", "2023-01-02", "--drift")
    landed = time.monotonic()
    # Live traffic from the new regime, as callers send once the world has shifted: v2's replay
    # and canary judge its answers against its own validation profile, which v1's inputs are not.
    profile = json.loads(stack.store.read_artifact(MODEL, 1, "profile.json"))
    shifted = regime_windows(symbols=4, start=date(2023, 1, 2), days=500, drift=True, seed=7)
    with Traffic(stack, features=replay(shifted, profile, 4096, np.random.default_rng(2))):

        def scheduled_run_published() -> bool:
            return any(
                run["run_type"] == "scheduled"
                and run["dag_run_id"] not in before
                and run["state"] == "success"
                for run in stack.runs()
            ) and 2 in stack.store.list_versions(MODEL)

        wait_until(scheduled_run_published, 300, "a scheduled run to take the new data and publish v2", 1)
        stack.wait_promoted(MODEL, 2, 300, "the canary of v2 to promote itself")
    loop_s = time.monotonic() - landed
    spec = stack.http.get(
        f"{stack.settings.gateway_url}/admin/deployments/{MODEL}", headers=stack.admin_headers
    )
    assert [(v["version"], v["weight"]) for v in spec.json()["variants"]] == [(2, 100.0)]
    manifest = stack.store.get_manifest(MODEL, 2)
    assert manifest.gate is not None and manifest.gate.passed
    print(f"new data -> v2 serving 100 %: {loop_s:.0f} s")


def test_the_classifier_trains_serves_and_retrains_after_its_images_drift(loop_stack: LoopStack) -> None:
    """The second task on the same stack and the same DAG: the run's conf names the model, the
    model's registration names the task. Inverted images drift the inputs and the confidence; the
    bridge retrains the classifier (not the forecaster) and its canary promotes v2."""
    from tasks.fashion_mnist.data import select

    stack = loop_stack
    stack.flywheel_json("models", "register", CLASSIFIER, "--task", "fashion_mnist")
    stack.flywheel_json("data", "fashion", "--batch", "base", "--count", "4000")
    first = stack.flywheel_json(
        "retrain", CLASSIFIER, "--reason", "first classifier", "--wait", "--timeout", "600", timeout=700
    )
    assert first["state"] == "success" and first["tasks"]["publish"] == "success", first
    wait_until(
        lambda: (
            [(v["version"], v["weight"]) for v in stack.deployment(CLASSIFIER)["variants"]] == [(1, 100.0)]
        ),
        120,
        "the classifier's deploy task to serve v1",
        interval_s=1,
    )
    assert stack.store.get_manifest(CLASSIFIER, 1).task == "fashion_mnist"

    _, images, truth = select("test", 0, 512)
    inverted = (255 - images).astype(np.float32)
    before = {run["dag_run_id"] for run in stack.runs("alert__")}
    stack.flywheel_json(
        "data",
        "fashion",
        "--batch",
        "inverted",
        "--start",
        "4000",
        "--count",
        "2000",
        "--transform",
        "invert",
    )
    with Traffic(stack, model=CLASSIFIER, features=inverted) as traffic:
        wait_until(
            lambda: any(
                a["metric"]["alertname"] == "FeatureDrift" and a["metric"].get("model") == CLASSIFIER
                for a in stack.prometheus('ALERTS{alertstate="firing"}')
            ),
            120,
            "FeatureDrift on the classifier's inputs or confidence",
            interval_s=0.5,
        )
        # CBPE in the real exporter: v1's accuracy estimated from live confidences, before labels.
        wait_until(
            lambda: bool(stack.prometheus(f'flywheel_estimated_quality{{model="{CLASSIFIER}",version="1"}}')),
            60,
            "the exporter's CBPE estimate for v1",
            interval_s=0.5,
        )

        stack.wait_promoted(
            CLASSIFIER, 2, 480, "the drift-triggered run to publish v2 and its canary to promote it"
        )
    runs = [run for run in stack.runs("alert__") if run["dag_run_id"] not in before]
    assert [run["conf"]["model"] for run in runs] == [CLASSIFIER], "the bridge retrained the right model"
    assert set(traffic.statuses) == {"200"}, traffic.statuses
    evaluation = stack.store.get_manifest(CLASSIFIER, 2).gate
    assert evaluation is not None and evaluation.passed and evaluation.metric == "accuracy"
    assert evaluation.replay is not None and evaluation.replay["passed"], "the replay step ran before deploy"
    # The gateway captured a share of the classifier's traffic, as Parquet in the store.
    from model_store.capture import CaptureReader

    captured = CaptureReader(stack.store.storage).read(CLASSIFIER, columns=["version", "confidence"])
    assert captured.num_rows > 0 and set(captured["version"].to_pylist()) <= {1, 2}

    metrics = stack.http.get(f"{stack.settings.gateway_url}/metrics").text
    assert f'flywheel_retrain_runs_total{{model="{CLASSIFIER}",state="published"}} 2.0' in metrics

    # Labels come back for captured requests: the real exporter joins them and publishes v2's live
    # accuracy beside its holdout accuracy.
    labelled = labelled_requests(stack, inverted[:120], truth[:120])
    imported = stack.flywheel_json("labels", "import", CLASSIFIER, str(labelled))
    assert imported["labels"] == 120
    wait_until(
        lambda: bool(stack.prometheus(f'flywheel_live_quality{{model="{CLASSIFIER}",version="2"}}')),
        60,
        "the exporter's live quality of v2 on joined labels",
        interval_s=0.5,
    )
    [live] = stack.prometheus(f'flywheel_live_quality{{model="{CLASSIFIER}",version="2",metric="accuracy"}}')
    assert float(live["value"][1]) > 0.5, "v2 was retrained on inverted images: most of them right"

    scored = stack.flywheel_json("batch", "score", CLASSIFIER)
    assert scored["rows"] == 6000 and 0 < scored["to_label"] < scored["rows"], scored
    assert scored["label_threshold"] == 0.95
    import io

    import pandas as pd

    from model_store.backends.s3 import s3_client

    bucket, _, key = scored["labeling_uri"].removeprefix("s3://").partition("/")
    body = s3_client(stack.settings).get_object(Bucket=bucket, Key=key)["Body"].read()
    labeling = pd.read_parquet(io.BytesIO(body))
    assert len(labeling) == scored["to_label"] and (labeling["confidence"] < 0.95).all()
    assert labeling["source"].str.startswith(f"s3://{stack.settings.raw_bucket}/").all()
    assert set(labeling["predicted_label"]) <= set(stack.store.get_manifest(CLASSIFIER, 2).output.class_names)


def labelled_requests(stack: LoopStack, images: np.ndarray, truth: np.ndarray) -> Path:
    """One captured request per image, then a labelling team's CSV of their true classes."""
    rows = ["request_id,label"]
    for number, image in enumerate(images):
        request_id = f"labelled-{number}-{time.monotonic_ns()}"
        body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 28, 28],
                            "data": image.reshape(-1).tolist()}]}  # fmt: skip
        headers = {"x-request-id": request_id, "x-flywheel-capture": "on"}
        response = stack.http.post(
            f"{stack.settings.gateway_url}/v2/models/{CLASSIFIER}/infer", json=body, headers=headers
        )
        assert response.status_code == 200, response.text
        rows.append(f"{request_id},{int(truth[number])}")
    path = stack.home / f"labels-{time.monotonic_ns()}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_the_batch_scoring_dag_writes_predictions_and_a_labeling_set(
    loop_stack: LoopStack, tmp_path: Path
) -> None:
    import io

    import pandas as pd

    from model_store.backends.s3 import s3_client

    stack = loop_stack
    champion = stack.store.aliases(MODEL)["champion"]
    outcome = stack.dag_test("flywheel_batch_score", tmp_path / "airflow")
    assert outcome == {"run_state": "success", "tasks": {"score": "success"}}, outcome
    client = s3_client(stack.settings)
    bucket = stack.settings.raw_bucket

    def frames(prefix: str) -> list[pd.DataFrame]:
        keys = [
            item["Key"] for item in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        ]
        return [
            pd.read_parquet(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()))
            for key in keys
        ]

    [predictions] = frames(f"scored/{MODEL}/")
    [labeling] = frames(f"labeling/{MODEL}/")
    assert len(predictions) > 1000 and set(predictions["model_version"]) == {champion}
    assert predictions["prediction"].notna().all() and (predictions["disagreement"] >= 0).all()
    assert 0 < len(labeling) <= 0.06 * len(predictions)
    assert labeling["disagreement"].min() >= predictions["disagreement"].quantile(0.9)
    assert len(json.loads(labeling["features"].iloc[0])) == 10, "the inputs a person labels"
    # Everything under the raw prefix is scored now: the step says "nothing new" (exit 3), which the
    # DAG's task turns into a skip (skip_on_exit_code, checked by the DAG import tests).
    again = stack.flywheel("batch", "score", MODEL, "--json")
    assert again.returncode == 3, again.stdout + again.stderr


def test_every_dashboard_query_returns_data_and_the_panels_render(
    loop_stack: LoopStack, tmp_path: Path
) -> None:
    stack = loop_stack
    end = time.time()
    empty = [
        where
        for where, expr in all_queries()
        if not query_range(stack.settings.prometheus_url, expr, end - 900, end, 5)
    ]
    assert empty == [], f"queries without data: {empty}"
    rendered = render(stack.settings.prometheus_url, tmp_path, minutes=15)
    assert Path(rendered["png"]).stat().st_size > 20_000
    assert all(count > 0 for count in rendered["panels"].values()), rendered["panels"]
    assert rendered["annotations"] >= 2


def test_the_celery_profile_listens_on_loopback_and_logs_no_password(loop_stack: LoopStack) -> None:
    from flywheel.stack.process import ProcessRecord
    from tests.support import wildcard_listeners

    var = loop_stack.settings.var_path
    names = ["postgres", "redis", "airflow-celery-worker-0"]
    records = [ProcessRecord.from_file(var / "run" / f"{name}.json") for name in names]
    assert wildcard_listeners({record.pid for record in records}) == []
    passwords = [
        (var / "credentials" / name).read_text().strip() for name in ("postgres-password", "redis-password")
    ]
    for name in ("postgres-password", "redis-password", "airflow-database-url", "airflow-broker-url"):
        assert (var / "credentials" / name).stat().st_mode & 0o777 == 0o600, name
    logs = [*(var / "log").glob("*.log"), *(var / "airflow" / "logs").rglob("*.log")]
    for log in logs:
        text = log.read_text(errors="replace")
        assert not any(password in text for password in passwords), f"a database password in {log}"
    for record in records:
        assert not any(password in " ".join(record.argv) for password in passwords), record.name
