"""The drift exporter on the live gateway's sampled bins: calm traffic stays quiet, a shifted
feature is flagged and published as a gauge the FeatureDrift rule reads."""

from __future__ import annotations

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, generate_latest

from model_store import ModelStore
from monitoring.drift import Thresholds
from monitoring.exporter import DriftExporter, gateway_bins
from tasks.stock_forecast.contract import FEATURE_COLUMNS, WINDOW
from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import GatewayStack


def in_distribution(
    profile: dict, rows: int, rng: np.random.Generator, shift: dict[str, float] | None = None
) -> np.ndarray:
    """Windows whose newest day follows each feature's reference bins (uniform inside a bin)."""
    features = np.zeros((rows, WINDOW, len(FEATURE_COLUMNS)), dtype=np.float32)
    for column, name in enumerate(FEATURE_COLUMNS):
        edges = np.asarray(profile["features"][name]["edges"])
        frequencies = np.asarray(profile["features"][name]["frequencies"])
        width = edges[-1] - edges[0] if len(edges) > 1 else 1.0
        bounds = np.concatenate([[edges[0] - width / 10], edges, [edges[-1] + width / 10]])
        chosen = rng.choice(len(frequencies), size=rows, p=frequencies / frequencies.sum())
        values = rng.uniform(bounds[chosen], bounds[chosen + 1])
        features[:, :, column] = values[:, None] + (shift or {}).get(name, 0.0)
    return features


def send(stack: GatewayStack, features: np.ndarray) -> None:
    for start in range(0, len(features), 16):
        assert stack.infer(features[start : start + 16], version=1).status_code == 200


def test_calm_traffic_stays_quiet_and_a_shifted_feature_is_flagged(canary: GatewayStack) -> None:
    store = ModelStore.open(canary.settings.resolve_store_uri())
    profile = orjson.loads(store.read_artifact(MODEL, 1, "profile.json"))
    rng = np.random.default_rng(5)
    read = gateway_bins(f"{canary.url}/metrics")
    thresholds = Thresholds(min_samples=300)

    send(canary, in_distribution(profile, 16, rng))  # the version's counters exist from here on
    calm = DriftExporter(store, read, CollectorRegistry(), window_s=600, thresholds=thresholds)
    calm.collect_once(now=0.0)  # the window starts here: earlier tests' traffic is not counted
    send(canary, in_distribution(profile, 480, rng))
    report = calm.collect_once(now=1.0)[(MODEL, "1")]
    assert {f.samples for f in report.features} == {480.0}
    assert [f.feature for f in report.features if f.level == "alert"] == [], report.to_json()

    drifted_registry = CollectorRegistry()
    drifted = DriftExporter(store, read, drifted_registry, window_s=600, thresholds=thresholds)
    drifted.collect_once(now=0.0)
    width = (
        profile["features"]["volatility_5d"]["edges"][-1] - profile["features"]["volatility_5d"]["edges"][0]
    )
    send(canary, in_distribution(profile, 480, rng, shift={"volatility_5d": 2 * width}))
    report = drifted.collect_once(now=1.0)[(MODEL, "1")]
    levels = {f.feature: f.level for f in report.features}
    assert levels["volatility_5d"] == "alert" and sum(level == "alert" for level in levels.values()) == 1
    exposition = generate_latest(drifted_registry).decode()
    gauge = f'flywheel_feature_psi{{feature="volatility_5d",model="{MODEL}",version="1"}}'
    value = float(next(line for line in exposition.splitlines() if line.startswith(gauge)).split()[-1])
    assert value >= 0.2, "what the FeatureDrift rule alerts on"

    # Traffic stops: once the window holds too few rows the verdict is withdrawn, not frozen.
    drifted.collect_once(now=1.0 + 601.0)
    quiet = generate_latest(drifted_registry).decode()
    assert f'flywheel_drift_window_samples{{model="{MODEL}",version="1"}} 0.0' in quiet
    assert "flywheel_feature_psi{" not in quiet and "flywheel_drift_detected{" not in quiet
