"""The gateway process against real Triton, TorchServe and TF-runtime servers, driven over REST.

Tests run in file order and build on each other's deployments (one stack per module): first
deploy, then canary across servers, then the other strategies, bad input, admin security, and
last the fault tests that kill a server.
"""

from __future__ import annotations

import collections
import re
import subprocess
import threading
from typing import Any

import httpx
import numpy as np

from serving.routing.spec_store import SpecStore
from serving.routing.strategies.ab import sticky_position
from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import GatewayStack, two_variants, v2_body, windows
from tests.support import wait_until


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(?:\{{(.*?)\}})? (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(2))
    return total


def variants_of(responses: list[httpx.Response]) -> collections.Counter[str]:
    return collections.Counter(response.headers["x-flywheel-variant"] for response in responses)


def predictions(response: httpx.Response) -> np.ndarray:
    output = response.json()["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def test_first_deploy_serves_v1_from_torchserve(gateway_stack: GatewayStack) -> None:
    spec = gateway_stack.deploy(1, "torchserve", "single", reason="first deploy")
    assert [(v["name"], v["weight"]) for v in spec["variants"]] == [("torchserve-v1", 100.0)]
    assert spec["history"][-1]["reason"] == "first deploy"
    assert spec["history"][-1]["revision"] == spec["revision"]
    features = windows()
    response = gateway_stack.infer(features, headers={"x-request-id": "req-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL and body["model_version"] == "1" and body["id"] == "req-1"
    assert response.headers["x-flywheel-variant"] == "torchserve-v1"
    assert response.headers["x-request-id"] == "req-1"
    # The same numbers TorchServe gives when asked directly for v1.
    direct = httpx.post(
        f"{gateway_stack.specs['torchserve'].urls['inference']}/predictions/{MODEL}/1",
        json={"instances": features.tolist()},
    )
    assert np.allclose(predictions(response).reshape(-1), direct.json()["predictions"], atol=1e-6)
    assigned = gateway_stack.infer(features)
    assert (
        len(assigned.headers["x-request-id"]) == 32
        and assigned.json()["id"] == assigned.headers["x-request-id"]
    )


def test_canary_from_torchserve_to_tfserving_splits_by_weight(gateway_stack: GatewayStack) -> None:
    spec = gateway_stack.deploy(2, "tfserving", "canary", weight=30, reason="canary v2 on TF Serving")
    assert {v["name"]: v["weight"] for v in spec["variants"]} == {"torchserve-v1": 70.0, "tfserving-v2": 30.0}
    features = windows()
    responses = [gateway_stack.infer(features) for _ in range(300)]
    assert all(response.status_code == 200 for response in responses)
    split = variants_of(responses)
    assert set(split) == {"torchserve-v1", "tfserving-v2"}
    # 300 Bernoulli(0.3) draws: mean 90, sd 7.9; +-40 is five standard deviations.
    assert abs(split["tfserving-v2"] - 90) < 40, split
    for response in responses:
        assert response.json()["model_version"] == response.headers["x-flywheel-version"]
    by_variant = {r.headers["x-flywheel-variant"]: predictions(r) for r in responses}
    direct = httpx.post(
        f"{gateway_stack.specs['tfserving'].urls['rest']}/v1/models/{MODEL}/versions/2:predict",
        json={"instances": features.tolist()},
    )
    assert np.allclose(
        by_variant["tfserving-v2"].reshape(-1),
        np.asarray(direct.json()["predictions"]).reshape(-1),
        atol=1e-5,
    )


def test_pinned_versions_and_metadata(gateway_stack: GatewayStack) -> None:
    features = windows()
    for version, variant in ((1, "torchserve-v1"), (2, "tfserving-v2")):
        responses = [gateway_stack.infer(features, version=version) for _ in range(5)]
        assert {r.headers["x-flywheel-variant"] for r in responses} == {variant}
    missing = gateway_stack.infer(features, version=7)
    assert missing.status_code == 404 and "deployed versions: 1, 2" in missing.json()["error"]
    metadata = httpx.get(f"{gateway_stack.url}/v2/models/{MODEL}").json()
    assert metadata["versions"] == ["1", "2"]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 10, 8]}]
    assert httpx.get(f"{gateway_stack.url}/v2/models/{MODEL}/ready").status_code == 200
    assert httpx.get(f"{gateway_stack.url}/v2/models/{MODEL}/versions/2/ready").status_code == 200
    assert httpx.get(f"{gateway_stack.url}/v2/models/nope/ready").status_code == 404
    assert httpx.get(f"{gateway_stack.url}/v2/health/ready").status_code == 200


