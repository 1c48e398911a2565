"""The gateway's upstream HTTP/1.1 client against real sockets: keep-alive, its connection limit,
servers that close idle or half-answered connections, chunked answers, and cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop
from aiohttp import web

from serving.backends.http1 import Http1Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Runner = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Each scenario on asyncio's loop and on uvloop, the gateway's (their transports differ)."""
    return asyncio.run if request.param == "asyncio" else uvloop.run


async def echo_server(
    connections: list[object], keepalive_timeout: float = 75.0
) -> tuple[web.AppRunner, int]:
    """An aiohttp server that echoes the body and counts the connections it accepted."""

    async def echo(request: web.Request) -> web.Response:
        connections.append(request.transport)
        await asyncio.sleep(float(request.headers.get("x-delay", "0")))
        return web.Response(body=await request.read(), headers={"x-seen": request.headers.get("x-tag", "")})

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def raw_server(handle: Handler) -> tuple[asyncio.Server, int]:
    """A TCP server that answers with whatever bytes ``handle`` writes (the faulty servers)."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


def test_requests_reuse_one_keep_alive_connection_and_carry_body_and_headers(run: Runner) -> None:
    async def scenario() -> None:
        connections: list[object] = []
        runner, port = await echo_server(connections)
        pool = Http1Pool("127.0.0.1", port)
        try:
            for index in range(20):
                answer = await pool.post("/echo", f"body {index}".encode(), f"x-tag: t{index}\r\n".encode())
                assert (answer.status, answer.body, answer.headers[b"x-seen"]) == (
                    200,
                    f"body {index}".encode(),
                    f"t{index}".encode(),
                )
            assert len({id(transport) for transport in connections}) == 1
        finally:
            pool.close()
            await runner.cleanup()

    run(scenario())


def test_concurrent_requests_never_open_more_connections_than_the_limit(run: Runner) -> None:
    async def scenario() -> None:
        connections: list[object] = []
        runner, port = await echo_server(connections)
        pool = Http1Pool("127.0.0.1", port, limit=4)
        try:
            answers = await asyncio.gather(
                *(pool.post("/echo", str(i).encode(), b"x-delay: 0.02\r\n") for i in range(40))
            )
            assert sorted(int(a.body) for a in answers) == list(range(40))
            assert len({id(transport) for transport in connections}) <= 4
        finally:
            pool.close()
            await runner.cleanup()

    run(scenario())


def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error(run: Runner) -> None:
    """The server's keep-alive timeout closes the pooled connection; the next POST still answers."""

    async def scenario() -> None:
        connections: list[object] = []
        runner, port = await echo_server(connections, keepalive_timeout=0.05)
        pool = Http1Pool("127.0.0.1", port)
        try:
            assert (await pool.post("/echo", b"first")).body == b"first"
            idle = pool._idle[0]
            async with asyncio.timeout(5):  # the server's idle timeout closes it
                while not idle.closed:
                    await asyncio.sleep(0.01)
            assert (await pool.post("/echo", b"second")).body == b"second"
            assert len({id(transport) for transport in connections}) == 2
        finally:
            pool.close()
            await runner.cleanup()

    run(scenario())


def test_a_server_that_closes_mid_answer_fails_the_request_and_the_pool_recovers(run: Runner) -> None:
    async def scenario() -> None:
        served = 0

        async def half_then_whole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal served
            body = await read_request(reader)
            served += 1
            if served == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                await writer.drain()
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            writer.close()

        server, port = await raw_server(half_then_whole)
        pool = Http1Pool("127.0.0.1", port)
        try:
            with pytest.raises(ConnectionError, match="mid-answer"):
                await pool.post("/x", b"one")
            assert (await pool.post("/x", b"two")).body == b"two"
        finally:
            pool.close()
            server.close()

    run(scenario())


def test_chunked_and_connection_close_answers(run: Runner) -> None:
    async def scenario() -> None:
        async def chunked_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            await writer.drain()
            writer.close()

        server, port = await raw_server(chunked_then_close)
        pool = Http1Pool("127.0.0.1", port)
        try:
            for _ in range(3):  # each on a new connection: the server said close
                answer = await pool.post("/x", b"")
                assert (answer.status, answer.body) == (503, b"hello world")
            assert not pool._idle
        finally:
            pool.close()
            server.close()

    run(scenario())


def test_nothing_listening_is_a_connection_error(run: Runner) -> None:
    async def scenario() -> None:
        server, port = await raw_server(read_request)  # type: ignore[arg-type]
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionError):
            await Http1Pool("127.0.0.1", port).post("/x", b"")

    run(scenario())


def test_a_cancelled_request_closes_its_connection_and_frees_its_slot(run: Runner) -> None:
    """The caller's timeout: the hung connection is dropped (its answer could arrive later and be
    read as the next request's), and the pool's one slot serves the next request."""

    async def scenario() -> None:
        hung, closed = asyncio.Event(), asyncio.Event()

        async def hang_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            body = await read_request(reader)
            if not hung.is_set():
                hung.set()
                await reader.read()  # until the client closes
                closed.set()
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

        server, port = await raw_server(hang_once)
        pool = Http1Pool("127.0.0.1", port, limit=1)
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await pool.post("/x", b"slow")
            await asyncio.wait_for(closed.wait(), 5)
            assert (await asyncio.wait_for(pool.post("/x", b"next"), 5)).body == b"next"
        finally:
            pool.close()
            server.close()

    run(scenario())


def test_a_request_the_server_dropped_unanswered_on_a_reused_connection_is_sent_again(run: Runner) -> None:
    """The race a keep-alive timeout makes: the server closes the pooled connection just as the
    next request arrives on it, without a byte of answer. The pool sends it once more, anew."""

    async def scenario() -> None:
        accepted = 0

        async def answer_once_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            body = await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            if accepted == 1:
                await read_request(reader)  # the second request: read, never answered
                writer.close()

        server, port = await raw_server(answer_once_then_drop)
        pool = Http1Pool("127.0.0.1", port)
        try:
            assert (await pool.post("/x", b"one")).body == b"one"
            assert (await asyncio.wait_for(pool.post("/x", b"two"), 5)).body == b"two"
            assert accepted == 2
        finally:
            pool.close()
            server.close()

    run(scenario())


def test_interim_1xx_answers_are_skipped_and_a_timeout_is_a_connection_error(run: Runner) -> None:
    async def scenario() -> None:
        async def continue_then_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                body = await read_request(reader)
                if body == b"hang":
                    await reader.read()
                    return
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()

        server, port = await raw_server(continue_then_answer)
        pool = Http1Pool("127.0.0.1", port)
        try:
            for index in range(3):  # answers stay paired with their requests
                answer = await pool.post("/x", f"r{index}".encode())
                assert (answer.status, answer.body) == (200, f"r{index}".encode())
            with pytest.raises(ConnectionError, match="no answer within"):
                await pool.post("/x", b"hang", timeout_s=0.2)
        finally:
            pool.close()
            server.close()

    run(scenario())
