"""Dead model servers: failover for routed traffic, a quick 503 for pinned traffic, shadows that
fail unseen, and a gateway that reloads what a restarted server forgot."""

from __future__ import annotations

import os
import signal
import time

from model_store import ModelStore
from serving.routing.spec import RoutingSpec
from serving.routing.spec_store import SpecStore
from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import GatewayStack, two_variants, windows
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
