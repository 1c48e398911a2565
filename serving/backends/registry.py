"""The one list of model-server kinds, and what each kind must say about itself.

A kind is a folder under ``serving/backends/<kind>/`` whose ``__init__`` exposes ``PLUGIN``, a
:class:`BackendPlugin`: the adapter the gateway and the model agent talk through, the local
runtime ``flywheel up`` starts, how a trained model is packaged for it, and where it answers
health checks and Prometheus scrapes. Everything that used to repeat the list of servers (the
stack, the routing spec, the manifest, Prometheus targets, the ``BackendDown`` rule, Grafana
panels, packaging) reads it from here, so adding a server is one folder plus one line in
``BUILTIN``, or one :func:`register` call for a kind that lives outside this repository.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flywheel.stack.process import ServiceSpec
    from model_store import ModelStore
    from serving.backends.base import ModelBackend

#: Built-in kinds, in the order the stack starts them: kind -> module exposing ``PLUGIN``.
BUILTIN: dict[str, str] = {
    "triton": "serving.backends.triton",
    "torchserve": "serving.backends.torchserve",
    "tfserving": "serving.backends.tfserving",
}


@dataclass(frozen=True)
class ServerPort:
    """One port of a server replica; ``setting`` is the FlywheelSettings field of replica 0's."""

    name: str
    setting: str
    default: int
    scheme: str = "http"  # "http" ports become URLs, "tcp" ports host:port targets (gRPC)


@dataclass(frozen=True)
class ReplicaLayout:
    """Where one replica of a server lives: its name, own folder, own repository and ports."""

    kind: str
    index: int
    folder: Path
    ports: dict[str, int]
    host: str = "127.0.0.1"

    @property
    def name(self) -> str:
        """``triton`` for the first replica (the stack's historic name), ``triton-1`` after it."""
        return self.kind if self.index == 0 else f"{self.kind}-{self.index}"


@dataclass(frozen=True)
class PackageInputs:
    """What a trained or imported model offers to the packaging step of every kind."""

    name: str
    signature_file: Path
    torchscript: Path | None = None
    savedmodel: Path | None = None
    extra: dict[str, Path] = field(default_factory=dict)


class BackendPlugin(ABC):
    """Everything Flywheel needs to know about one kind of model server."""

    kind: str
    title: str
    #: Exported formats it serves, in the order it prefers them ("torchscript", "savedmodel").
    formats: tuple[str, ...]
    ports: tuple[ServerPort, ...]
    #: (port name, path, status that means healthy) of the readiness check.
    health: tuple[str, str, int]
    #: (port name, path) Prometheus scrapes.
    metrics: tuple[str, str]

    def endpoints(self, layout: ReplicaLayout) -> dict[str, str]:
        """The replica's addresses by port name: URLs for HTTP ports, ``host:port`` for the rest."""
        urls = {}
        for port in self.ports:
            address = f"{layout.host}:{layout.ports[port.name]}"
            urls[port.name] = f"http://{address}" if port.scheme == "http" else address
        return urls

    def health_url(self, endpoints: dict[str, str]) -> str:
        port, path, _ = self.health
        return f"{endpoints[port]}{path}"

    def metrics_url(self, endpoints: dict[str, str]) -> str:
        port, path = self.metrics
        return f"{endpoints[port]}{path}"

    @abstractmethod
    def repository(self, layout: ReplicaLayout) -> Path:
        """The folder this replica loads models from; only its model agent writes into it."""

    @abstractmethod
    def build_adapter(
        self,
        store: ModelStore,
        endpoints: dict[str, str],
        repository: Path | None,
        timeout_s: float,
        device: str = "cpu",
    ) -> ModelBackend:
        """An adapter; with ``repository=None`` it serves inference only and refuses to load."""

    @abstractmethod
    def runtime(self, layout: ReplicaLayout, device: str = "cpu") -> ServiceSpec:
        """The local process for one replica, as ``flywheel up`` starts it."""

    @abstractmethod
    def package(self, inputs: PackageInputs, output: Path) -> list[str]:
        """Write this kind's artifacts under ``output`` (a version folder; ``{version}`` is filled
        in at publish); return the paths written, relative to ``output``. Empty: nothing to serve."""


class UnknownBackendError(ValueError):
    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown backend {kind!r}; choose from {', '.join(backend_kinds())}")


_registered: dict[str, BackendPlugin] = {}


def register(plugin: BackendPlugin) -> None:
    """Add a kind that lives outside ``BUILTIN`` (or replace one); renders pick it up at once."""
    _registered[plugin.kind] = plugin


def unregister(kind: str) -> None:
    _registered.pop(kind, None)


def backend_kinds() -> list[str]:
    return [*BUILTIN, *(kind for kind in _registered if kind not in BUILTIN)]


def get_plugin(kind: str) -> BackendPlugin:
    if kind in _registered:
        return _registered[kind]
    if kind not in BUILTIN:
        raise UnknownBackendError(kind)
    plugin = importlib.import_module(BUILTIN[kind]).PLUGIN
    if not isinstance(plugin, BackendPlugin) or plugin.kind != kind:
        raise TypeError(f"{BUILTIN[kind]}.PLUGIN is not the BackendPlugin of {kind!r}")
    return plugin


def plugins() -> list[BackendPlugin]:
    return [get_plugin(kind) for kind in backend_kinds()]


#: The repository of an adapter built for inference only (the gateway's): any write fails.
DATA_PLANE_ONLY = Path("/dev/null/data-plane-only")
