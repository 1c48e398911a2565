"""Each packaged artifact, loaded by its real server, gives the in-process model's predictions."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton_http

from flywheel.stack.process import stop_process
from serving.backends.torchserve.runtime import TorchServePorts, torchserve_service
from serving.backends.triton.runtime import TritonPorts, triton_service
from tasks.stock_forecast.contract import model_signature
from tasks.stock_forecast.dataset import load_features, make_windows
from tests.pipeline_fixtures import MODEL, PipelineRun
from tests.support import free_port, start_and_wait
from training.exports import load_serving_signature, predict_savedmodel
from training.run_area import RunArea

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def artifacts(pipeline_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """v1 fetched (and verified) from the store, the run's outputs, and a batch of test windows."""
    folder = tmp_path_factory.mktemp("artifacts")
    pipeline_run.store.fetch(MODEL, 1, folder / "published")
    run = RunArea(pipeline_run.store.storage, MODEL, pipeline_run.base["ingest"]["snapshot_id"])
    run.download("preprocess", folder / "preprocess")
    run.download("train-pytorch", folder / "pytorch")
    run.download("train-tensorflow", folder / "tensorflow")
    windows = make_windows(load_features(folder / "preprocess" / "features"))["test"].features[:48]
    np.save(folder / "windows.npy", windows)
    return {
        "published": folder / "published",
        "pytorch": folder / "pytorch",
        "tensorflow": folder / "tensorflow",
        "windows": folder / "windows.npy",
        "root": folder,
    }


def in_process_torch(artifacts: dict[str, Path], windows: np.ndarray) -> np.ndarray:
    model = torch.jit.load(str(artifacts["pytorch"] / "model.pt")).eval()
    with torch.no_grad():
        return model(torch.as_tensor(windows)).numpy().reshape(-1)


def test_torchserve_registers_the_mar_and_matches(artifacts: dict[str, Path]) -> None:
    windows = np.load(artifacts["windows"])
    store = artifacts["root"] / "ts-store"
    store.mkdir()
    shutil.copy(artifacts["published"] / "torchserve" / f"{MODEL}.mar", store)
    ports = TorchServePorts(free_port(), free_port(), free_port(), free_port(), free_port())
    spec = torchserve_service("ts-package", store, artifacts["root"] / "ts", ports)
    record = start_and_wait(
        spec, artifacts["root"], f"http://127.0.0.1:{ports.inference}/ping", timeout_s=180
    )
    try:
        management = f"http://127.0.0.1:{ports.management}"
        registered = httpx.post(
            f"{management}/models",
            params={"url": f"{MODEL}.mar", "model_name": MODEL, "initial_workers": 1, "synchronous": "true"},
            timeout=180,
        )
        assert registered.status_code == 200, registered.text
        response = httpx.post(
            f"http://127.0.0.1:{ports.inference}/predictions/{MODEL}",
            json={"instances": windows.tolist()},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        served = np.asarray(response.json()["predictions"], dtype=np.float32)
        np.testing.assert_allclose(served, in_process_torch(artifacts, windows), atol=TOLERANCE)

        bad = httpx.post(
            f"http://127.0.0.1:{ports.inference}/predictions/{MODEL}",
            json={"instances": [[1.0, 2.0]]},
            timeout=60,
        )
        assert bad.status_code == 400
        assert "[10, 8]" in bad.text
    finally:
        stop_process(record, 30)


def test_tritonserver_loads_the_entry_and_matches(artifacts: dict[str, Path]) -> None:
    windows = np.load(artifacts["windows"])
    repository = artifacts["root"] / "triton-repo"
    shutil.copytree(artifacts["published"] / "triton", repository)
    ports = TritonPorts(free_port(), free_port(), free_port())
    spec = triton_service("triton-package", repository, artifacts["root"] / "triton", ports)
    record = start_and_wait(spec, artifacts["root"], f"http://127.0.0.1:{ports.http}/v2/health/ready")
    try:
        client = triton_http.InferenceServerClient(f"127.0.0.1:{ports.http}")
        client.load_model(MODEL)
        assert client.is_model_ready(MODEL, "1")
        metadata = client.get_model_metadata(MODEL)
        assert metadata["inputs"][0]["name"] == "features"
        assert [int(d) for d in metadata["inputs"][0]["shape"]] == [-1, 10, 8]
        tensor = triton_http.InferInput("features", list(windows.shape), "FP32")
        tensor.set_data_from_numpy(windows)
        served = client.infer(MODEL, [tensor], model_version="1").as_numpy("prediction").reshape(-1)
        np.testing.assert_allclose(served, in_process_torch(artifacts, windows), atol=TOLERANCE)
    finally:
        stop_process(record, 20)


def test_savedmodel_serving_signature_matches_the_keras_model(artifacts: dict[str, Path]) -> None:
    import keras

    windows = np.load(artifacts["windows"])
    signature = load_serving_signature(artifacts["published"] / "savedmodel" / "1")
    assert list(signature.structured_input_signature[1]) == ["features"]
    assert list(signature.structured_outputs) == ["prediction"]
    served = predict_savedmodel(signature, model_signature(), windows).reshape(-1)
    in_process = keras.models.load_model(artifacts["tensorflow"] / "model.keras").predict(windows, verbose=0)
    np.testing.assert_allclose(served, in_process.reshape(-1), atol=TOLERANCE)
