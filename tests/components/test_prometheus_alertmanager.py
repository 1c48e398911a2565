"""Prometheus and Alertmanager from Debian start on loopback, and Prometheus scrapes a target."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil

from flywheel.stack.process import stop_process
from monitoring.services import alertmanager_service, prometheus_service
from tests.support import free_port, start_and_wait, wait_until


def listening_addresses(pid: int) -> set[str]:
    process = psutil.Process(pid)
    return {
        f"{c.laddr.ip}:{c.laddr.port}" for c in process.net_connections(kind="tcp") if c.status == "LISTEN"
    }


def test_prometheus_scrapes_and_alertmanager_stays_on_loopback(tmp_path: Path) -> None:
    alertmanager_port, prometheus_port = free_port(), free_port()
    (tmp_path / "alertmanager.yml").write_text(
        "route:\n  receiver: devnull\n  group_wait: 1s\nreceivers:\n  - name: devnull\n"
    )
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "alerting:\n  alertmanagers:\n    - static_configs:\n"
        f"        - targets: ['127.0.0.1:{alertmanager_port}']\n"
        "scrape_configs:\n  - job_name: self\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{prometheus_port}']\n"
    )
    alertmanager = start_and_wait(
        alertmanager_service("am", tmp_path / "alertmanager.yml", tmp_path / "am-data", alertmanager_port),
        tmp_path,
        f"http://127.0.0.1:{alertmanager_port}/-/ready",
        timeout_s=60,
    )
    prometheus = start_and_wait(
        prometheus_service("prom", tmp_path / "prometheus.yml", tmp_path / "prom-data", prometheus_port),
        tmp_path,
        f"http://127.0.0.1:{prometheus_port}/-/ready",
        timeout_s=60,
    )
    try:
        assert listening_addresses(alertmanager.pid) == {f"127.0.0.1:{alertmanager_port}"}
        assert listening_addresses(prometheus.pid) == {f"127.0.0.1:{prometheus_port}"}

        def scraped() -> bool:
            query = httpx.get(
                f"http://127.0.0.1:{prometheus_port}/api/v1/query", params={"query": "up{job='self'}"}
            )
            result = query.json()["data"]["result"]
            return bool(result) and result[0]["value"][1] == "1"

        wait_until(scraped, 30, "Prometheus to scrape itself")
        status = httpx.get(f"http://127.0.0.1:{alertmanager_port}/api/v2/status").json()
        assert status["cluster"]["status"] == "disabled"
    finally:
        stop_process(prometheus, 20)
        stop_process(alertmanager, 20)
