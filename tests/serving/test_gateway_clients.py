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
