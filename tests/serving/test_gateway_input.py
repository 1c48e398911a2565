"""Bad input gets a clear 4xx and changes nothing; the admin API needs its token."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from model_store import ModelStore
from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import ADMIN_TOKEN, GatewayStack, publish_patched_copy, v2_body, windows
from tests.serving.test_gateway import metric_value

FEATURES = windows(2)
INFER = f"/v2/models/{MODEL}/infer"


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (INFER, b"{not json", 400, "not valid JSON"),
        (INFER, b"[1, 2]", 400, "JSON object"),
        (INFER, json.dumps({"inputs": []}).encode(), 400, "non-empty"),
        (INFER, json.dumps(v2_body(FEATURES[:, :4, :])).encode(), 400, "expects [-1, 10, 8]"),
        (
            INFER,
            json.dumps(
                {"inputs": [{**v2_body(FEATURES)["inputs"][0], "datatype": "INT64", "data": [0] * 160}]}
            ).encode(),
            400,
            "expects FP32",
        ),
        (
            INFER,
            json.dumps({"inputs": [{**v2_body(FEATURES)["inputs"][0], "datatype": "BYTES"}]}).encode(),
            400,
            "not supported",
        ),
        (
            INFER,
            json.dumps({"inputs": [{**v2_body(FEATURES)["inputs"][0], "shape": [3, 10, 8]}]}).encode(),
            400,
            "do not fill",
        ),
        (
            INFER,
            json.dumps({"inputs": [{**v2_body(FEATURES)["inputs"][0], "name": "other"}]}).encode(),
            400,
            "expects inputs",
        ),
        (
            INFER,
            json.dumps({"inputs": [{**v2_body(FEATURES)["inputs"][0], "data": ["a"] * 160}]}).encode(),
            400,
            "FP32",
        ),
        ("/v2/models/no-such-model/infer", json.dumps(v2_body(FEATURES)).encode(), 404, "not deployed"),
        (
            f"/v2/models/{MODEL}/versions/0/infer",
            json.dumps(v2_body(FEATURES)).encode(),
            400,
            "positive integers",
        ),
        (
            f"/v2/models/{MODEL}/versions/99/infer",
            json.dumps(v2_body(FEATURES)).encode(),
            404,
            "deployed versions",
        ),
        (f"/v1/models/{MODEL}:predict", b'{"instances": [[1, 2], [3]]}', 400, "rectangular"),
        (f"/v1/models/{MODEL}:predict", b'{"neither": 1}', 400, "exactly one of"),
        (f"/predictions/{MODEL}", b'"text"', 400, "rectangular"),
        (f"/v2/models/{MODEL}/feedback", b'{"id": 5}', 400, "string"),
        (f"/v2/models/{MODEL}/feedback", b'{"id": "x", "reward": true}', 400, "number"),
        ("/v2/models/..%2F..%2Fetc/infer", json.dumps(v2_body(FEATURES)).encode(), 404, "not deployed"),
        # Non-finite inputs: null (becomes NaN), and a number out of FP32's range (becomes inf).
        (
            INFER,
            json.dumps({"inputs": [{**v2_body(FEATURES)["inputs"][0], "data": [None] * 160}]}).encode(),
            400,
            "must be finite",
        ),
        (
            INFER,
            json.dumps({"inputs": [{**v2_body(FEATURES)["inputs"][0], "data": [3.5e38] * 160}]}).encode(),
            400,
            "out of range",
        ),
        (
            f"/v1/models/{MODEL}:predict",
            json.dumps({"instances": [[[1e39] * 8] * 10]}).encode(),
            400,
            "finite",
        ),
        # More rows than the model's max_batch_size (Triton's limit, advertised in metadata).
        (INFER, json.dumps(v2_body(windows(300))).encode(), 400, "at most 256"),
        (
            f"/v1/models/{MODEL}:predict",
            json.dumps({"signature_name": "bogus", "instances": FEATURES.tolist()}).encode(),
            400,
            'Serving signature name: "bogus" not found in signature def',
        ),
    ],
)
def test_malformed_requests_get_a_clear_4xx(
    canary: GatewayStack, path: str, body: bytes, status: int, message: str
) -> None:
    response = canary.client.post(
        f"{canary.url}{path}", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert canary.infer(FEATURES).status_code == 200, "the gateway keeps serving"


def test_oversized_body_is_refused_with_413(canary: GatewayStack) -> None:
    huge = np.zeros((4000, 10, 8), dtype=np.float32)  # ~2.5 MB of JSON; the test stack allows 1 MiB
    response = canary.infer(huge)
    assert response.status_code == 413
    assert "error" in response.json()
    assert canary.infer(FEATURES).status_code == 200


def test_binary_extension_errors(canary: GatewayStack) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [2, 10, 8],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 640},
                }
            ]
        }
    ).encode()
    url = f"{canary.url}{INFER}"
    short = canary.client.post(
        url, content=header + b"\0" * 100, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert short.status_code == 400 and "does not fit" in short.json()["error"]
    bad_length = canary.client.post(url, content=header, headers={"Inference-Header-Content-Length": "abc"})
    assert bad_length.status_code == 400
    good = canary.client.post(
        url,
        content=header + FEATURES.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert good.status_code == 200


def test_admin_api_needs_the_token_and_changes_nothing_without_it(canary: GatewayStack) -> None:
    before = canary.admin("GET", f"/deployments/{MODEL}").json()
    attempts = [
        canary.admin("POST", f"/deployments/{MODEL}/rollback", token=None),
        canary.admin("POST", f"/deployments/{MODEL}/rollback", token="wrong-token"),
        canary.admin(
            "POST",
            f"/deployments/{MODEL}/weights",
            token=ADMIN_TOKEN[:-1],
            json={"weights": {"tfserving-v2": 0}},
        ),
        canary.client.post(
            f"{canary.url}/admin/deployments/{MODEL}/rollback",
            headers={"Authorization": f"Basic {ADMIN_TOKEN}"},
        ),
        canary.admin("GET", "/deployments", token=""),
        canary.client.get(f"{canary.url}/admin/deployments", headers={"Authorization": b"Bearer \xff\xfe"}),
    ]
    assert [response.status_code for response in attempts] == [401] * len(attempts)
    assert all(response.headers["WWW-Authenticate"].startswith("Bearer") for response in attempts)
    assert canary.admin("GET", f"/deployments/{MODEL}").json() == before


def test_stale_writers_get_409_and_history_records_who_and_why(canary: GatewayStack) -> None:
    spec = canary.admin("GET", f"/deployments/{MODEL}").json()
    revision = spec["revision"]
    first = canary.admin(
        "POST",
        f"/deployments/{MODEL}/weights",
        json={
            "weights": {"tfserving-v2": 40, "torchserve-v1": 60},
            "expected_revision": revision,
            "actor": "alice",
            "reason": "more canary",
        },
    )
    assert first.status_code == 200 and first.json()["revision"] == revision + 1
    stale = canary.admin(
        "POST",
        f"/deployments/{MODEL}/weights",
        json={"weights": {"tfserving-v2": 0}, "expected_revision": revision, "actor": "bob"},
    )
    assert stale.status_code == 409 and f"revision {revision + 1}, not {revision}" in stale.json()["error"]
    latest = canary.admin("GET", f"/deployments/{MODEL}").json()
    assert {v["name"]: v["weight"] for v in latest["variants"]}["tfserving-v2"] == 40
    entry = latest["history"][-1]
    assert (entry["actor"], entry["reason"], entry["revision"]) == ("alice", "more canary", revision + 1)
    assert [e["revision"] for e in latest["history"]] == list(range(1, revision + 2)), "append-only"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/deploy", {"version": 1, "backend": "nope", "strategy": "canary"}, 400),
        ("/deploy", {"version": 1, "backend": "triton", "strategy": "zigzag"}, 400),
        ("/deploy", {"version": 99, "backend": "triton", "strategy": "canary"}, 404),
        ("/deploy", {"version": -1, "backend": "triton"}, 400),
        ("/deploy", {"version": 1, "backend": "triton", "unknown_field": 1}, 400),
        ("/weights", {"weights": {"no-such-variant": 10}}, 400),
        ("/weights", {"weights": {"tfserving-v2": 500}}, 400),
        ("/promote", {"variant": "no-such-variant"}, 400),
    ],
)
def test_bad_admin_requests_get_4xx(
    canary: GatewayStack, path: str, body: dict[str, object], status: int
) -> None:
    before = canary.admin("GET", f"/deployments/{MODEL}").json()
    response = canary.admin("POST", f"/deployments/{MODEL}{path}", json=body)
    assert response.status_code == status, response.text
    assert canary.admin("GET", f"/deployments/{MODEL}").json() == before
    assert httpx.get(
        f"{canary.url}/admin/deployments/..%2Fmodels", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).status_code in (400, 404)


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_a_body_that_is_not_what_its_content_encoding_says_gets_400(
    canary: GatewayStack, encoding: str
) -> None:
    for path in (INFER, f"/v1/models/{MODEL}:predict"):
        response = canary.client.post(
            f"{canary.url}{path}",
            content=json.dumps(v2_body(FEATURES)).encode(),
            headers={"Content-Type": "application/json", "Content-Encoding": encoding},
        )
        assert response.status_code == 400, response.text
        assert "could not be read" in response.json()["error"]
    assert canary.infer(FEATURES).status_code == 200


def test_a_body_that_never_arrives_gets_408_and_frees_the_connection(canary: GatewayStack) -> None:
    host, port = canary.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            'Content-Length: 5000\r\n\r\n{"inputs"'.encode()
        )
        answer = b""
        while chunk := connection.recv(65536):  # the gateway closes the connection after its answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within" in answer
    assert canary.infer(FEATURES).status_code == 200


def test_a_header_that_never_ends_and_an_idle_connection_are_closed(canary: GatewayStack) -> None:
    """Slow headers and idle keep-alive connections hold nothing past the keep-alive timeout."""
    host, port = canary.url.removeprefix("http://").split(":")
    for opening in (f"POST {INFER} HTTP/1.1\r\nHost: x\r\n".encode(), b""):
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(opening)
            assert connection.recv(65536) == b"", "the gateway closes the connection"
    assert canary.infer(FEATURES).status_code == 200


def test_protocol_edges_405_allow_and_v2_slash(canary: GatewayStack) -> None:
    wrong_method = canary.client.put(f"{canary.url}{INFER}", json=v2_body(FEATURES))
    assert wrong_method.status_code == 405
    assert "POST" in wrong_method.headers["Allow"]
    assert canary.client.get(f"{canary.url}/v2/").json() == canary.client.get(f"{canary.url}/v2").json()


def test_tf_serving_status_and_metadata_paths(canary: GatewayStack) -> None:
    status = canary.client.get(f"{canary.url}/v1/models/{MODEL}")
    assert status.status_code == 200, status.text
    assert {(row["version"], row["state"]) for row in status.json()["model_version_status"]} == {
        ("1", "AVAILABLE"),
        ("2", "AVAILABLE"),
    }
    one = canary.client.get(f"{canary.url}/v1/models/{MODEL}/versions/2").json()
    assert [row["version"] for row in one["model_version_status"]] == ["2"]
    assert canary.client.get(f"{canary.url}/v1/models/{MODEL}/versions/99").status_code == 404
    metadata = canary.client.get(f"{canary.url}/v1/models/{MODEL}/versions/1/metadata").json()
    assert metadata["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    definition = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert definition["inputs"]["features"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in definition["inputs"]["features"]["tensor_shape"]["dim"]] == ["-1", "10", "8"]
    # The OIP metadata advertises the batch limit the gateway enforces.
    v2 = canary.client.get(f"{canary.url}/v2/models/{MODEL}").json()
    assert v2["parameters"]["max_batch_size"] == 256 and v2["inputs"][0]["shape"][0] == -1
    assert set(v2["inputs"][0]) == {"name", "datatype", "shape"}
    predicted = canary.client.post(
        f"{canary.url}/v1/models/{MODEL}:predict",
        json={"signature_name": "serving_default", "instances": FEATURES.tolist()},
    )
    assert predicted.status_code == 200 and len(predicted.json()["predictions"]) == 2


def test_grpc_refuses_raw_and_typed_contents_for_one_input(canary: GatewayStack) -> None:
    channel = grpc.insecure_channel(canary.grpc)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="features", datatype="FP32", shape=list(FEATURES.shape))
    tensor.contents.fp32_contents.extend(FEATURES.ravel().tolist())
    request.raw_input_contents.append(FEATURES.tobytes())
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "one or the other" in (error.value.details() or "")
    channel.close()


def test_a_model_answering_nan_is_a_counted_model_fault_never_null(
    canary: GatewayStack, tmp_path: Path
) -> None:
    """The OIP tensor schema has no NaN: a non-finite output is a 500 naming the model, and counted."""
    store = ModelStore.open(canary.settings.resolve_store_uri())
    broken = publish_patched_copy(
        store,
        tmp_path,
        "                outputs = self.model(batch).cpu().numpy().astype(np.float32)",
        "                outputs = (self.model(batch).cpu().numpy() * np.nan).astype(np.float32)",
    )
    canary.deploy(broken, "triton", "canary", weight=0)
    response = canary.infer(FEATURES, version=broken)
    assert response.status_code == 500, response.text
    assert "non-finite" in response.json()["error"] and f"v{broken}" in response.json()["error"]
    assert b"null" not in response.content
    assert (
        metric_value(canary.metrics(), "flywheel_gateway_errors_total", error_class="OutputFaultError") >= 1
    )
    assert canary.infer(FEATURES).status_code == 200, "routed traffic is unaffected"
