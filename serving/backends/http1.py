"""A lean HTTP/1.1 keep-alive client for the gateway's hot path to a model server.

Per request, aiohttp's client builds request and response objects, header multidicts, a timer
and a payload writer: about half of the gateway's Python per request (docs/benchmarks.md,
"Gateway CPU"). This client does what one inference POST needs and nothing else: a pool of
keep-alive connections (``asyncio.Protocol``), the request written in one call, and the answer
parsed by ``httptools`` (llhttp, the parser Node.js uses), never by hand.

Failures surface as ``ConnectionError`` (refused, reset, closed before the answer, no answer
within ``timeout_s``: :class:`Http1TimeoutError`); a connection that broke, timed out or was
cancelled mid-request is closed, never reused. A POST on a *reused* connection that the server
closed before sending any byte of the answer is sent once more on a new one: that is nearly
always a keep-alive connection the server closed while it sat idle, and inference has no side
effects to repeat (a server that crashed on the request gets it once more, on a new connection).
Interim 1xx answers (RFC 9110 lets a server send them unasked) are skipped.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import cast

import httptools


@dataclass(frozen=True, slots=True)
class Http1Response:
    status: int
    headers: dict[bytes, bytes]  # names lower-cased
    body: bytes


class _StaleConnectionError(ConnectionError):
    """Closed by the server before any byte of the answer: safe to send again."""


class Http1TimeoutError(ConnectionError):
    """No whole answer within the request's ``timeout_s``."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Http1Response] | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.received = False
        self.closed = False
        self.reusable = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"unreadable HTTP answer: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.received:
            self._fail(ConnectionError(f"the server closed the connection mid-answer ({exc or 'EOF'})"))
        else:
            self._fail(_StaleConnectionError(f"the server closed the connection ({exc or 'EOF'})"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers, self.body = {}, []  # an interim answer: the real one follows
            return
        self.reusable = self.parser.should_keep_alive()
        response = Http1Response(status, self.headers, b"".join(self.body))
        self.headers, self.body, self.received = {}, [], False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(response)
        self.waiter = None

    # ours
    def _fail(self, error: Exception) -> None:
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)
        self.waiter = None

    def send(self, request: bytes) -> asyncio.Future[Http1Response]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """Keep-alive connections to one ``host:port``, at most ``limit`` open at once."""

    def __init__(self, host: str, port: int, limit: int = 64) -> None:
        self.host, self.port = host, port
        self._host_header = f"Host: {host}:{port}\r\n".encode()
        self._idle: collections.deque[_Connection] = collections.deque()
        self._slots = asyncio.Semaphore(limit)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        return connection

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and connection.reusable:
                return connection
        return None

    async def post(
        self, path: str, body: bytes, headers: bytes = b"", timeout_s: float | None = None
    ) -> Http1Response:
        """POST ``body``; ``headers`` are complete ``Name: value\\r\\n`` lines (no Host or length).
        ``timeout_s`` bounds the whole exchange, a wait for a free connection included."""
        if timeout_s is None:
            return await self._post(path, body, headers)
        try:
            async with asyncio.timeout(timeout_s):
                return await self._post(path, body, headers)
        except TimeoutError:
            raise Http1TimeoutError(f"no answer within {timeout_s:g} s") from None

    async def _post(self, path: str, body: bytes, headers: bytes) -> Http1Response:
        request = b"".join(
            (
                b"POST ",
                path.encode(),
                b" HTTP/1.1\r\n",
                self._host_header,
                b"Content-Length: ",
                str(len(body)).encode(),
                b"\r\n",
                headers,
                b"\r\n",
                body,
            )
        )
        async with self._slots:
            connection = self._take_idle()
            if connection is not None:
                try:
                    return await self._exchange(connection, request)
                except _StaleConnectionError:
                    pass  # closed while idle: nothing reached the server, send it on a new one
            return await self._exchange(await self._connect(), request)

    async def _exchange(self, connection: _Connection, request: bytes) -> Http1Response:
        try:
            response = await connection.send(request)
        except BaseException:
            # Failed or cancelled (the caller's timeout) mid-request: the stream's state is unknown.
            connection.close()
            raise
        if connection.reusable:
            self._idle.append(connection)
        else:
            connection.close()
        return response

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
