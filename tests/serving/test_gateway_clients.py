"""Stock clients, unchanged, against the gateway: tritonclient over HTTP (binary tensors) and gRPC."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import GatewayStack, windows


def test_tritonclient_http(canary: GatewayStack) -> None:
    client = triton_http.InferenceServerClient(canary.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "2")
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_model_metadata(MODEL)
    assert metadata["inputs"][0]["shape"] == [-1, 10, 8] and metadata["versions"] == ["1", "2"]
    features = windows()
    inputs = [triton_http.InferInput("features", list(features.shape), "FP32")]
    inputs[0].set_data_from_numpy(features, binary_data=True)
    outputs = [triton_http.InferRequestedOutput("prediction", binary_data=True)]
    pinned = client.infer(MODEL, inputs, model_version="2", outputs=outputs, request_id="http-1")
    assert pinned.get_response()["model_version"] == "2" and pinned.get_response()["id"] == "http-1"
    assert pinned.as_numpy("prediction").shape == (4, 1)
    json_inputs = [triton_http.InferInput("features", list(features.shape), "FP32")]
    json_inputs[0].set_data_from_numpy(features, binary_data=False)
    as_json = client.infer(MODEL, json_inputs, model_version="2")
    np.testing.assert_allclose(as_json.as_numpy("prediction"), pinned.as_numpy("prediction"), atol=1e-6)
    routed = client.infer(MODEL, inputs)
    assert routed.get_response()["parameters"]["variant"] in {"torchserve-v1", "tfserving-v2"}
    with pytest.raises(InferenceServerException, match="expects FP32"):
        wrong = [triton_http.InferInput("features", list(features.shape), "FP64")]
        wrong[0].set_data_from_numpy(features.astype(np.float64))
        client.infer(MODEL, wrong)
    client.close()


def test_tritonclient_grpc(canary: GatewayStack) -> None:
    client = triton_grpc.InferenceServerClient(canary.grpc)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and not client.is_model_ready("no-such-model")
    metadata = client.get_model_metadata(MODEL, as_json=True)
    assert metadata["inputs"][0]["datatype"] == "FP32" and metadata["versions"] == ["1", "2"]
    features = windows()
    inputs = [triton_grpc.InferInput("features", list(features.shape), "FP32")]
    inputs[0].set_data_from_numpy(features)
    result = client.infer(MODEL, inputs, model_version="1", request_id="grpc-1")
    response = result.get_response(as_json=True)
    assert response["model_version"] == "1" and response["id"] == "grpc-1"
    assert response["parameters"]["variant"]["string_param"] == "torchserve-v1"
    http = canary.infer(features, version=1)
    np.testing.assert_allclose(
        result.as_numpy("prediction").reshape(-1), np.asarray(http.json()["outputs"][0]["data"]), atol=1e-6
    )
    with pytest.raises(InferenceServerException) as bad_shape:
        short = [triton_grpc.InferInput("features", [4, 3, 8], "FP32")]
        short[0].set_data_from_numpy(features[:, :3, :])
        client.infer(MODEL, short)
    assert bad_shape.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("no-such-model", inputs)
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    client.close()


def test_captured_requests_reach_the_store_with_what_was_served_over_rest_and_grpc(
    canary: GatewayStack,
) -> None:
    """The stack captures only requests that ask (rate 0): exactly those land in capture/, as Parquet,
    with the version and variant that answered and the inputs that were sent."""
    from model_store import ModelStore
    from model_store.capture import CaptureReader, decode_tensors
    from tests.support import wait_until

    features = windows(2, seed=5)
    served = {}
    for number in range(6):
        request_id = f"capture-{number}"
        asked = {0: "on", 1: "on", 2: "off"}.get(number % 3, "")
        headers = {
            "x-request-id": request_id,
            "x-flywheel-capture": asked,
            "x-flywheel-entity": f"row-{number}",
        }
        response = canary.infer(features, headers=headers)
        assert response.status_code == 200, response.text
        if asked == "on":
            served[request_id] = (
                int(response.headers["x-flywheel-version"]),
                response.headers["x-flywheel-variant"],
            )
    client = triton_grpc.InferenceServerClient(canary.grpc)
    inputs = [triton_grpc.InferInput("features", list(features.shape), "FP32")]
    inputs[0].set_data_from_numpy(features)
    result = client.infer(MODEL, inputs, request_id="capture-grpc", headers={"x-flywheel-capture": "on"})
    served["capture-grpc"] = (int(result.get_response().model_version), "")
    client.close()

    reader = CaptureReader(ModelStore.open(canary.settings.resolve_store_uri()).storage)

    def captured() -> dict[str, dict]:
        return {row["request_id"]: row for row in reader.read(MODEL).to_pylist()
                if row["request_id"].startswith("capture-")}  # fmt: skip

    wait_until(
        lambda: captured().keys() == served.keys(), 30, "the gateway to flush the captured requests", 0.2
    )
    rows = captured()
    for request_id, (version, variant) in served.items():
        row = rows[request_id]
        assert row["version"] == version and (not variant or row["variant"] == variant), row
        np.testing.assert_array_equal(decode_tensors(row["inputs"])["features"], features)
        assert decode_tensors(row["outputs"])["prediction"].shape == (2, 1)
        assert row["rows"] == 2 and row["prediction"] is not None and row["confidence"] is None
    assert rows["capture-0"]["entity"] == "row-0" and rows["capture-grpc"]["entity"] is None
    assert 'flywheel_capture_records_total{model="' + MODEL + '",outcome="written"}' in canary.metrics()
