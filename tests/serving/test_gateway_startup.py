"""A gateway that has not loaded its routing specs says so: not ready, 503 + Retry-After, never 404."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
from tritonclient.grpc import service_pb2, service_pb2_grpc

from flywheel.settings import FlywheelSettings
from flywheel.stack.buckets import ensure_bucket
from flywheel.stack.process import start_process, stop_process
from serving.gateway.service import gateway_service
from tests.conftest import s3_server_spec
from tests.support import free_stack_ports, start_and_wait, wait_until

TOKEN = "startup-test-token-0123456789"
BODY = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.5]}]}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_before_its_specs_load_the_gateway_is_not_ready_and_answers_503(tmp_path: Path) -> None:
    ports = free_stack_ports()  # nothing listens on the S3 port yet: the store is unreachable at start
    settings = FlywheelSettings(
        home=tmp_path,
        var_dir=tmp_path / "var",
        store_uri="s3://startup-store/store",
        routing_reload_interval_s=0.2,
        **ports,
    )
    gateway = start_process(gateway_service(settings, TOKEN), tmp_path / "run", tmp_path / "log")
    s3 = None
    try:
        url = settings.gateway_url
        wait_until(lambda: _answers(f"{url}/v2/health/live"), 60, "the gateway to be live")
        assert httpx.get(f"{url}/v2/health/ready").status_code == 503
        refused = httpx.post(f"{url}/v2/models/anything/infer", json=BODY)
        assert refused.status_code == 503, refused.text
        assert (
            refused.headers["Retry-After"] == "1"
            and "not loaded its routing specs" in refused.json()["error"]
        )
        channel = grpc.insecure_channel(f"127.0.0.1:{settings.gateway_grpc_port}")
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready is False
        request = service_pb2.ModelInferRequest(model_name="anything")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(0.5)
        try:
            stub.ModelInfer(request, timeout=10)
            raise AssertionError("ModelInfer answered before the routes were loaded")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert ("retry-after", "1") in tuple(error.trailing_metadata() or ())

        # The store comes up: the gateway loads (no specs), turns ready, and now "not deployed" is true.
        s3 = start_and_wait(s3_server_spec(settings), tmp_path, settings.s3_url)
        ensure_bucket(settings, "startup-store")
        wait_until(lambda: _answers(f"{url}/v2/health/ready"), 120, "the gateway to be ready")
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready is True
        unknown = httpx.post(f"{url}/v2/models/anything/infer", json=BODY)
        assert unknown.status_code == 404 and "not deployed" in unknown.json()["error"]
        channel.close()
    finally:
        stop_process(gateway, 20)
        if s3 is not None:
            stop_process(s3, 20)
