"""Server replicas as the local stack lays them out, and adapters for them, from settings.

Replica 0 of a kind keeps the historic folder (``var/serving/<kind>``) and the ports its settings
name; replica ``i`` lives in ``var/serving/<kind>-<i>`` on those ports plus ``i`` times
``replica_port_stride``. Each replica has its own repository folder: only its model agent writes
there.
"""

from __future__ import annotations

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from serving.backends.base import ModelBackend
from serving.backends.registry import ReplicaLayout, backend_kinds, get_plugin


class PortCollisionError(ValueError):
    """Two replicas (or services) would listen on one port: the settings need another stride."""


def replica_layouts(settings: FlywheelSettings, kind: str) -> list[ReplicaLayout]:
    plugin = get_plugin(kind)
    layouts = []
    for index in range(settings.replicas_of(kind)):
        suffix = "" if index == 0 else f"-{index}"
        ports = {
            port.name: int(getattr(settings, port.setting, port.default))
            + index * settings.replica_port_stride
            for port in plugin.ports
        }
        layouts.append(
            ReplicaLayout(kind, index, settings.serving_dir / f"{kind}{suffix}", ports, settings.host)
        )
    return layouts


def all_replica_layouts(settings: FlywheelSettings) -> list[ReplicaLayout]:
    """Every server replica of every registered kind, checked for port collisions."""
    layouts = [layout for kind in backend_kinds() for layout in replica_layouts(settings, kind)]
    owners: dict[int, str] = {}
    for layout in layouts:
        for name, port in layout.ports.items():
            if port in owners:
                raise PortCollisionError(
                    f"{layout.name} {name} port {port} is also {owners[port]}'s; change "
                    "FLYWHEEL_REPLICA_PORT_STRIDE or the servers' ports"
                )
            owners[port] = f"{layout.name} {name}"
    return layouts


def build_backend(
    kind: str, settings: FlywheelSettings, store: ModelStore, replica: int = 0, control: bool = True
) -> ModelBackend:
    """The adapter of one replica; ``control=False`` gives an inference-only one (the gateway's)."""
    plugin = get_plugin(kind)
    layout = replica_layouts(settings, kind)[replica]
    return plugin.build_adapter(
        store,
        plugin.endpoints(layout),
        plugin.repository(layout) if control else None,
        settings.backend_timeout_s,
        settings.serving_device,
    )
