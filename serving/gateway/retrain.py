"""The retrain bridge inside the admin API: Alertmanager's webhook and the DAG's run reports.

Routes (under ``/admin``, behind the bearer token like the rest of the admin API):

- ``POST /alerts``: Alertmanager webhook (v4 payload). Firing drift alerts become outbox entries;
  the answer lists what was queued, what was a duplicate and what was ignored, and delivery to
  Airflow starts at once in the background.
- ``GET /retrain``: the outbox, pending and recently delivered.
- ``POST /retrain/runs``: the retraining DAG reports a finished run (``published``,
  ``rejected`` by the gate, ``skipped`` for want of new data, ``failed``); counted in
  ``flywheel_retrain_runs_total``; a failure also sets
  ``flywheel_retrain_last_failure_timestamp_seconds``, which the ``RetrainFailed`` rule watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field

from flywheel.airflow_client import AirflowClient
from flywheel.settings import FlywheelSettings
from model_store.backends.base import ObjectStorage
from monitoring.retrain_bridge import Outbox, OutboxEntry, RetrainBridge, RetrainTrigger, WebhookPayload
from serving.gateway.rest import json_response, read_json

log = logging.getLogger(__name__)


RUN_STATES = ("published", "rejected", "skipped", "failed")
TRIGGER_OUTCOMES = ("queued", "duplicate", "created", "exists", "retry")


class RunReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    run_id: str = Field(min_length=1, max_length=250)
    state: Literal["published", "rejected", "skipped", "failed"]
    reason: str = Field(default="", max_length=2000)


class RetrainMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.triggers = Counter(
            "flywheel_retrain_triggers",
            "Retraining triggers by outcome: queued, duplicate, created, exists (Airflow had it), retry.",
            ["model", "outcome"],
            registry=registry,
        )
        self.pending = Gauge(
            "flywheel_retrain_outbox_pending",
            "Retraining triggers waiting in the outbox for Airflow.",
            registry=registry,
            multiprocess_mode="livemax",  # one shared outbox: every worker sees the same count
        )
        self.last_failure = Gauge(
            "flywheel_retrain_last_failure_timestamp_seconds",
            "When a retraining run of the model last failed (Unix time); RetrainFailed watches it.",
            ["model"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.runs = Counter(
            "flywheel_retrain_runs",
            "Finished retraining runs reported by the DAG: published, rejected, skipped or failed.",
            ["model", "state"],
            registry=registry,
        )

    def zero(self, model: str) -> None:
        """Create the model's series at 0, so the first run or trigger shows in ``increase()``."""
        for state in RUN_STATES:
            self.runs.labels(model, state)
        for outcome in TRIGGER_OUTCOMES:
            self.triggers.labels(model, outcome)


class RetrainService:
    """The bridge plus its background delivery loop; one per gateway process."""

    def __init__(self, bridge: RetrainBridge, metrics: RetrainMetrics) -> None:
        self.bridge = bridge
        self.metrics = metrics
        self._delivering = asyncio.Lock()
        self._wake = asyncio.Event()
        self._reported: dict[tuple[str, str], str] = {}  # (model, run id) -> state, oldest first
        bridge.on_outcome = self._count

    @classmethod
    def from_settings(
        cls, settings: FlywheelSettings, registry: CollectorRegistry, password: str, storage: ObjectStorage
    ) -> RetrainService:
        client = AirflowClient(settings.resolved_airflow_url, settings.airflow_username, password)
        dag_id = settings.retrain_dag_id

        def send(trigger: RetrainTrigger) -> str:
            return client.trigger(dag_id, trigger.dag_run_id, trigger.conf())

        # In the store every gateway replica shares: a replica that dies for good loses no trigger.
        outbox = Outbox(storage, retry_max_s=settings.retrain_retry_max_s)
        names = {name.strip() for name in settings.retrain_alerts.split(",") if name.strip()}
        metrics = RetrainMetrics(registry)
        metrics.zero(settings.model_name)
        return cls(RetrainBridge(outbox, send, names), metrics)

    def _count(self, entry: OutboxEntry) -> None:
        model = entry.trigger.model
        if entry.outcome is None:
            self.metrics.triggers.labels(model, "retry").inc()
            log.warning(
                "retrain trigger %s not delivered yet: %s", entry.trigger.dag_run_id, entry.last_error
            )
        else:
            self.metrics.triggers.labels(model, entry.outcome).inc()
            log.info("retrain trigger %s delivered: %s", entry.trigger.dag_run_id, entry.outcome)

    async def deliver(self) -> None:
        async with self._delivering:  # one delivery pass at a time; httpx is blocking, so a thread
            await asyncio.to_thread(self.bridge.deliver)
            # The outbox is in the object store: every read off the event loop.
            self.metrics.pending.set(len(await asyncio.to_thread(self.bridge.outbox.pending)))

    async def run(self, interval_s: float = 1.0) -> None:
        """Deliver whatever is due every ``interval_s``, and at once after a webhook queued something."""
        while True:
            try:
                await self.deliver()
            except Exception:  # a bad outbox file must not end delivery for the others
                log.exception("retrain delivery pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval_s)
            self._wake.clear()

    def add_routes(self, app: web.Application) -> None:
        async def alerts(request: web.Request) -> web.Response:
            payload = WebhookPayload.model_validate(await read_json(request))
            result = await asyncio.to_thread(self.bridge.accept, payload)
            for trigger in result.queued:
                log.info("retrain trigger queued: %s (%s)", trigger.dag_run_id, trigger.reason)
                self.metrics.triggers.labels(trigger.model, "queued").inc()
            for trigger in result.duplicates:
                self.metrics.triggers.labels(trigger.model, "duplicate").inc()
            self._wake.set()
            return json_response(result.as_dict())

        async def status(request: web.Request) -> web.Response:
            return json_response(await asyncio.to_thread(self.bridge.status))

        async def run_report(request: web.Request) -> web.Response:
            report = RunReport.model_validate(await read_json(request))
            key = (report.model, report.run_id)
            previous = self._reported.get(key)
            # A retried report task repeats its POST; a failure callback may follow a final report
            # that was already posted. Count each run once, by its first final state.
            if previous is not None:
                return json_response({"recorded": False, "already": previous})
            self._reported[key] = report.state
            if len(self._reported) > 10_000:
                self._reported.pop(next(iter(self._reported)))
            self.metrics.runs.labels(report.model, report.state).inc()
            if report.state == "failed":
                self.metrics.last_failure.labels(report.model).set_to_current_time()
            log.info("retrain run %s of %s: %s %s", report.run_id, report.model, report.state, report.reason)
            return json_response({"recorded": True})

        app.add_routes(
            [
                web.post("/alerts", alerts),
                web.get("/retrain", status),
                web.post("/retrain/runs", run_report),
            ]
        )
