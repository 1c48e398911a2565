"""The demo's second task: the image classifier's data flywheel on the same stack, as a timeline.

A new camera sends inverted images, one per request (the client asks the gateway to capture them:
``x-flywheel-capture: on``). No new raw data lands: what the next version learns from is the
served traffic itself.

1. quality drops under drift: live accuracy on joined labels, and CBPE's estimate before them;
2. low-confidence images go to labelling (``flywheel labels queue``) and labels come back (here
   from the dataset's truth, as a labelling team would return them: ``flywheel labels import``);
3. ``ModelQualityDegraded`` fires and reaches the retrain bridge;
4. the retraining run takes the labelled captured images as its new data;
5. replay: the candidate answers the champion's captured traffic before any live request;
6. canary, with labels and CBPE in the analysis;
7. promote.

Called by ``deploy/local/demo.sh``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from demo_loop import (  # this folder: both are scripts of `make demo`
    Timeline,
    delivered_triggers,
    tuning_summary,
    wait_for,
)

from flywheel.settings import FlywheelSettings
from flywheel.stack.credentials import admin_token
from model_store import ModelStore
from tasks.fashion_mnist.data import select, transform_images

MODEL = "image-classifier"


def flywheel(*args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "flywheel", *args, "--json"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"demo: flywheel {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return json.loads(result.stdout)


def prometheus(settings: FlywheelSettings, query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{settings.prometheus_url}/api/v1/query", params={"query": query}, timeout=10)
    return list(response.json()["data"]["result"])


def gauge(settings: FlywheelSettings, name: str, version: int) -> float | None:
    rows = prometheus(settings, f'{name}{{model="{MODEL}",version="{version}",metric="accuracy"}}')
    return float(rows[0]["value"][1]) if rows else None


def quality_alert(settings: FlywheelSettings) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{settings.prometheus_url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == "ModelQualityDegraded"
            and a["labels"].get("model") == MODEL and a["state"] == "firing"]  # fmt: skip


def main() -> int:
    settings = FlywheelSettings()
    store = ModelStore.open(settings.resolve_store_uri(), settings)
    http = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {admin_token(settings)}"})
    holdout = store.get_manifest(MODEL, 1).metrics.get("pytorch_accuracy", float("nan"))
    _, images, truth = select("test", 0, 2000)
    inverted = transform_images(images, "invert").astype(np.float32)
    served: dict[str, int] = {}  # request id -> true class: what the labelling team will say
    stop = threading.Event()

    def traffic() -> None:
        client = httpx.Client(timeout=30)
        rng = np.random.default_rng(3)
        while not stop.is_set():
            index = int(rng.integers(len(inverted)))
            request_id = f"cam2-{uuid.uuid4().hex[:12]}"
            body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 28, 28],
                                "data": inverted[index].reshape(-1).tolist()}]}  # fmt: skip
            headers = {"x-request-id": request_id, "x-flywheel-capture": "on"}
            try:
                if client.post(
                    f"{settings.gateway_url}/v2/models/{MODEL}/infer", json=body, headers=headers
                ).is_success:
                    served[request_id] = int(truth[index])
            except httpx.HTTPError:
                pass  # a request lost while a server restarts: the gateway's own metrics count it

    def labelling() -> None:
        """The labelling team: what the queue holds comes back labelled a few seconds later."""
        with tempfile.TemporaryDirectory(prefix="flywheel-demo-labels-") as scratch:
            while not stop.wait(5):
                queued = flywheel("labels", "queue", MODEL, "--limit", "400")["requests"]
                known = [
                    (row["request_id"], served[row["request_id"]])
                    for row in queued
                    if row["request_id"] in served
                ]
                if not known:
                    continue
                path = Path(scratch) / "labels.csv"
                with path.open("w", newline="") as handle:
                    writer = csv.writer(handle)
                    writer.writerow(["request_id", "label"])
                    writer.writerows(known)
                flywheel("labels", "import", MODEL, str(path), "--source", "labelling-team")
                labelled.append(len(known))

    labelled: list[int] = []
    timeline = Timeline()
    threads = [threading.Thread(target=traffic, daemon=True), threading.Thread(target=labelling, daemon=True)]
    for thread in threads:
        thread.start()
    timeline.mark("drift onset: a new camera's inverted images reach live traffic (captured)")
    estimate = wait_for(lambda: gauge(settings, "flywheel_estimated_quality", 1), 300, "CBPE's estimate")
    timeline.mark(f"before any label, CBPE estimates v1's accuracy at {estimate:.2f} (holdout {holdout:.2f})")
    wait_for(lambda: labelled, 300, "the first labels to come back")
    timeline.mark(f"low-confidence images queued for labelling; the first {labelled[0]} labels came back")
    live = wait_for(
        lambda: gauge(settings, "flywheel_live_quality", 1), 300, "live accuracy on joined labels"
    )
    timeline.mark(
        f"labels joined to captured requests: v1's live accuracy {live:.2f} against holdout {holdout:.2f}"
    )
    wait_for(lambda: quality_alert(settings), 300, "ModelQualityDegraded on the classifier")
    timeline.mark("ModelQualityDegraded firing")

    def quality_triggers() -> list[dict[str, Any]]:
        triggers = delivered_triggers(http, settings, MODEL)
        return [entry for entry in triggers if "ModelQualityDegraded" in entry["trigger"]["reason"]]

    entry = wait_for(quality_triggers, 120, "the retrain bridge to trigger the classifier's run")[-1]
    timeline.mark(f"retrain bridge -> Airflow: run {entry['trigger']['dag_run_id']}")
    wait_for(lambda: 2 in store.list_versions(MODEL), 900, "v2 of the classifier", interval_s=2)
    manifest = store.get_manifest(MODEL, 2)
    lineage, gate = manifest.lineage, manifest.gate
    assert gate is not None
    timeline.mark(
        f"v2 trained on labelled captured traffic: {len(lineage.capture_batches)} capture batches, "
        f"{len(lineage.label_files)} label files; gate accuracy {gate.candidate_value:.3f} vs "
        f"v1's {gate.champion_value:.3f}"
    )
    if tuned := tuning_summary(lineage.tuning):
        timeline.mark(f"v2 {tuned}")
    replay = gate.replay or {}
    on_labels = replay.get("labelled") or {}
    nan = float("nan")
    timeline.mark(
        f"replay before the canary: {replay.get('requests', 0)} captured v1 requests in "
        f"{replay.get('seconds', 0)} s on a private {replay.get('server', '?')}; disagreement "
        f"{replay.get('disagreement', 0):.2f}; on {on_labels.get('requests', 0)} labels v2 "
        f"{on_labels.get('candidate_accuracy', nan):.2f} vs v1 {on_labels.get('champion_accuracy', nan):.2f}"
    )

    def rollout_status() -> str | None:
        rollout = http.get(f"{settings.gateway_url}/admin/deployments/{MODEL}").json().get("rollout") or {}
        return rollout.get("status") if rollout.get("candidate", "").endswith("-v2") else None

    wait_for(lambda: rollout_status() in ("running", "promoted"), 300, "the canary of v2 to start")
    timeline.mark("canary of v2 started (errors, latency, PSI, joined labels, CBPE)")
    wait_for(lambda: store.aliases(MODEL).get("champion") == 2, 900, "the classifier's canary to promote")
    timeline.mark("rollout controller: v2 promoted, serving 100 %")
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    timeline.show("the classifier's data flywheel, timed from drift onset")
    return 0


if __name__ == "__main__":
    sys.exit(main())
