"""TorchServe adapter: the management API to register versions, per-version prediction URLs.

TorchServe takes a model's version from its archive's manifest, and the store's integer is the
authority, so ``load`` stamps the store version into a copy of the ``.mar`` before registering
it. Predictions always use ``/predictions/{model}/{version}``: the server's "default version"
never decides what a pinned request gets.
"""

from __future__ import annotations

import asyncio
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from model_store import ModelStore
from serving.backends.base import (
    BackendUnavailableError,
    InvalidInputError,
    ModelNotLoadedError,
    OutputFaultError,
    Tensors,
    VersionNotLoadedError,
    json_ready,
)


def stamp_mar_version(source: Path, destination: Path, version: int) -> Path:
    """Copy a .mar with ``MAR-INF/MANIFEST.json``'s modelVersion set to ``version``."""
    temporary = destination.with_name(f".{destination.name}.tmp")
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as copy:
        for item in original.infolist():
            data = original.read(item.filename)
            if item.filename == "MAR-INF/MANIFEST.json":
                manifest = json.loads(data)
                manifest["model"]["modelVersion"] = str(version)
                data = json.dumps(manifest, indent=2).encode()
            copy.writestr(item, data)
    temporary.replace(destination)
    return destination


class TorchServeBackend:
    kind = "torchserve"

    def __init__(
        self,
        store: ModelStore,
        model_store_dir: Path,
        inference_url: str,
        management_url: str,
        metrics_url: str,
        timeout_s: float = 10.0,
        load_timeout_s: float = 180.0,
    ) -> None:
        self.store = store
        self.model_store_dir = model_store_dir
        self.inference_url = inference_url.rstrip("/")
        self.management_url = management_url.rstrip("/")
        self.metrics_url = metrics_url
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        limits = httpx.Limits(max_keepalive_connections=32, max_connections=64)
        self._client = httpx.AsyncClient(timeout=timeout_s, limits=limits)
        self._lock = asyncio.Lock()
        self._output_names: dict[tuple[str, int], str] = {}

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise BackendUnavailableError(f"torchserve at {url} is unavailable: {error!r}") from None

    @staticmethod
    def _message(response: httpx.Response) -> str:
        try:
            return str(response.json().get("message") or response.json().get("error") or response.text)
        except (ValueError, AttributeError):
            return response.text

    # Control plane ---------------------------------------------------------------------------
    def _stage_mar(self, model: str, version: int) -> str:
        staging = self.model_store_dir / ".staging" / f"{model}-{version}"
        self.store.fetch(model, version, staging, prefix=f"torchserve/{model}.mar")
        archive = f"{model}-v{version}.mar"
        self.model_store_dir.mkdir(parents=True, exist_ok=True)
        stamp_mar_version(staging / "torchserve" / f"{model}.mar", self.model_store_dir / archive, version)
        return archive

    async def load(self, model: str, version: int) -> None:
        async with self._lock:
            if version in await self.loaded_versions(model):
                return
            archive = await asyncio.to_thread(self._stage_mar, model, version)
            response = await self._request(
                "POST",
                f"{self.management_url}/models",
                params={"url": archive, "model_name": model, "initial_workers": 1, "synchronous": "true"},
                timeout=self.load_timeout_s,
            )
            if response.status_code not in (200, 201):
                raise InvalidInputError(f"torchserve refused {archive}: {self._message(response)}")

    async def unload(self, model: str, version: int) -> None:
        async with self._lock:
            loaded = await self.loaded_versions(model)
            if version not in loaded:
                return
            others = [v for v in loaded if v != version]
            if others:
                # TorchServe will not delete the default version while others exist: move the default first.
                await self._request("PUT", f"{self.management_url}/models/{model}/{others[-1]}/set-default")
            response = await self._request("DELETE", f"{self.management_url}/models/{model}/{version}")
            if response.status_code != 200:
                raise InvalidInputError(
                    f"torchserve refused to unload {model}:{version}: {self._message(response)}"
                )
            (self.model_store_dir / f"{model}-v{version}.mar").unlink(missing_ok=True)

    async def loaded_versions(self, model: str) -> list[int]:
        response = await self._request("GET", f"{self.management_url}/models/{model}/all")
        if response.status_code == 404:
            return []
        return sorted(
            int(entry["modelVersion"]) for entry in response.json() if entry["modelVersion"].isdigit()
        )

    async def ready(self, model: str, version: int) -> bool:
        try:
            response = await self._request("GET", f"{self.management_url}/models/{model}/{version}")
        except BackendUnavailableError:
            return False
        if response.status_code != 200:
            return False
        workers = response.json()[0].get("workers", [])
        return any(worker.get("status") == "READY" for worker in workers)

    async def metadata(self, model: str, version: int) -> dict[str, Any]:
        response = await self._request("GET", f"{self.management_url}/models/{model}/{version}")
        if response.status_code != 200:
            raise ModelNotLoadedError(self._message(response))
        manifest = await asyncio.to_thread(self.store.get_manifest, model, version)
        return {
            "name": model,
            "versions": [str(version)],
            "platform": "torchserve",
            "inputs": [spec.model_dump() for spec in manifest.signature.inputs],
            "outputs": [spec.model_dump() for spec in manifest.signature.outputs],
        }

    # Data plane ------------------------------------------------------------------------------
    async def infer(self, model: str, version: int, inputs: Tensors) -> Tensors:
        if len(inputs) != 1:
            raise InvalidInputError(f"the torchserve handler takes one input tensor, got {sorted(inputs)}")
        array = next(iter(inputs.values()))
        response = await self._request(
            "POST",
            f"{self.inference_url}/predictions/{model}/{version}",
            content=orjson.dumps({"instances": json_ready(array)}, option=orjson.OPT_SERIALIZE_NUMPY),
            headers={"content-type": "application/json"},
        )
        if response.status_code == 404:
            raise VersionNotLoadedError(model, version, await self.loaded_versions(model), "torchserve")
        if response.status_code in (400, 413, 422):
            raise InvalidInputError(f"torchserve: {self._message(response)}")
        if response.status_code != 200:
            raise BackendUnavailableError(
                f"torchserve answered {response.status_code}: {self._message(response)}"
            )
        try:
            answer = orjson.loads(response.content)
            predictions = np.asarray(answer["predictions"], dtype=np.float32)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise OutputFaultError(
                f"torchserve's handler for {model} v{version} answered {response.content[:200]!r}, "
                'not {"predictions": [...]} of numbers'
            ) from None
        return {await self._output_name(model, version): predictions.reshape(len(array), -1)}

    async def _output_name(self, model: str, version: int) -> str:
        """The signature's output name (the handler answers a bare list), cached per version."""
        key = (model, version)
        if key not in self._output_names:
            manifest = await asyncio.to_thread(self.store.get_manifest, model, version)
            self._output_names[key] = manifest.signature.outputs[0].name
        return self._output_names[key]

    async def aclose(self) -> None:
        await self._client.aclose()
