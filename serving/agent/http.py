"""The agent's own endpoints: ``/v1/agent/status`` (its report), ``/metrics``, ``/healthz``."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.agent.core import ModelAgent


def create_agent_app(agent: ModelAgent) -> web.Application:
    async def status(request: web.Request) -> web.Response:
        return web.json_response(text=agent.report().model_dump_json())

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(agent.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"agent": agent.name, "server_up": agent.server_up})

    app = web.Application()
    app.router.add_get("/v1/agent/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    return app
