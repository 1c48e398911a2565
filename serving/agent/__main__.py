"""``python -m serving.agent --kind K --replica I --port P``: the agent beside one server replica.

Settings (store, ports, intervals) come from ``FLYWHEEL_*`` in the environment, as the stack
passes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from serving.agent.core import ModelAgent
from serving.agent.http import create_agent_app
from serving.backends.factory import replica_layouts
from serving.backends.registry import get_plugin


async def serve(settings: FlywheelSettings, kind: str, replica: int, port: int) -> None:
    plugin = get_plugin(kind)
    layout = replica_layouts(settings, kind)[replica]
    store = ModelStore.open(settings.resolve_store_uri(), settings)
    endpoints = plugin.endpoints(layout)
    adapter = plugin.build_adapter(
        store, endpoints, plugin.repository(layout), settings.backend_timeout_s, settings.serving_device
    )
    agent = ModelAgent(
        layout.name,
        kind,
        replica,
        store,
        adapter,
        endpoints,
        status_url=f"http://{settings.host}:{port}/v1/agent/status",
        unload_grace_s=settings.agent_unload_grace_s,
    )
    runner = web.AppRunner(create_agent_app(agent), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, port).start()
    logging.getLogger(__name__).info("agent of %s serving status on %s:%s", layout.name, settings.host, port)
    loop_task = asyncio.create_task(agent.run(settings.agent_interval_s))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    loop_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop_task
    await runner.cleanup()
    await adapter.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.agent", description=__doc__)
    parser.add_argument("--kind", required=True, help="The server kind (a registered backend).")
    parser.add_argument("--replica", type=int, default=0, help="Which replica of that kind (0-based).")
    parser.add_argument("--port", type=int, required=True, help="Port of the agent's status and metrics.")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(FlywheelSettings(), arguments.kind, arguments.replica, arguments.port))


if __name__ == "__main__":
    main()
