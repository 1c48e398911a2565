"""Locust load test of the gateway: a KServe v2 REST user and a KServe v2 gRPC user.

Headless, with CSV output (what ``flywheel loadtest`` and CI-style runs use)::

    locust -f loadtests/locustfile.py --headless -u 20 -r 10 -t 60s \\
        --host http://127.0.0.1:9080 --csv var/loadtest/gateway

Name one user class to run only it (``... RestInferUser`` or ``... GrpcInferUser``): the gRPC
user's calls block, so mixed in one Locust process they delay the REST user's greenlets.

Environment (read by Locust's own process):
``FLYWHEEL_LOADTEST_MODEL`` (default: the ``FLYWHEEL_MODEL_NAME`` setting), ``FLYWHEEL_LOADTEST_GRPC``
(default ``127.0.0.1:9081``) and ``FLYWHEEL_LOADTEST_ROWS`` (rows per request, default 1).
Each request names its variant in the response; the REST user reports the split as Locust
request names (``infer -> <variant>``) so the CSV shows the canary's share and latency. Inputs
are built from the model's v2 metadata (its signature), so any model can be load-tested.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import numpy as np
import orjson
from locust import FastHttpUser, User, between, events, task

from flywheel.settings import FlywheelSettings
from serving.protocols.examples import example_inputs, v2_request

MODEL = os.environ.get("FLYWHEEL_LOADTEST_MODEL") or FlywheelSettings().model_name
GRPC_TARGET = os.environ.get("FLYWHEEL_LOADTEST_GRPC", "127.0.0.1:9081")
ROWS = int(os.environ.get("FLYWHEEL_LOADTEST_ROWS", "1"))
HTTP_TARGET = os.environ.get("FLYWHEEL_LOADTEST_HTTP", "http://127.0.0.1:9080")


def signature_inputs(host: str | None) -> list[dict[str, Any]]:
    """The model's inputs from the gateway's v2 metadata (names, datatypes, shapes)."""
    response = httpx.get(f"{host or HTTP_TARGET}/v2/models/{MODEL}", timeout=30)
    response.raise_for_status()
    return list(response.json()["inputs"])


def example(host: str | None, seed: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    specs = signature_inputs(host)
    return example_inputs(specs, ROWS, seed), {spec["name"]: spec["datatype"] for spec in specs}


class RestInferUser(FastHttpUser):
    """POST /v2/models/{model}/infer, routed by the model's spec; sticky users for A/B."""

    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        arrays, datatypes = example(self.host, id(self) % 1000)
        self.body = orjson.dumps(v2_request(arrays, datatypes)).decode()
        self.headers = {"Content-Type": "application/json", "x-user-id": f"locust-{id(self)}"}

    @task
    def infer(self) -> None:
        with self.client.post(
            f"/v2/models/{MODEL}/infer",
            data=self.body,
            headers=self.headers,
            name="infer",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            variant = response.headers.get("x-flywheel-variant", "unknown")
            response.success()
        # A zero-cost marker per variant, so the CSV carries the split.
        events.request.fire(
            request_type="SPLIT",
            name=f"infer -> {variant}",
            response_time=0,
            response_length=0,
            exception=None,
            context={},
        )


class GrpcInferUser(User):
    """ModelInfer over KServe v2 gRPC with tritonclient's stubs, timed into Locust's stats."""

    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        import tritonclient.grpc as triton_grpc

        self.client: Any = triton_grpc.InferenceServerClient(GRPC_TARGET)
        arrays, datatypes = example(self.host, id(self) % 1000)
        self.inputs = []
        for name, array in arrays.items():
            tensor = triton_grpc.InferInput(name, list(array.shape), datatypes[name])
            tensor.set_data_from_numpy(array)
            self.inputs.append(tensor)

    def on_stop(self) -> None:
        self.client.close()

    @task
    def infer(self) -> None:
        from tritonclient.utils import InferenceServerException

        started = time.perf_counter()
        exception: Exception | None = None
        try:
            self.client.infer(MODEL, self.inputs)
        except InferenceServerException as error:
            exception = error
        events.request.fire(
            request_type="gRPC",
            name="ModelInfer",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=exception,
            context={},
        )
