"""The demo's second task: the image classifier's drift loop on the same stack, timed.

Inverted images land in S3 and reach live traffic (a new camera); the drift exporter sees the
images' statistics and the model's confidence move, FeatureDrift fires for the classifier,
Alertmanager calls the retrain bridge, the same retraining DAG retrains the classifier (its task
comes from its registration), and the canary promotes v2. Called by ``deploy/local/demo.sh``.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import httpx
import numpy as np
from demo_loop import (  # this folder: both are scripts of `make demo`
    Timeline,
    delivered_triggers,
    firing_drift,
    wait_for,
)

from flywheel.settings import FlywheelSettings
from flywheel.stack.credentials import admin_token
from model_store import ModelStore
from monitoring.traffic import send_traffic
from tasks.fashion_mnist.data import select, transform_images

MODEL = "image-classifier"


def main() -> int:
    settings = FlywheelSettings()
    store = ModelStore.open(settings.resolve_store_uri(), settings)
    http = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {admin_token(settings)}"})
    signature = store.get_manifest(MODEL, 1).signature
    _, images, _ = select("test", 0, 1024)
    inverted = transform_images(images, "invert").astype(np.float32)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            # Small requests: the canary judges request counts, and images are heavy JSON.
            send_traffic(settings.gateway_url, MODEL, signature, inverted[:256], batch_rows=8)

    timeline = Timeline()
    subprocess.run(
        [sys.executable, "-m", "flywheel", "data", "fashion", "--batch", "inverted", "--start", "8000",
         "--count", "3000", "--transform", "invert", "--json"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    timeline.mark("drift onset: inverted images land in S3 and reach live traffic")

    alerts = wait_for(lambda: firing_drift(settings, MODEL), 300, "FeatureDrift on the classifier")
    timeline.mark(f"FeatureDrift firing on {', '.join(sorted(a['labels']['feature'] for a in alerts))}")
    entry = wait_for(
        lambda: delivered_triggers(http, settings, MODEL),
        120,
        "the retrain bridge to trigger the classifier's run",
    )[-1]
    timeline.mark(f"retrain bridge -> Airflow: run {entry['trigger']['dag_run_id']} for {MODEL}")
    wait_for(lambda: 2 in store.list_versions(MODEL), 600, "v2 of the classifier", interval_s=2)
    gate = store.get_manifest(MODEL, 2).gate
    assert gate is not None
    timeline.mark(
        f"v2 published: accuracy {gate.candidate_value:.3f} vs champion v1's {gate.champion_value:.3f} "
        "on the inverted holdout"
    )
    wait_for(lambda: store.aliases(MODEL).get("champion") == 2, 600, "the classifier's canary to promote")
    timeline.mark("rollout controller: v2 promoted, serving 100 %")
    stop.set()
    sender.join(timeout=30)
    timeline.show("the classifier's loop, timed from drift onset")
    return 0


if __name__ == "__main__":
    sys.exit(main())
