"""The bundled tritonserver starts here, loads a Python-backend model on demand, serves both protocols."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from flywheel.stack.process import stop_process
from serving.backends.triton.runtime import TritonPorts, triton_service
from tests.support import free_port, start_and_wait

MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (x + 1).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""

CONFIG = """
name: "add_one"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonPorts]:
    workdir = tmp_path_factory.mktemp("triton")
    repository = workdir / "models"
    (repository / "add_one" / "1").mkdir(parents=True)
    (repository / "add_one" / "config.pbtxt").write_text(CONFIG)
    (repository / "add_one" / "1" / "model.py").write_text(MODEL_PY)
    ports = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    spec = triton_service("triton-smoke", repository, workdir, ports)
    record = start_and_wait(spec, workdir, f"http://127.0.0.1:{ports.http}/v2/health/ready", timeout_s=120)
    yield ports
    stop_process(record, 20)


def test_explicit_load_then_infer_over_http_and_grpc(triton: TritonPorts) -> None:
    http = httpclient.InferenceServerClient(f"127.0.0.1:{triton.http}")
    assert not http.is_model_ready("add_one"), "explicit mode: nothing loads until asked"
    http.load_model("add_one")
    assert http.is_model_ready("add_one")

    batch = np.arange(8, dtype=np.float32).reshape(2, 4)
    http_input = httpclient.InferInput("INPUT0", list(batch.shape), "FP32")
    http_input.set_data_from_numpy(batch)
    result = http.infer("add_one", [http_input]).as_numpy("OUTPUT0")
    np.testing.assert_allclose(result, batch + 1)

    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{triton.grpc}")
    grpc_input = grpcclient.InferInput("INPUT0", list(batch.shape), "FP32")
    grpc_input.set_data_from_numpy(batch)
    np.testing.assert_allclose(grpc.infer("add_one", [grpc_input]).as_numpy("OUTPUT0"), batch + 1)

    http.unload_model("add_one")
    assert not http.is_model_ready("add_one")
