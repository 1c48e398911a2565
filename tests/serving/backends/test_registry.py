"""Adding a model-server kind is one plug-in: every config that lists servers picks it up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ServiceSpec, http_probe
from model_store import ModelStore
from serving.backends.base import ModelBackend
from serving.backends.registry import (
    BUILTIN,
    BackendPlugin,
    PackageInputs,
    ReplicaLayout,
    ServerPort,
    UnknownBackendError,
    backend_kinds,
    get_plugin,
    register,
    unregister,
)
from serving.routing.spec import RoutingSpec


class EchoPlugin(BackendPlugin):
    """A tiny made-up server kind: one HTTP port, packaged as a copy of the TorchScript file."""

    kind = "echo"
    title = "Echo"
    formats = ("torchscript",)
    ports = (ServerPort("http", "echo_http_port", 8700),)
    health = ("http", "/ready", 200)
    metrics = ("http", "/stats")

    def repository(self, layout: ReplicaLayout) -> Path:
        return layout.folder / "models"

    def build_adapter(
        self,
        store: ModelStore,
        endpoints: dict[str, str],
        repository: Path | None,
        timeout_s: float,
        device: str = "cpu",
    ) -> ModelBackend:
        raise NotImplementedError("not needed to render configs")

    def runtime(self, layout: ReplicaLayout, device: str = "cpu") -> ServiceSpec:
        url = self.endpoints(layout)["http"]
        return ServiceSpec(
            name=layout.name,
            argv=["python3", "-m", "http.server", str(layout.ports["http"])],
            probe=http_probe(f"{url}/ready"),
            urls={"http": url},
        )

    def package(self, inputs: PackageInputs, output: Path) -> list[str]:
        assert inputs.torchscript is not None
        target = output / "echo" / "model.pt"
        target.parent.mkdir(parents=True)
        target.write_bytes(inputs.torchscript.read_bytes())
        return ["echo/model.pt"]


@pytest.fixture
def echo() -> Iterator[EchoPlugin]:
    plugin = EchoPlugin()
    register(plugin)
    yield plugin
    unregister(plugin.kind)


def settings(tmp_path: Path, **extra: Any) -> FlywheelSettings:
    return FlywheelSettings(home=tmp_path, var_dir=tmp_path / "var", **extra)


def test_the_builtin_kinds_each_come_from_their_own_folder() -> None:
    assert backend_kinds()[:3] == ["triton", "torchserve", "tfserving"]
    for kind, module in BUILTIN.items():
        plugin = get_plugin(kind)
        assert plugin.kind == kind and module == f"serving.backends.{kind}"
    with pytest.raises(UnknownBackendError, match="unknown backend 'onnx'; choose from triton"):
        get_plugin("onnx")


def test_a_registered_kind_is_in_every_rendered_config(echo: EchoPlugin, tmp_path: Path) -> None:
    from flywheel.stack.services import build_services
    from monitoring.grafana.panels import build_dashboard
    from monitoring.prometheus.config import render_config, render_rules

    config = settings(tmp_path, backend_replicas={"echo": 2})
    assert "echo" in backend_kinds()

    # Prometheus scrapes both replicas at the plug-in's path.
    scrape = {job["job_name"]: job for job in yaml.safe_load(render_config(config))["scrape_configs"]}
    assert scrape["echo"]["metrics_path"] == "/stats"
    assert scrape["echo"]["static_configs"][0]["targets"] == ["127.0.0.1:8700", "127.0.0.1:8800"]

    # BackendDown watches it, and the dashboard's health panel shows it.
    rules = yaml.safe_load(render_rules("2m"))
    backend_down = next(
        rule for group in rules["groups"] for rule in group["rules"] if rule.get("alert") == "BackendDown"
    )
    assert "|echo" in backend_down["expr"]
    health = next(panel for panel in build_dashboard().panels if panel.title == "Server health")
    assert "|echo" in health.queries[0].expr

    # The stack runs both replicas, each with its own folder, and an agent beside each.
    names = [service.name for service in build_services(config)]
    assert {"echo", "echo-1", "agent-echo", "agent-echo-1"} <= set(names)
    assert names.index("echo-1") < names.index("agent-echo") < names.index("gateway")

    # A routing spec may name it; an unregistered kind is refused with the list.
    variant = {"name": "echo-v1", "version": 1, "backend": "echo", "weight": 100}
    assert RoutingSpec.model_validate({"model": "m", "variants": [variant]}).variants[0].backend == "echo"
    unregister("echo")
    with pytest.raises(ValueError, match="unknown backend 'echo'"):
        RoutingSpec.model_validate({"model": "m", "variants": [variant]})
    register(echo)

    # Packaging asks it for its artifacts, and the manifest lists it.
    from training.package import packaged_backends

    assert "echo" in packaged_backends()


def test_replica_ports_never_collide(tmp_path: Path) -> None:
    from serving.backends.factory import PortCollisionError, all_replica_layouts

    layouts = all_replica_layouts(settings(tmp_path, triton_replicas=2, tfserving_replicas=2))
    assert [(layout.name, layout.ports.get("http")) for layout in layouts if layout.kind == "triton"] == [
        ("triton", 8000),
        ("triton-1", 8100),
    ]
    assert layouts[1].folder == tmp_path / "var" / "serving" / "triton-1"
    with pytest.raises(PortCollisionError, match="port 8501 is also triton-5 grpc"):
        all_replica_layouts(settings(tmp_path, triton_replicas=6))
