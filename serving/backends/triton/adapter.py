"""Triton adapter: KServe v2 over HTTP (``tritonclient``) plus the repository API.

The server runs in explicit model-control mode. All versions of a model share one repository
folder and one ``config.pbtxt``; the adapter writes the version folders and a ``version_policy``
naming exactly the live versions, then asks Triton to (re)load the model. Triton reloads only
what changed, so adding v2 leaves v1 serving, and no server restart is ever needed. The config
file is always rewritten (new mtime) before a load, because a plain load of an unchanged config
is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException

from model_store import ModelStore
from serving.backends.base import (
    BackendUnavailableError,
    InvalidInputError,
    ModelNotLoadedError,
    Tensors,
    VersionNotLoadedError,
    stage_artifacts,
)
from serving.backends.http1 import Http1Pool
from serving.protocols.v2 import HEADER_LENGTH, decode_response, encode_request

_HEADER, _HEADER_LOWER = HEADER_LENGTH.encode(), HEADER_LENGTH.lower().encode()
_POLICY_RE = re.compile(r"version_policy\s*:?\s*\{[^}]*\{[^}]*\}\s*\}", re.DOTALL)


class TritonBackend:
    kind = "triton"

    def __init__(
        self,
        store: ModelStore,
        repository: Path,
        http_url: str,
        metrics_url: str,
        timeout_s: float = 10.0,
        device: str = "cpu",
        load_timeout_s: float = 120.0,
    ) -> None:
        self.store = store
        self.device = device
        self.repository = repository
        self.http_url = http_url.removeprefix("http://")
        self.metrics_url = metrics_url
        self.timeout_s = timeout_s
        self._client = triton_http.InferenceServerClient(self.http_url, conn_timeout=timeout_s)
        # Loads and unloads wait for the model's instances: each Python-backend instance starts a
        # stub process that imports torch, seconds on a busy node, so not the inference budget.
        self._control = triton_http.InferenceServerClient(self.http_url, conn_timeout=load_timeout_s)
        self._lock = asyncio.Lock()
        self._pool: Http1Pool | None = None

    # Control plane ---------------------------------------------------------------------------
    def _write_config(self, model: str, source_config: Path, versions: list[int]) -> None:
        text = _POLICY_RE.sub("", source_config.read_text()).rstrip()
        if self.device == "gpu":
            # The packaged entry is CPU by default; GPU nodes place its instances on the devices.
            text = text.replace("KIND_CPU", "KIND_GPU")
        listed = " ".join(f"versions: {v}" for v in sorted(versions))
        target = self.repository / model / "config.pbtxt"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(f"{text}\nversion_policy: {{ specific: {{ {listed} }} }}\n")
        os.replace(temporary, target)
        stamp = time.time_ns()
        os.utime(target, ns=(stamp, stamp))

    async def _apply(self, model: str, versions: list[int]) -> None:
        try:
            if versions:
                await self._control.load_model(model)
            else:
                await self._control.unload_model(model)
        except InferenceServerException as error:
            raise InvalidInputError(
                f"triton refused to load {model} versions {versions}: {error.message()}"
            ) from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise BackendUnavailableError(f"triton at {self.http_url} is unavailable: {error}") from None

    async def load(self, model: str, version: int) -> None:
        async with self._lock:
            model_dir = self.repository / model
            await asyncio.to_thread(
                stage_artifacts,
                self.store,
                model,
                version,
                f"triton/{model}/{version}/",
                model_dir / str(version),
            )
            config = await asyncio.to_thread(self._fetch_config, model, version)
            live = sorted(set(await self.loaded_versions(model)) | {version})
            self._write_config(model, config, live)
            await self._apply(model, live)

    def _fetch_config(self, model: str, version: int) -> Path:
        staging = self.repository / ".configs" / model / str(version)
        self.store.fetch(model, version, staging, prefix=f"triton/{model}/config.pbtxt")
        return staging / "triton" / model / "config.pbtxt"

    async def unload(self, model: str, version: int) -> None:
        async with self._lock:
            live = sorted(set(await self.loaded_versions(model)) - {version})
            if live:
                config = await asyncio.to_thread(self._fetch_config, model, live[-1])
                self._write_config(model, config, live)
            await self._apply(model, live)
            shutil.rmtree(self.repository / model / str(version), ignore_errors=True)

    async def loaded_versions(self, model: str) -> list[int]:
        try:
            index = await self._client.get_model_repository_index()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise BackendUnavailableError(f"triton at {self.http_url} is unavailable: {error}") from None
        return sorted(
            int(entry["version"])
            for entry in index
            if entry.get("name") == model and entry.get("state") == "READY" and entry.get("version")
        )

    async def ready(self, model: str, version: int) -> bool:
        try:
            return bool(await self._client.is_model_ready(model, str(version)))
        except (InferenceServerException, aiohttp.ClientError, TimeoutError):
            return False

    async def metadata(self, model: str, version: int) -> dict[str, Any]:
        try:
            return dict(await self._client.get_model_metadata(model, str(version)))
        except InferenceServerException as error:
            raise ModelNotLoadedError(error.message()) from None

    # Data plane ------------------------------------------------------------------------------
    async def infer(self, model: str, version: int, inputs: Tensors) -> Tensors:
        """One v2 request with binary tensors both ways, on a pooled keep-alive connection.

        The hot path skips ``tritonclient``'s request objects and aiohttp's client: a small JSON
        header plus the numpy bytes, sent by :class:`~serving.backends.http1.Http1Pool` (each cost
        a measurable share of the gateway's CPU per request; docs/benchmarks.md).
        """
        body, header_length = encode_request(inputs)
        path = f"/v2/models/{model}/versions/{version}/infer"
        # No Accept-Encoding: Triton then answers uncompressed (compressing costs both sides).
        headers = b"Content-Type: application/octet-stream\r\n%s: %d\r\n" % (_HEADER, header_length)
        try:
            response = await self._infer_pool().post(path, body, headers, self.timeout_s)
        except (ConnectionError, OSError) as error:  # Http1TimeoutError is one
            raise BackendUnavailableError(f"triton at {self.http_url} is unavailable: {error!r}") from None
        status, payload = response.status, response.body
        if status == 200:
            length = response.headers.get(_HEADER_LOWER)
            return decode_response(payload, int(length) if length is not None else None)
        try:
            message = str(orjson.loads(payload).get("error", payload[:500]))
        except orjson.JSONDecodeError:
            message = payload[:500].decode(errors="replace")
        if "unknown model" in message or "is not found" in message or "not ready" in message:
            raise VersionNotLoadedError(model, version, await self.loaded_versions(model), "triton")
        if status >= 500:
            raise BackendUnavailableError(f"triton failed ({status}): {message}")
        raise InvalidInputError(f"triton: {message}")

    def _infer_pool(self) -> Http1Pool:
        # Created lazily: its semaphore belongs to the event loop that uses it.
        if self._pool is None:
            host, _, port = self.http_url.rpartition(":")
            self._pool = Http1Pool(host, int(port), limit=64)
        return self._pool

    async def aclose(self) -> None:
        await self._client.close()
        await self._control.close()
        if self._pool is not None:
            self._pool.close()
