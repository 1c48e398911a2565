"""Dead model servers: failover for routed traffic, a quick 503 for pinned traffic, shadows that
fail unseen, and a gateway that reloads what a restarted server forgot."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time

import httpx

from model_store import ModelStore
from serving.routing.spec import RoutingSpec
from serving.routing.spec_store import SpecStore
from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import GatewayStack, two_variants, v2_body, windows
from tests.serving.test_gateway import metric_value
from tests.support import wait_until


def kill(stack: GatewayStack, name: str) -> None:
    os.killpg(stack.records[name].pid, signal.SIGKILL)


def test_dead_tf_runtime_fails_over_routed_traffic_and_503s_pinned(canary: GatewayStack) -> None:
    features = windows()
    kill(canary, "tfserving")
    try:
        routed = [canary.infer(features) for _ in range(40)]
        assert {response.status_code for response in routed} == {200}
        assert {response.headers["x-flywheel-variant"] for response in routed} == {"torchserve-v1"}
        # The 30 % the split sent to the dead server say so; the rest were routed to v1 outright.
        origins = collections.Counter(r.headers.get("x-flywheel-failover-from", "") for r in routed)
        assert set(origins) == {"", "tfserving-v2"} and origins["tfserving-v2"] > 0, origins
        assert (
            metric_value(canary.metrics(), "flywheel_gateway_failovers_total", from_variant="tfserving-v2")
            > 0
        )
        started = time.monotonic()
        pinned = canary.infer(features, version=2)
        assert pinned.status_code == 503 and "unavailable" in pinned.json()["error"]
        assert time.monotonic() - started < canary.settings.backend_timeout_s

        # A shadow on the dead server: callers never wait for it or see its failure.
        store = ModelStore.open(canary.settings.resolve_store_uri())
        written = SpecStore(store.storage).update(
            MODEL,
            lambda current: RoutingSpec.model_validate(
                two_variants("shadow", (100, 0), primary="torchserve-v1")
            ),
            actor="test",
            action="shadow onto a dead server",
        )
        wait_until(
            lambda: canary.admin("GET", "/routing").json()[MODEL]["revision"] == written.revision,
            30,
            "reload",
        )
        shadowed = [canary.infer(features) for _ in range(10)]
        assert {(r.status_code, r.headers["x-flywheel-variant"]) for r in shadowed} == {
            (200, "torchserve-v1")
        }
        wait_until(
            lambda: (
                metric_value(
                    canary.metrics(),
                    "flywheel_gateway_shadow_requests_total",
                    variant="tfserving-v2",
                    outcome="BackendUnavailableError",
                )
                >= 10
            ),
            30,
            "the failed shadow copies to be counted",
        )
    finally:
        canary.restart("tfserving")
    # The runtime re-reads the model config the adapter keeps, and serves v2 again.
    wait_until(lambda: canary.infer(features, version=2).status_code == 200, 120, "v2 to serve again")


def test_a_restarted_torchserve_gets_its_versions_back(canary: GatewayStack) -> None:
    """TorchServe keeps nothing across a restart; the gateway's reconcile loop reloads v1."""
    features = windows()
    kill(canary, "torchserve")
    assert canary.infer(features, version=1).status_code == 503
    canary.restart("torchserve")
    wait_until(lambda: canary.infer(features, version=1).status_code == 200, 180, "v1 back on TorchServe")
    assert canary.infer(features, version=1).headers["x-flywheel-variant"] == "torchserve-v1"


class SteadyLoad:
    """Routed requests from a background thread until stopped; records every non-200 answer."""

    def __init__(self, stack: GatewayStack) -> None:
        self.stack, self.sent, self.failures = stack, 0, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        features = windows()
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                response = client.post(f"{self.stack.url}/v2/models/{MODEL}/infer", json=v2_body(features))
                self.sent += 1
                if response.status_code != 200:
                    self.failures.append((response.status_code, response.text[:200]))

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def test_restarting_either_server_under_load_fails_no_routed_request(canary: GatewayStack) -> None:
    """A server that restarts empty is failed over while the gateway reloads its version at once;
    pinned requests meanwhile get 503 with Retry-After, never 404."""
    features = windows()
    for name, version in (("torchserve", 1), ("tfserving", 2)):
        pinned: list[tuple[int, str | None]] = []

        def serves_again(version: int = version, pinned: list[tuple[int, str | None]] = pinned) -> bool:
            response = canary.infer(features, version=version)
            pinned.append((response.status_code, response.headers.get("Retry-After")))
            return response.status_code == 200

        with SteadyLoad(canary) as load:
            wait_until(lambda load=load: load.sent >= 20, 60, "steady traffic")
            kill(canary, name)
            canary.restart(name)
            wait_until(serves_again, 120, f"v{version} back on {name}")
            before = load.sent
            wait_until(lambda load=load, before=before: load.sent >= before + 20, 60, "traffic after it")
        assert load.failures == [], f"{name}: {len(load.failures)} of {load.sent} routed requests failed"
        assert all(status in (200, 503) for status, _ in pinned), pinned
        assert all(retry == "1" for status, retry in pinned if status == 503), pinned
