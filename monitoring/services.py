"""Prometheus and Alertmanager (Debian packages) as local processes, on loopback only."""

from __future__ import annotations

import shutil
from pathlib import Path

from flywheel.stack.process import ServiceSpec, http_probe


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise FileNotFoundError(f"{name} is not installed; run `make setup` (it installs the Debian package)")
    return found


def prometheus_service(
    name: str, config_file: Path, data_dir: Path, port: int = 9090, host: str = "127.0.0.1"
) -> ServiceSpec:
    """Prometheus with its TSDB under ``data_dir``; ``/-/reload`` enabled for rule changes."""
    return ServiceSpec(
        name=name,
        argv=[
            _binary("prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address={host}:{port}",
            "--web.enable-lifecycle",
        ],
        probe=http_probe(f"http://{host}:{port}/-/ready"),
        urls={"http": f"http://{host}:{port}"},
        prepare=lambda: data_dir.mkdir(parents=True, exist_ok=True),
    )


def alertmanager_service(
    name: str, config_file: Path, data_dir: Path, port: int = 9093, host: str = "127.0.0.1"
) -> ServiceSpec:
    """Alertmanager without clustering: an empty cluster address keeps it off 0.0.0.0:9094."""
    return ServiceSpec(
        name=name,
        argv=[
            _binary("prometheus-alertmanager"),
            f"--config.file={config_file}",
            f"--storage.path={data_dir}",
            f"--web.listen-address={host}:{port}",
            "--cluster.listen-address=",
        ],
        probe=http_probe(f"http://{host}:{port}/-/ready"),
        urls={"http": f"http://{host}:{port}"},
        prepare=lambda: data_dir.mkdir(parents=True, exist_ok=True),
    )
