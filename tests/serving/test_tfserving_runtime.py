"""Stock TF Serving client code, unchanged, against the TF-Serving-protocol runtime."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from flywheel.stack.process import stop_process
from serving.backends.tfserving.runtime.service import TFServingPorts, tfserving_service
from tasks.stock_forecast.contract import model_signature
from tests.pipeline_fixtures import MODEL
from tests.support import free_port, start_and_wait, wait_until
from training.exports import load_serving_signature, predict_savedmodel

CONFIG = """model_config_list {{
  config {{
    name: "{name}"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
  }}
}}
"""


@pytest.fixture(scope="module")
def runtime(drifted_run: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("tf-runtime")
    fetched = workdir / "fetched"
    for version in (1, 2):
        drifted_run.store.fetch(MODEL, version, fetched, prefix=f"savedmodel/{version}/")
    base = workdir / "models" / MODEL
    base.mkdir(parents=True)
    shutil.copytree(fetched / "savedmodel" / "1", base / "1")  # v2 arrives later: hot pick-up
    config = workdir / "models.config"
    config.write_text(CONFIG.format(name=MODEL, base=base))
    ports = TFServingPorts(free_port(), free_port())
    spec = tfserving_service("tf-runtime", workdir / "models", config, ports)
    record = start_and_wait(spec, workdir, f"http://127.0.0.1:{ports.rest}/v1/models/x", timeout_s=120)
    channel = grpc.insecure_channel(f"127.0.0.1:{ports.grpc}")
    yield {"ports": ports, "base": base, "fetched": fetched, "channel": channel}
    channel.close()
    stop_process(record, 20)


def window_batch() -> np.ndarray:
    return np.random.default_rng(5).normal(0, 0.01, size=(4, 10, 8)).astype(np.float32)


def expected(runtime: dict[str, Any], version: int, batch: np.ndarray) -> np.ndarray:
    return predict_savedmodel(
        load_serving_signature(runtime["fetched"] / "savedmodel" / str(version)), model_signature(), batch
    ).reshape(-1)


def predict_request(batch: np.ndarray, version: int | None = None, label: str | None = None) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "serving_default"
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(batch))
    return request


def test_grpc_predict_by_version_and_label_and_metadata(runtime: dict[str, Any]) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(runtime["channel"])
    batch = window_batch()
    by_version = stub.Predict(predict_request(batch, version=1), timeout=30)
    by_label = stub.Predict(predict_request(batch, label="stable"), timeout=30)
    assert by_version.model_spec.version.value == by_label.model_spec.version.value == 1
    for response in (by_version, by_label):
        np.testing.assert_allclose(
            tf.make_ndarray(response.outputs["prediction"]).reshape(-1),
            expected(runtime, 1, batch),
            atol=1e-6,
        )

    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata_request.model_spec.name = MODEL
    metadata_request.metadata_field.append("signature_def")
    metadata = stub.GetModelMetadata(metadata_request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signature_map)
    assert list(signature_map.signature_def["serving_default"].inputs) == ["features"]

    with pytest.raises(grpc.RpcError) as missing:
        stub.Predict(predict_request(batch, version=7), timeout=30)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as bad:
        stub.Predict(predict_request(batch[:, :4, :], version=1), timeout=30)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_new_version_folder_is_picked_up_without_restart(runtime: dict[str, Any]) -> None:
    shutil.copytree(runtime["fetched"] / "savedmodel" / "2", runtime["base"] / "2")
    status_stub = model_service_pb2_grpc.ModelServiceStub(runtime["channel"])

    def available() -> list[int]:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = MODEL
        response = status_stub.GetModelStatus(request, timeout=30)
        return sorted(s.version for s in response.model_version_status if s.state == 30)  # AVAILABLE

    wait_until(lambda: available() == [1, 2], 60, "version 2 to be picked up")
    rest = f"http://127.0.0.1:{runtime['ports'].rest}/v1/models/{MODEL}"
    batch = window_batch()
    latest = httpx.post(f"{rest}:predict", json={"instances": batch.tolist()}, timeout=30)
    assert latest.status_code == 200
    np.testing.assert_allclose(
        np.asarray(latest.json()["predictions"]).reshape(-1), expected(runtime, 2, batch), atol=1e-6
    )
    labelled = httpx.post(
        f"{rest}/labels/stable:predict", json={"inputs": {"features": batch.tolist()}}, timeout=30
    )
    np.testing.assert_allclose(
        np.asarray(labelled.json()["outputs"]).reshape(-1), expected(runtime, 1, batch), atol=1e-6
    )
    status = httpx.get(f"{rest}/versions/2", timeout=30).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    for body, code in ((b"{not json", 400), (b"[1, 2]", 400), (b'{"instances": [[1, 2]]}', 400)):
        response = httpx.post(f"{rest}:predict", content=body, timeout=30)
        assert response.status_code == code and "error" in response.json()
    assert (
        httpx.post(f"{rest}/versions/9:predict", json={"instances": batch.tolist()}, timeout=30).status_code
        == 404
    )


def test_prometheus_metrics_at_tf_servings_path_count_rest_and_grpc(runtime: dict[str, Any]) -> None:
    """`--monitoring_config_file` turns on /monitoring/prometheus/metrics with TF Serving's names."""
    url = f"http://127.0.0.1:{runtime['ports'].rest}/monitoring/prometheus/metrics"

    def count(status: str) -> float:
        for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
            for sample in family.samples:
                if sample.name == ":tensorflow:serving:request_count" and sample.labels == {
                    "model_name": MODEL,
                    "status": status,
                }:
                    return sample.value
        return 0.0

    before_ok, before_missing = count("OK"), count("NOT_FOUND")
    batch = window_batch()
    rest = f"http://127.0.0.1:{runtime['ports'].rest}/v1/models/{MODEL}"
    assert httpx.post(f"{rest}:predict", json={"instances": batch.tolist()}, timeout=30).status_code == 200
    prediction_service_pb2_grpc.PredictionServiceStub(runtime["channel"]).Predict(
        predict_request(batch, version=1), timeout=30
    )
    assert (
        httpx.post(f"{rest}/versions/9:predict", json={"instances": batch.tolist()}, timeout=30).status_code
        == 404
    )
    assert count("OK") == before_ok + 2
    assert count("NOT_FOUND") == before_missing + 1
    assert httpx.post(f"http://127.0.0.1:{runtime['ports'].rest}/v1/models/no-such-model:predict",
                      json={"instances": [[1.0]]}, timeout=30).status_code == 404  # fmt: skip
    assert 'model_name="no-such-model"' not in httpx.get(url, timeout=10).text, "no series per random name"
    text = httpx.get(url, timeout=10).text
    assert ':tensorflow:serving:request_latency_bucket{API="predict",entrypoint="GRPC",le=' in text