def test_compatibility_paths_with_curl(gateway_stack: GatewayStack) -> None:
    features = windows(2)

    def curl(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        completed = subprocess.run(
            [
                "curl",
                "-sS",
                "-w",
                "\n%{http_code}",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
                f"{gateway_stack.url}{path}",
            ],
            input=httpx.Request("POST", "/", json=body).content,
            capture_output=True,
            check=True,
        )
        text, _, code = completed.stdout.decode().rpartition("\n")
        return int(code), httpx.Response(200, content=text).json()

    status, tf = curl(f"/v1/models/{MODEL}/versions/2:predict", {"instances": features.tolist()})
    assert status == 200 and np.asarray(tf["predictions"]).shape == (2, 1)
    status, routed = curl(f"/v1/models/{MODEL}:predict", {"inputs": features.tolist()})
    assert status == 200 and np.asarray(routed["outputs"]).shape == (2, 1)
    status, ts = curl(f"/predictions/{MODEL}/1", {"instances": features.tolist()})
    assert status == 200 and len(ts["predictions"]) == 2
    pinned = gateway_stack.infer(features, version=1)
    assert np.allclose(ts["predictions"], predictions(pinned).reshape(-1), atol=1e-6)
    status, error = curl(f"/predictions/{MODEL}", {"instances": [[1, 2], [3]]})
    assert status == 400 and "rectangular" in error["error"]


def spec_of(stack: GatewayStack) -> dict[str, Any]:
    return dict(stack.admin("GET", f"/deployments/{MODEL}").json())


def test_blue_green_switch_is_atomic_and_drops_nothing(canary: GatewayStack) -> None:
    canary.replace(two_variants("blue_green", (100, 0), active="torchserve-v1"))
    features = windows()
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                response = client.post(f"{canary.url}/v2/models/{MODEL}/infer", json=v2_body(features))
                seen.append((response.status_code, response.headers.get("x-flywheel-variant", "")))

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        wait_until(lambda: len(seen) >= 20, 30, "traffic on blue")
        promoted = canary.admin("POST", f"/deployments/{MODEL}/promote", json={"reason": "green is good"})
        assert promoted.status_code == 200, promoted.text
        marker = len(seen)
        wait_until(lambda: len(seen) >= marker + 20, 30, "traffic on green")
    finally:
        stop.set()
        sender.join()
    assert {status for status, _ in seen} == {200}
    colours = [variant for _, variant in seen]
    switch = colours.index("tfserving-v2")
    assert set(colours[:switch]) == {"torchserve-v1"} and set(colours[switch:]) == {"tfserving-v2"}
    spec = promoted.json()
    assert spec["params"]["active"] == "tfserving-v2" and len(spec["variants"]) == 2, "blue stays loaded"
    promoted_entry, finished_entry = spec["history"][-2:]
    assert promoted_entry["reason"] == "green is good" and finished_entry["action"] == "champion -> v2"
    assert canary.admin("POST", f"/deployments/{MODEL}/rollback").status_code == 200
    assert canary.infer(features).headers["x-flywheel-variant"] == "torchserve-v1"


def test_a_spec_written_elsewhere_reloads_live(canary: GatewayStack, drifted_run: Any) -> None:
    """Another replica or the rollout controller writes the store; this gateway follows."""
    from serving.routing import operations

    revision = spec_of(canary)["revision"]
    SpecStore(drifted_run.store.storage).update(
        MODEL,
        lambda current: operations.set_weights(current, {"torchserve-v1": 0, "tfserving-v2": 100}),
        actor="another-replica",
        action="set weights",
        expected_revision=revision,
    )
    wait_until(
        lambda: canary.admin("GET", "/routing").json()[MODEL]["revision"] == revision + 1,
        30,
        "the gateway to load the new revision",
    )
    features = windows()
    assert {canary.infer(features).headers["x-flywheel-variant"] for _ in range(20)} == {"tfserving-v2"}


def test_shadow_answers_from_primary_and_records_the_comparison(canary: GatewayStack) -> None:
    canary.replace(two_variants("shadow", (100, 0), primary="torchserve-v1", shadow_sample_rate=1.0))
    before = metric_value(
        canary.metrics(), "flywheel_gateway_shadow_requests_total", variant="tfserving-v2", outcome="ok"
    )

    def shadowed_ok() -> float:
        return metric_value(
            canary.metrics(), "flywheel_gateway_shadow_requests_total", variant="tfserving-v2", outcome="ok"
        )

    responses = []
    for seed in range(20):
        # One at a time: a busy machine must not make the gateway drop copies (at most 16 in
        # flight, by design), which would be a different behaviour than the one tested here.
        responses.append(canary.infer(windows(seed=seed)))
        wait_until(lambda seed=seed: shadowed_ok() >= before + seed + 1, 30, f"shadow copy {seed + 1}")
    assert {r.headers["x-flywheel-variant"] for r in responses} == {"torchserve-v1"}
    assert (
        metric_value(canary.metrics(), "flywheel_gateway_shadow_disagreement_count", variant="tfserving-v2")
        >= 20
    )
    # v1 and v2 were trained on different regimes: their predictions differ measurably.
    assert (
        metric_value(canary.metrics(), "flywheel_gateway_shadow_disagreement_sum", variant="tfserving-v2") > 0
    )


def test_ab_is_sticky_and_identical_on_every_replica(canary: GatewayStack) -> None:
    canary.replace(two_variants("ab", (50, 50), sticky_header="x-user-id"))
    features = windows()
    assignments = {}
    for user in (f"user-{index}" for index in range(24)):
        served = {
            canary.infer(features, headers={"x-user-id": user}).headers["x-flywheel-variant"]
            for _ in range(4)
        }
        assert len(served) == 1, f"{user} was not sticky: {served}"
        assignments[user] = served.pop()
        # A pure function of (model, header value): any replica computes the same.
        expected = "torchserve-v1" if sticky_position(MODEL, user) < 0.5 else "tfserving-v2"
        assert assignments[user] == expected
    assert set(assignments.values()) == {"torchserve-v1", "tfserving-v2"}


def test_bandit_shifts_traffic_to_the_rewarded_variant(canary: GatewayStack) -> None:
    canary.replace(two_variants("bandit", (50, 50)))
    features = windows()
    for _ in range(60):
        response = canary.infer(features)
        reward = 1.0 if response.headers["x-flywheel-variant"] == "tfserving-v2" else 0.0
        posted = canary.client.post(
            f"{canary.url}/v2/models/{MODEL}/feedback",
            json={"id": response.headers["x-request-id"], "reward": reward},
        )
        assert posted.status_code == 200 and posted.json()["reward"] == reward
    later = variants_of([canary.infer(features) for _ in range(60)])
    assert later["tfserving-v2"] >= 50, later
    unknown = canary.client.post(
        f"{canary.url}/v2/models/{MODEL}/feedback", json={"id": "never-served", "label": 0.01}
    )
    assert unknown.status_code == 404
    labelled = canary.infer(features)
    prediction = float(predictions(labelled).reshape(-1)[0])
    posted = canary.client.post(
        f"{canary.url}/v2/models/{MODEL}/feedback",
        json={"id": labelled.headers["x-request-id"], "label": prediction},
    )
    assert posted.json()["reward"] == 1.0, "a label with the predicted direction is a hit"
    again = canary.client.post(
        f"{canary.url}/v2/models/{MODEL}/feedback",
        json={"id": labelled.headers["x-request-id"], "reward": 1.0},
    )
    assert again.status_code == 404, "one reward per request: repeats cannot steer the bandit"


def test_metrics_and_drift_sampling(canary: GatewayStack) -> None:
    features = windows(8)
    for _ in range(5):
        assert canary.infer(features, version=1).status_code == 200
    text = canary.metrics()
    # The stack serves other models too (the classifier): count this model's bins only.
    samples = metric_value(text, "flywheel_gateway_profile_samples_total", model=MODEL, version="1")
    assert samples >= 40  # drift_sample_rate is 1.0 in the test stack: every row counted
    for feature in ("return_1d", "volatility_20d", "prediction"):
        counted = metric_value(
            text, "flywheel_gateway_profile_bin_total", model=MODEL, version="1", feature=feature
        )
        assert counted == samples, feature
    assert metric_value(text, "flywheel_gateway_requests_total", variant="torchserve-v1") >= 5
    assert metric_value(text, "flywheel_gateway_request_duration_seconds_count", variant="torchserve-v1") >= 5
    assert "flywheel_gateway_in_flight_requests" in text
    assert metric_value(text, "flywheel_gateway_routing_spec_revision") >= 1
