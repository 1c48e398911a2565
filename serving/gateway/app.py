"""Wiring: build a gateway from settings (``build_gateway``) and serve REST + gRPC (``serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from serving.backends.base import ModelBackend
from serving.backends.replicas import ServerDirectory
from serving.gateway.admin import AdminService
from serving.gateway.admin_rest import create_admin_app
from serving.gateway.capture import CaptureWriter
from serving.gateway.core import GatewayCore
from serving.gateway.grpc_server import create_grpc_server
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.rest import create_app
from serving.gateway.retrain import RetrainService
from serving.gateway.routing_table import RoutingTable
from serving.gateway.sampling import ProfileSampler
from serving.gateway.shared_feedback import AttributionSigner, FeedbackLedger, SharedArms
from serving.gateway.workers import workers_registry
from serving.routing.spec_store import SpecStore

log = logging.getLogger(__name__)
#: A stopping gateway waits this long for its last capture batch to reach the store.
CAPTURE_FINAL_FLUSH_S = 10.0
#: A worker binds the shared ports once its routing specs are loaded, or after this long anyway.
WORKER_READY_WAIT_S = 60.0


@dataclass
class Gateway:
    core: GatewayCore
    admin: AdminService
    table: RoutingTable
    backends: dict[str, ModelBackend]
    directory: ServerDirectory
    app: web.Application
    retrain: RetrainService | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        # A flush in flight finishes (or requeues what it could not write) before the last one.
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.core.drain()
        if self.core.capture is not None:
            await self._final_capture_flush(self.core.capture)
        await self.directory.aclose()

    @staticmethod
    async def _final_capture_flush(capture: CaptureWriter) -> None:
        """What was captured but not flushed yet reaches the store, a few tries within a deadline;
        what still does not is said in the log, with its count."""
        deadline = asyncio.get_running_loop().time() + CAPTURE_FINAL_FLUSH_S
        while capture.buffered:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(capture.flush(), remaining)
            except TimeoutError:
                break
            if capture.buffered:
                await asyncio.sleep(min(1.0, max(0.0, remaining)))  # pacing retries of a failing store
        if capture.buffered:
            log.warning("stopping with %d captured requests the store did not take", capture.buffered)


def build_gateway(
    settings: FlywheelSettings,
    admin_token: str,
    store: ModelStore | None = None,
    airflow_password: str | None = None,
) -> Gateway:
    """``airflow_password`` enables the retrain bridge (``/admin/alerts``); without it there is none.

    The model servers are whatever replicas their agents report in the store: the gateway has no
    list of them, and talks to each through an inference-only adapter.
    """
    store = store or ModelStore.open(settings.resolve_store_uri(), settings)
    directory = ServerDirectory(
        store, settings.agent_stale_after_s, settings.backend_timeout_s, settings.serving_device
    )
    backends: dict[str, ModelBackend] = dict(directory.sets)
    metrics = GatewayMetrics(CollectorRegistry())
    for replica_set in directory.sets.values():
        replica_set.on_attempt = metrics.count_replica_attempt
    arms = SharedArms(store.storage)
    table = RoutingTable(
        SpecStore(store.storage), store, backends, metrics=metrics, directory=directory, arms=arms
    )
    capture = CaptureWriter(
        store.storage,
        metrics.registry,
        settings.gateway_replica_name,
        settings.capture_sample_rate,
        settings.capture_flush_interval_s,
        settings.capture_batch_records,
        int(settings.capture_max_buffered_mib * 1024 * 1024),
    )
    core = GatewayCore(
        table,
        backends,
        metrics,
        ProfileSampler(metrics, settings.drift_sample_rate),
        settings.backend_timeout_s,
        settings.feedback_memory,
        # Every replica derives the same key from the admin token: any of them can verify a token.
        signer=AttributionSigner(admin_token),
        ledger=FeedbackLedger(store.storage),
        arms=arms,
        capture=capture,
    )
    admin = AdminService(table.spec_store, store, backends, table, directory, settings.deploy_ready_timeout_s)
    retrain = (
        None
        if airflow_password is None
        else RetrainService.from_settings(settings, metrics.registry, airflow_password, store.storage)
    )
    app = create_app(
        core,
        settings.gateway_max_body_bytes,
        create_admin_app(admin, admin_token, retrain),
        body_timeout_s=settings.gateway_body_timeout_s,
        exposition=workers_registry() or metrics.registry,
    )
    return Gateway(core, admin, table, backends, directory, app, retrain)


async def serve(
    settings: FlywheelSettings,
    admin_token: str,
    airflow_password: str | None = None,
    share_ports: bool = False,
) -> None:
    """Run until SIGTERM or SIGINT, then stop taking requests and finish those in flight.

    ``share_ports``: this process is one of the replica's workers (``serving.gateway.workers``),
    bound with SO_REUSEPORT beside its siblings; the kernel spreads connections over them.
    """
    gateway = build_gateway(settings, admin_token, airflow_password=airflow_password)
    gateway.tasks.append(asyncio.create_task(gateway.table.run(settings.routing_reload_interval_s)))
    if gateway.retrain is not None:
        gateway.tasks.append(asyncio.create_task(gateway.retrain.run()))
    if gateway.core.capture is not None:
        gateway.tasks.append(asyncio.create_task(gateway.core.capture.run()))
    if share_ports:
        # A worker joins the shared ports once it can answer: the kernel hands a bound socket
        # connections at once, and they would get 503s its siblings could serve. Bounded: a store
        # that is down must not keep it off the port forever; it then answers 503 + Retry-After
        # until its specs load, as a lone gateway does from its start (its health check must see it).
        log.info("worker waiting for its routing specs before taking connections")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WORKER_READY_WAIT_S):
                await gateway.table.loaded_once.wait()
    runner = web.AppRunner(
        gateway.app,
        access_log=None,
        keepalive_timeout=settings.gateway_keepalive_timeout_s,
        # Bodies are decoded by rest.read_body, so a bad one gets a 400 instead of a reset.
        auto_decompress=False,
    )
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.gateway_http_port, reuse_port=share_ports).start()
    grpc_server = create_grpc_server(
        gateway.core,
        f"{settings.host}:{settings.gateway_grpc_port}",
        settings.gateway_max_body_bytes,
        share_port=share_ports,
    )
    await grpc_server.start()
    log.info(
        "gateway serving REST on %s:%s and gRPC on %s:%s",
        settings.host,
        settings.gateway_http_port,
        settings.host,
        settings.gateway_grpc_port,
    )
    # What start-up built (modules, botocore's service models: ~140k objects) lives as long as the
    # process: the collector need not walk it again on every full collection (measured: its cost
    # per request falls to about a third; docs/benchmarks.md).
    gc.freeze()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("gateway stopping")
    await grpc_server.stop(grace=5)
    await runner.cleanup()
    with contextlib.suppress(asyncio.CancelledError):
        await gateway.aclose()
