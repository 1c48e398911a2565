"""Drift detector measurements: cost, false alarms on no-drift streams, detection delay.

A synthetic feature set: standard normals, reference profile = deciles of a large reference
sample (as training writes them). Live samples are binned with ``searchsorted`` (what the
gateway's sampling hook does) and judged with :mod:`monitoring.drift` at default thresholds.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from monitoring.drift import SlidingWindow, Thresholds, assess, assess_feature


def reference_profile(features: int, rng: np.random.Generator, bins: int = 10) -> dict[str, Any]:
    sample = rng.standard_normal((200_000, features))
    profile: dict[str, Any] = {"features": {}}
    for column in range(features):
        edges = np.quantile(sample[:, column], np.arange(1, bins) / bins)
        counts = np.bincount(np.searchsorted(edges, sample[:, column], side="right"), minlength=bins)
        profile["features"][f"f{column}"] = {
            "edges": edges.tolist(),
            "frequencies": (counts / counts.sum()).tolist(),
        }
    return profile


def binned(profile: dict[str, Any], rows: np.ndarray) -> dict[str, np.ndarray]:
    counts = {}
    for column, (name, entry) in enumerate(profile["features"].items()):
        edges = np.asarray(entry["edges"])
        counts[name] = np.bincount(
            np.searchsorted(edges, rows[:, column], side="right"), minlength=len(edges) + 1
        )
    return counts


def cost(features: int = 100, samples: int = 1_000_000, seed: int = 1) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    profile = reference_profile(features, rng)
    rows = rng.standard_normal((samples, features))
    began = time.perf_counter()
    counts = binned(profile, rows)
    binned_s = time.perf_counter() - began
    began = time.perf_counter()
    report = assess(profile, counts)
    judged_s = time.perf_counter() - began
    return {
        "features": features,
        "samples": samples,
        "bin_s": round(binned_s, 3),
        "psi_ks_s": round(judged_s, 4),
        "detected": float(report.detected),
    }


def false_alarms(
    window: int = 2000, samples: int = 1_000_000, features: int = 10, seed: int = 2
) -> dict[str, Any]:
    """Alerts raised on a no-drift stream, judged every ``window`` samples at default thresholds."""
    rng = np.random.default_rng(seed)
    profile = reference_profile(features, rng)
    feature_alerts = dataset_alerts = windows = 0
    worst = 0.0
    for _ in range(samples // window):
        report = assess(profile, binned(profile, rng.standard_normal((window, features))))
        windows += 1
        feature_alerts += sum(f.level == "alert" for f in report.features)
        dataset_alerts += int(report.detected)
        worst = max(worst, *(f.psi for f in report.features))
    return {
        "samples": samples,
        "window": window,
        "windows": windows,
        "feature_alerts": feature_alerts,
        "dataset_alerts": dataset_alerts,
        "worst_psi": round(worst, 4),
    }


def detection_delay(
    shift_sigma: float = 0.5, window: int = 2000, step: int = 50, seed: int = 3
) -> dict[str, Any]:
    """Samples after a mean shift until a sliding count window alerts on the shifted feature."""
    rng = np.random.default_rng(seed)
    profile = reference_profile(1, rng)
    edges = np.asarray(profile["features"]["f0"]["edges"])
    reference = np.asarray(profile["features"]["f0"]["frequencies"])
    sliding = SlidingWindow(samples=window)
    cumulative = np.zeros(len(edges) + 1)
    # A full window of no-drift traffic first, then the shift.
    for phase, mean in (("before", 0.0), ("after", shift_sigma)):
        seen = 0
        while seen < (window if phase == "before" else 50 * window):
            chunk = rng.standard_normal(step) + mean
            cumulative = cumulative + np.bincount(
                np.searchsorted(edges, chunk, side="right"), minlength=len(edges) + 1
            )
            sliding.add(time.monotonic(), {"f0": cumulative})
            seen += step
            if phase == "after":
                live = sliding.counts()["f0"]
                if assess_feature("f0", reference, live, Thresholds()).level == "alert":
                    return {"shift_sigma": shift_sigma, "window": window, "delay_samples": seen}
    return {"shift_sigma": shift_sigma, "window": window, "delay_samples": None}


def sampling_cost(features: int = 10, requests: int = 20_000) -> dict[str, float]:
    """The gateway's hook: per sampled request, bin one window's newest day and the prediction."""
    from serving.gateway.metrics import GatewayMetrics
    from serving.gateway.sampling import ProfileBins, ProfileSampler

    rng = np.random.default_rng(4)
    profile = reference_profile(features, rng)
    profile["prediction"] = profile["features"]["f0"]
    sampler = ProfileSampler(GatewayMetrics(CollectorRegistry()), sample_rate=1.0)
    bins = ProfileBins.from_profile(profile)
    inputs = {"features": rng.standard_normal((1, 10, features)).astype(np.float32)}
    outputs = {"prediction": rng.standard_normal((1, 1)).astype(np.float32)}
    began = time.perf_counter()
    for _ in range(requests):
        sampler.record(bins, "m", 1, inputs, outputs)
    per_sampled = (time.perf_counter() - began) / requests
    return {
        "features": features,
        "us_per_sampled_request": round(per_sampled * 1e6, 2),
        "us_per_request_at_default_rate": round(per_sampled * 1e6 * 0.05, 2),
    }
