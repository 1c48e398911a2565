"""Locust load test of the gateway: a KServe v2 REST user and a KServe v2 gRPC user.

Headless, with CSV output (what ``flywheel loadtest`` and CI-style runs use)::

    locust -f loadtests/locustfile.py --headless -u 20 -r 10 -t 60s \\
        --host http://127.0.0.1:9080 --csv var/loadtest/gateway

Name one user class to run only it (``... RestInferUser`` or ``... GrpcInferUser``): the gRPC
user's calls block, so mixed in one Locust process they delay the REST user's greenlets.

Environment (read by Locust's own process, not by Flywheel settings):
``FLYWHEEL_LOADTEST_MODEL`` (default ``stock-forecaster``), ``FLYWHEEL_LOADTEST_GRPC``
(default ``127.0.0.1:9081``) and ``FLYWHEEL_LOADTEST_ROWS`` (windows per request, default 1).
Each request names its variant in the response; the REST user reports the split as Locust
request names (``infer -> <variant>``) so the CSV shows the canary's share and latency.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import orjson
from locust import FastHttpUser, User, between, events, task

MODEL = os.environ.get("FLYWHEEL_LOADTEST_MODEL", "stock-forecaster")
GRPC_TARGET = os.environ.get("FLYWHEEL_LOADTEST_GRPC", "127.0.0.1:9081")
ROWS = int(os.environ.get("FLYWHEEL_LOADTEST_ROWS", "1"))
WINDOW, FEATURES = 10, 8


def windows(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.01, size=(ROWS, WINDOW, FEATURES)).astype(np.float32)


class RestInferUser(FastHttpUser):
    """POST /v2/models/{model}/infer, routed by the model's spec; sticky users for A/B."""

    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        features = windows(id(self) % 1000)
        self.body = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "features",
                        "shape": list(features.shape),
                        "datatype": "FP32",
                        "data": features.ravel().tolist(),
                    }
                ]
            }
        ).decode()
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
        features = windows(id(self) % 1000)
        self.inputs = [triton_grpc.InferInput("features", list(features.shape), "FP32")]
        self.inputs[0].set_data_from_numpy(features)

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
