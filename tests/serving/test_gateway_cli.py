"""``flywheel deploy | weights | promote | rollback | routing | predict`` against the live gateway."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import ADMIN_TOKEN, GatewayStack, windows
from tests.support import REPO_ROOT


def flywheel(stack: GatewayStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.settings.as_env(), "FLYWHEEL_ADMIN_TOKEN": ADMIN_TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "flywheel", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_cli_rolls_a_version_out_and_back(canary: GatewayStack) -> None:
    ok(flywheel(canary, "rollback", MODEL, "--json"))
    deployed = ok(
        flywheel(
            canary,
            "deploy",
            MODEL,
            "--version",
            "2",
            "--backend",
            "triton",
            "--strategy",
            "canary",
            "--weight",
            "50",
            "--reason",
            "cli canary",
            "--json",
        )
    )
    assert {v["name"]: v["weight"] for v in deployed["variants"]} == {
        "torchserve-v1": 50.0,
        "triton-v2": 50.0,
    }
    predicted = ok(flywheel(canary, "predict", MODEL, "--rows", "3", "--repeat", "30", "--json"))
    assert predicted["requests"] == 30 and set(predicted["split"]) == {"torchserve-v1", "triton-v2"}
    assert len(predicted["predictions"]) == 3
    grpc = ok(flywheel(canary, "predict", MODEL, "--version", "2", "--protocol", "grpc", "--json"))
    assert grpc["variant"] == "triton-v2" and grpc["version"] == 2

    revision = deployed["revision"]
    stale = flywheel(
        canary, "weights", MODEL, "triton-v2=80", "--expected-revision", str(revision - 1), "--json"
    )
    assert stale.returncode == 1 and "409" in json.loads(stale.stdout)["error"]
    ok(
        flywheel(
            canary,
            "weights",
            MODEL,
            "triton-v2=80",
            "torchserve-v1=20",
            "--expected-revision",
            str(revision),
            "--json",
        )
    )
    promoted = ok(flywheel(canary, "promote", MODEL, "--reason", "looks good", "--actor", "ops", "--json"))
    assert [v["name"] for v in promoted["variants"]] == ["triton-v2"]
    assert promoted["history"][-1]["actor"] == "ops"
    shown = ok(flywheel(canary, "routing", MODEL, "--json"))
    assert shown["revision"] == promoted["revision"]
    assert [entry["action"] for entry in shown["history"][-4:]] == [
        "deploy triton-v2 (canary)",
        "set weights {'triton-v2': 80.0, 'torchserve-v1': 20.0}",
        "promote candidate",
        "champion -> v2",  # the promotion's second half, recorded (serving.rollout.promotion)
    ]
    assert ok(flywheel(canary, "predict", MODEL, "--json"))["variant"] == "triton-v2"


def test_cli_errors_are_clear(canary: GatewayStack) -> None:
    missing = flywheel(canary, "deploy", MODEL, "--version", "42", "--backend", "triton", "--json")
    assert missing.returncode == 1 and "has no version 42" in json.loads(missing.stdout)["error"]
    unknown = flywheel(canary, "predict", "no-such-model")
    assert unknown.returncode == 1 and "not deployed" in unknown.stderr
    env_without_gateway = canary.settings.model_copy(update={"gateway_http_port": 1})
    down = subprocess.run(
        [sys.executable, "-m", "flywheel", "routing", "--json"],
        env={**os.environ, **env_without_gateway.as_env(), "FLYWHEEL_ADMIN_TOKEN": ADMIN_TOKEN},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 1 and "is the stack up?" in json.loads(down.stdout)["error"]


def test_locust_runs_headless_against_the_gateway_with_csv(canary: GatewayStack, tmp_path: Path) -> None:
    for protocol in ("rest", "grpc"):
        result = flywheel(
            canary, "loadtest", "--protocol", protocol, "-u", "4", "-r", "4", "-t", "4s",
            "--model", MODEL, "--csv", str(tmp_path / protocol),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        rows = list(csv.DictReader((tmp_path / f"{protocol}_stats.csv").open()))
        by_name = {row["Name"]: row for row in rows}
        name = "infer" if protocol == "rest" else "ModelInfer"
        assert int(by_name[name]["Request Count"]) > 20 and by_name[name]["Failure Count"] == "0"
        if protocol == "rest":
            assert {"infer -> torchserve-v1", "infer -> tfserving-v2"} <= set(by_name), (
                "the split is in the CSV"
            )


def test_cli_starts_a_rollout_shows_it_and_aborts_it(canary: GatewayStack) -> None:
    """No controller runs in this module: the rollout waits at its first step until aborted."""
    ok(flywheel(canary, "rollback", MODEL, "--json"))
    started = ok(
        flywheel(canary, "deploy", MODEL, "--version", "2", "--backend", "triton", "--strategy", "canary",
                 "--steps", "10,50,100", "--interval", "1m", "--reason", "cli rollout", "--json")
    )  # fmt: skip
    assert started["rollout"]["status"] == "running" and started["rollout"]["interval_s"] == 60
    assert {v["name"]: v["weight"] for v in started["variants"]} == {"torchserve-v1": 90.0, "triton-v2": 10.0}
    status = ok(flywheel(canary, "rollout", "status", MODEL, "--json"))
    assert status["rollout"]["steps"] == [10.0, 50.0, 100.0] and status["rollout"]["step"] == 0
    refused = flywheel(canary, "deploy", MODEL, "--version", "2", "--backend", "tfserving", "--json")
    assert refused.returncode == 1 and "409" in json.loads(refused.stdout)["error"]
    aborted = ok(flywheel(canary, "abort", MODEL, "--reason", "changed my mind", "--json"))
    assert aborted["rollout"]["status"] == "aborted"
    assert [v["name"] for v in aborted["variants"]] == ["torchserve-v1"]
    assert aborted["history"][-1]["reason"] == "changed my mind"
    bad_steps = flywheel(canary, "deploy", MODEL, "--version", "2", "--steps", "50,10", "--json")
    assert bad_steps.returncode == 1 and "increase and end at 100" in json.loads(bad_steps.stdout)["error"]


def test_cli_drift_table_from_the_gateways_sampled_bins(canary: GatewayStack) -> None:
    for seed in range(5):
        assert canary.infer(windows(8, seed), version=1).status_code == 200
    report = ok(flywheel(canary, "drift", MODEL, "--version", "1", "--json"))["versions"]["1"]
    features = {row["feature"]: row for row in report["features"]}
    assert len(features) == 8 and report["prediction"] is not None
    samples = {row["samples"] for row in [*features.values(), report["prediction"]]}
    assert len(samples) == 1 and samples.pop() >= 40, (
        "every sampled row lands once per feature and prediction"
    )
    assert all(
        row["psi"] >= 0 and row["level"] in {"ok", "warn", "alert", "insufficient"}
        for row in features.values()
    )


def test_two_deploys_at_once_one_wins_and_the_other_gets_409_naming_it(canary: GatewayStack) -> None:
    """Every CLI write is compare-and-swap by default; --force is the explicit override."""
    # Unloaded first, so that each deploy spends seconds loading after it read the revision.
    for backend in ("torchserve", "triton"):
        flywheel(canary, "backends", "unload", f"{MODEL}:2", "--backend", backend)
    base = canary.admin("GET", f"/deployments/{MODEL}").json()["revision"]
    env = {**os.environ, **canary.settings.as_env(), "FLYWHEEL_ADMIN_TOKEN": ADMIN_TOKEN}
    racers = {
        backend: subprocess.Popen(
            [sys.executable, "-m", "flywheel", "deploy", MODEL, "--version", "2", "--backend", backend,
             "--strategy", "canary", "--weight", "20", "--actor", f"racer-{backend}",
             # Both read the same revision, as two operators looking at the same spec: on a busy
             # machine one racer could otherwise start after the other finished, and read its write.
             "--expected-revision", str(base)],
            env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for backend in ("torchserve", "triton")
    }  # fmt: skip
    results = {backend: (process.wait(300), process.communicate()) for backend, process in racers.items()}
    winners = [backend for backend, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    (loser,) = set(results) - set(winners)
    loser_error = results[loser][1][1]
    assert "409" in loser_error and f"racer-{winners[0]}" in loser_error, loser_error
    spec = canary.admin("GET", f"/deployments/{MODEL}").json()
    assert spec["revision"] == base + 1
    assert [entry["actor"] for entry in spec["history"][-1:]] == [f"racer-{winners[0]}"]
    # --force writes over whatever is there, by intent.
    forced = ok(flywheel(canary, "weights", MODEL, f"{winners[0]}-v2=30", "--force", "--json"))
    assert forced["revision"] == base + 2
