"""The admin API's retrain routes in-process: run reports are counted once per run, and a failure
callback after a final report changes nothing; bad bodies are 400s."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest

from model_store.backends.file import FileStorage
from monitoring.retrain_bridge import Outbox, RetrainBridge
from serving.gateway.rest import v2_errors
from serving.gateway.retrain import RetrainMetrics, RetrainService


def test_a_run_is_counted_once_whatever_reports_it_again(tmp_path: Path) -> None:
    registry = CollectorRegistry()

    async def scenario() -> list[tuple[int, dict[str, object]]]:
        service = RetrainService(
            RetrainBridge(Outbox(FileStorage(tmp_path)), lambda trigger: "created", {"FeatureDrift"}),
            RetrainMetrics(registry),
        )
        app = web.Application(middlewares=[v2_errors])
        service.add_routes(app)
        answers = []
        async with TestClient(TestServer(app)) as client:
            for body in (
                {"model": "m", "run_id": "r1", "state": "published", "reason": "ok"},
                {"model": "m", "run_id": "r1", "state": "published", "reason": "retried report task"},
                {"model": "m", "run_id": "r1", "state": "failed", "reason": "callback after the report"},
                {"model": "m", "run_id": "r2", "state": "failed"},
                {"model": "m", "run_id": "r3", "state": "exploded"},
                {"model": "../m", "run_id": "r4", "state": "failed"},
            ):
                response = await client.post("/retrain/runs", json=body)
                answers.append((response.status, await response.json()))
        return answers

    answers = asyncio.run(scenario())
    assert [status for status, _ in answers] == [200, 200, 200, 200, 400, 400]
    assert answers[1][1] == answers[2][1] == {"recorded": False, "already": "published"}
    text = generate_latest(registry).decode()
    assert 'flywheel_retrain_runs_total{model="m",state="published"} 1.0' in text
    assert 'flywheel_retrain_runs_total{model="m",state="failed"} 1.0' in text
    assert 'flywheel_retrain_last_failure_timestamp_seconds{model="m"}' in text
