"""``python -m serving.rollout``: the rollout controller process ``flywheel up`` starts.

Runs beside the gateway (or anywhere with store access and the gateway's metrics). Several
controllers may run; the per-model lease makes sure only one drives a given rollout.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from serving.rollout.analysis import GatewayMetricsSource, PrometheusMetricsSource
from serving.rollout.controller import RolloutController


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = FlywheelSettings()
    store = ModelStore.open(settings.resolve_store_uri(), settings)
    # Several gateway replicas: their counters are read as Prometheus sums, never from one replica.
    prometheus = settings.rollout_prometheus_url or (
        settings.prometheus_url if settings.gateway_replicas > 1 else None
    )
    controller = RolloutController(
        store,
        (
            PrometheusMetricsSource(prometheus)
            if prometheus
            else GatewayMetricsSource(f"{settings.gateway_url}/metrics")
        ),
        settings.gateway_url,
        holder=f"{socket.gethostname()}:{os.getpid()}",
        lease_ttl_s=settings.rollout_lease_ttl_s,
        agent_stale_after_s=settings.agent_stale_after_s,
    )
    heartbeat = settings.run_dir / "rollout-controller.heartbeat"
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    controller.run(settings.rollout_tick_s, heartbeat=heartbeat.touch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
