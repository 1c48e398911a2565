"""The one small interface every model-server adapter implements, and the errors it raises.

An adapter speaks its server's native protocol and hides it: the gateway asks to ``load`` and
``unload`` store versions, checks ``ready``, and calls ``infer`` with named numpy arrays. Errors
are normalised so the gateway maps them to HTTP/gRPC status codes the same way for every server.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from model_store import ModelStore

Tensors = dict[str, np.ndarray]


class BackendError(Exception):
    """Base class; ``status`` is the HTTP status the gateway should answer with."""

    status = 500
    #: Seconds a client should wait before trying again (HTTP ``Retry-After``); None: do not retry.
    retry_after_s: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(BackendError):
    """The server refused the request's tensors (name, shape, dtype); carries the server's message."""

    status = 400


class ModelNotLoadedError(BackendError):
    status = 404


class VersionNotLoadedError(ModelNotLoadedError):
    """A pinned version that is not live on this server; lists the versions that are."""

    def __init__(self, model: str, version: int, loaded: list[int], server: str) -> None:
        self.model, self.version, self.loaded = model, version, loaded
        listed = ", ".join(str(v) for v in loaded) or "none"
        super().__init__(
            f"version {version} of {model!r} is not loaded on {server}; loaded versions: {listed}"
        )


class BackendUnavailableError(BackendError):
    """The server did not answer (refused, reset or timed out)."""

    status = 503
    retry_after_s = 1


class VersionReloadingError(BackendUnavailableError):
    """The routing spec deploys this version, but its server has not (re)loaded it yet.

    Typically the server restarted and comes back empty; the gateway reloads it at once. Treated
    like an unavailable server: routed requests fail over, pinned ones get 503 with Retry-After.
    """


class OutputFaultError(BackendError):
    """The model answered, but with values the protocol cannot carry (NaN or infinity), or in a
    shape its server's adapter cannot read (a handler speaking another format)."""

    status = 500


@runtime_checkable
class ModelBackend(Protocol):
    """An adapter for one model server."""

    kind: str
    metrics_url: str

    async def load(self, model: str, version: int) -> None:
        """Fetch the version's artifacts from the store (sha256-verified) and load it live."""
        ...

    async def unload(self, model: str, version: int) -> None:
        """Unload one version; the others stay live."""
        ...

    async def ready(self, model: str, version: int) -> bool: ...

    async def loaded_versions(self, model: str) -> list[int]: ...

    async def infer(self, model: str, version: int, inputs: Tensors) -> Tensors: ...

    async def metadata(self, model: str, version: int) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


def json_ready(array: np.ndarray) -> np.ndarray | list[Any]:
    """What to hand orjson: numeric arrays as they are (its fast path), anything else as lists.

    Text or object arrays are still sent, so the server answers with its own error message
    instead of the adapter failing to serialise them.
    """
    return np.ascontiguousarray(array) if array.dtype.kind in "biuf" else array.tolist()


def stage_artifacts(store: ModelStore, model: str, version: int, prefix: str, destination: Path) -> Path:
    """Fetch (and verify) ``prefix`` of a version, then move it to ``destination`` in one rename.

    The server never sees a half-copied version folder.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".stage-", dir=destination.parent) as scratch:
        store.fetch(model, version, Path(scratch), prefix=prefix)
        source = Path(scratch) / prefix.rstrip("/")
        if destination.exists():
            shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
        source.rename(destination)
    return destination
