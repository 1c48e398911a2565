"""Prometheus and Alertmanager (Debian packages) as local processes, on loopback only."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from flywheel.settings import FlywheelSettings
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


def drift_exporter_service(settings: FlywheelSettings, name: str = "drift-exporter") -> ServiceSpec:
    url = f"http://{settings.host}:{settings.drift_exporter_port}"
    return ServiceSpec(
        name=name,
        argv=[sys.executable, "-m", "monitoring.exporter"],
        probe=http_probe(f"{url}/metrics"),
        urls={"metrics": f"{url}/metrics"},
        env=settings.as_env(),
        cwd=settings.home,
    )


def monitoring_services(settings: FlywheelSettings) -> list[ServiceSpec]:
    """The drift exporter, Prometheus and Alertmanager; configuration rendered into ``var/monitoring``."""
    from flywheel.stack.credentials import admin_token_file
    from monitoring.prometheus.config import render_alertmanager_config, render_config, render_rules

    folder = settings.var_path / "monitoring"
    prometheus_config, rules = folder / "prometheus.yml", folder / "rules.yml"
    alertmanager_config = folder / "alertmanager.yml"
    alertmanager_address = f"{settings.host}:{settings.alertmanager_port}"

    def write_prometheus() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        rules.write_text(render_rules(settings.drift_alert_for))
        prometheus_config.write_text(
            render_config(settings, settings.scrape_interval_s, alertmanager_address, [rules])
        )

    def write_alertmanager() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        alertmanager_config.write_text(render_alertmanager_config(settings, admin_token_file(settings)))

    prometheus = prometheus_service(
        "prometheus", prometheus_config, folder / "prometheus-data", settings.prometheus_port, settings.host
    )
    alertmanager = alertmanager_service(
        "alertmanager",
        alertmanager_config,
        folder / "alertmanager-data",
        settings.alertmanager_port,
        settings.host,
    )
    prometheus.prepare = _then(prometheus.prepare, write_prometheus)
    alertmanager.prepare = _then(alertmanager.prepare, write_alertmanager)
    return [drift_exporter_service(settings), alertmanager, prometheus]


def _then(first: Callable[[], None] | None, second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        if first is not None:
            first()
        second()

    return both
