"""Drift detectors on binned counts: each measure, the verdict, windows, and calibration."""

from __future__ import annotations

import numpy as np
import pytest

from loadtests.drift_bench import binned, detection_delay, false_alarms, reference_profile
from monitoring.drift import (
    SlidingWindow,
    Thresholds,
    assess,
    assess_feature,
    chi_squared,
    kolmogorov_p_value,
    ks_binned,
    psi,
)

UNIFORM = np.full(10, 0.1)


def test_psi_ks_and_chi_squared_on_known_cases() -> None:
    same = UNIFORM * 1000
    assert psi(UNIFORM, same) == pytest.approx(0.0)
    shifted = np.array([0, 0, 0, 0, 0, 100, 200, 200, 250, 250])
    assert psi(UNIFORM, shifted) > 1.0
    assert ks_binned(UNIFORM, same) == (pytest.approx(0.0), 1.0)
    gap, p_value = ks_binned(UNIFORM, shifted)
    assert gap == pytest.approx(0.5) and p_value < 1e-12
    assert kolmogorov_p_value(0.05, 100) > 0.9 and kolmogorov_p_value(0.2, 1000) < 1e-6
    assert chi_squared(UNIFORM, same)[1] > 0.99
    assert chi_squared(UNIFORM, shifted)[1] < 1e-6


def test_verdicts_need_enough_samples_and_follow_the_thresholds() -> None:
    small = assess_feature("f", UNIFORM, np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 50]), Thresholds())
    assert small.level == "insufficient"
    warn = np.array([60, 60, 60, 60, 100, 100, 100, 140, 140, 180]) * 10  # PSI 0.156
    assert assess_feature("f", UNIFORM, warn, Thresholds()).level == "warn"
    assert assess_feature("f", UNIFORM, warn, Thresholds(psi_warn=0.5, psi_alert=0.6)).level == "ok"
    categorical = assess_feature("c", UNIFORM, UNIFORM * 1000, Thresholds(), categorical=True)
    assert categorical.ks is None and categorical.p_value > 0.99


def test_dataset_verdict_and_prediction_drift() -> None:
    rng = np.random.default_rng(0)
    profile = reference_profile(4, rng)
    profile["prediction"] = profile["features"]["f0"]
    calm = binned(profile, rng.standard_normal((5000, 4)))
    calm["prediction"] = calm["f0"]
    assert not assess(profile, calm).detected
    moved = rng.standard_normal((5000, 4)) + np.array([1.0, 1.0, 1.0, 0.0])
    report = assess(profile, binned(profile, moved))
    assert report.detected and report.drifted_share == 0.75
    assert [f.level for f in report.features] == ["alert", "alert", "alert", "ok"]
    only_prediction = dict(calm, prediction=binned(profile, rng.standard_normal((5000, 4)) + 2)["f0"])
    assert assess(profile, only_prediction).detected, "a prediction alert alone is drift"


def test_sliding_windows_by_time_and_by_count() -> None:
    by_time = SlidingWindow(seconds=10)
    for second in range(30):
        by_time.add(float(second), {"f": np.array([second * 10.0, second * 1.0])})
    assert by_time.counts()["f"].tolist() == [100.0, 10.0]  # the last 10 s of increments
    by_count = SlidingWindow(samples=50)
    for step in range(1, 21):
        by_count.add(float(step), {"f": np.array([step * 10.0])})
    assert by_count.counts()["f"].tolist() == [50.0]


def test_calibration_no_false_alarms_and_a_half_sigma_shift_is_caught() -> None:
    quiet = false_alarms(window=2000, samples=200_000, features=10)
    assert quiet["feature_alerts"] == 0 and quiet["dataset_alerts"] == 0
    caught = detection_delay(shift_sigma=0.5, window=2000)
    assert caught["delay_samples"] is not None and caught["delay_samples"] <= 2000


def test_a_window_notices_counters_that_restarted() -> None:
    window = SlidingWindow(seconds=60)
    assert not window.went_backwards({"f": np.array([5.0, 5.0])})
    window.add(0.0, {"f": np.array([5.0, 5.0])})
    assert not window.went_backwards({"f": np.array([6.0, 5.0])})
    assert window.went_backwards({"f": np.array([1.0, 0.0])}), "a gateway restart zeroes its counters"
