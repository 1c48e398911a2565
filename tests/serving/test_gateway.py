"""The gateway process against real Triton, TorchServe and TF-runtime servers, driven over REST.

Tests run in file order and build on each other's deployments (one stack per module): first
deploy, then canary across servers, then the other strategies, bad input, admin security, and
last the fault tests that kill a server.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
from typing import Any

import httpx
import numpy as np
import pytest

from model_store.backends.file import FileStorage
from serving.routing.spec_store import SpecStore
from serving.routing.strategies.ab import sticky_position
from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import ADMIN_TOKEN, GatewayStack, gateway_stack, v2_body, windows  # noqa: F401
from tests.support import wait_until


def variants_of(responses: list[httpx.Response]) -> collections.Counter[str]:
    return collections.Counter(response.headers["x-flywheel-variant"] for response in responses)


def predictions(response: httpx.Response) -> np.ndarray:
    output = response.json()["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def test_first_deploy_serves_v1_from_torchserve(gateway_stack: GatewayStack) -> None:
    spec = gateway_stack.deploy(1, "torchserve", "single", reason="first deploy")
    assert [(v["name"], v["weight"]) for v in spec["variants"]] == [("torchserve-v1", 100.0)]
    assert spec["revision"] == 1 and spec["history"][0]["reason"] == "first deploy"
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
