"""The floor under the gateway: an aiohttp server that forwards each body to Triton and returns
the answer, with the gateway's own upstream client (:class:`serving.backends.http1.Http1Pool`)
and event loop (uvloop), and nothing else: no decoding, validation, routing, metrics or
sampling. ``flywheel bench gateway`` measures it beside the gateway, so the gateway's CPU per
request splits into what its HTTP stack costs and what Flywheel's own work costs.

``python -m loadtests.bare_proxy PORT UPSTREAM_HOST:PORT``; POST /v2/models/<m>/versions/<v>/infer.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web

from serving.backends.http1 import Http1Pool


async def serve(port: int, upstream: str) -> None:
    host, _, upstream_port = upstream.rpartition(":")
    pool = Http1Pool(host, int(upstream_port))

    async def forward(request: web.Request) -> web.Response:
        answer = await pool.post(request.path, await request.read(), b"Content-Type: application/json\r\n")
        return web.Response(body=answer.body, status=answer.status, content_type="application/json")

    async def healthy(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v2/models/{model}/versions/{version}/infer", forward)
    app.router.add_get("/healthz", healthy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2]))
