"""Real TorchServe (the Java frontend plus Python workers) as a local process.

Facts that make it work here (shared/DESIGN.md):
- it needs ``pyyaml``; token authorisation is disabled and the model API enabled in the config
  (the admin surface is Flywheel's own, behind its bearer token, on loopback);
- ``TMPDIR`` stays inside the run folder: TorchServe keeps its pid file there, so two servers
  (tests, a stack) never see each other's;
- log4j2 at INFO, because TorchServe's default is DEBUG.
It runs with ``--foreground`` so the supervisor's PID is the server's, and SIGTERM to its process
group stops the frontend and its workers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from flywheel.stack.process import ServiceSpec, http_probe

_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %t %c - %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="warn"/>
    <Logger name="MODEL_LOG" level="info"/>
    <Logger name="TS_METRICS" level="warn"/>
    <Logger name="MODEL_METRICS" level="warn"/>
    <Root level="info"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""


@dataclass(frozen=True)
class TorchServePorts:
    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071


def write_config(
    work_dir: Path,
    model_store: Path,
    ports: TorchServePorts,
    host: str = "127.0.0.1",
    gpus_per_worker: int = 0,
) -> Path:
    """Write ``config.properties`` and the log4j2 file; return the config path."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "tmp").mkdir(exist_ok=True)
    log_config = work_dir / "log4j2.xml"
    log_config.write_text(_LOG4J2)
    config = work_dir / "config.properties"
    config.write_text(
        "\n".join(
            [
                f"inference_address=http://{host}:{ports.inference}",
                f"management_address=http://{host}:{ports.management}",
                f"metrics_address=http://{host}:{ports.metrics}",
                f"grpc_inference_address={host}",
                f"grpc_inference_port={ports.grpc_inference}",
                f"grpc_management_address={host}",
                f"grpc_management_port={ports.grpc_management}",
                f"model_store={model_store}",
                "disable_token_authorization=true",
                "enable_model_api=true",
                "install_py_dep_per_model=false",
                "default_workers_per_model=1",
                # 0 keeps workers on the CPU; on GPU nodes each worker takes this many devices.
                f"number_of_gpu={gpus_per_worker}",
                "metrics_mode=prometheus",
                f"vmargs=-Xmx1g -XX:+UseContainerSupport -Dlog4j.configurationFile=file://{log_config}",
                "",
            ]
        )
    )
    return config


def torchserve_service(
    name: str,
    model_store: Path,
    work_dir: Path,
    ports: TorchServePorts,
    host: str = "127.0.0.1",
    gpus_per_worker: int = 0,
) -> ServiceSpec:
    """A ServiceSpec for TorchServe in the foreground with its config, logs and TMPDIR in ``work_dir``."""

    def prepare() -> None:
        model_store.mkdir(parents=True, exist_ok=True)
        write_config(work_dir, model_store, ports, host, gpus_per_worker)

    torchserve = Path(sys.executable).parent / "torchserve"
    return ServiceSpec(
        name=name,
        argv=[
            str(torchserve),
            "--start",
            "--foreground",
            "--ncs",
            "--ts-config",
            str(work_dir / "config.properties"),
            "--model-store",
            str(model_store),
            "--log-config",
            str(work_dir / "log4j2.xml"),
        ],
        probe=http_probe(f"http://{host}:{ports.inference}/ping"),
        urls={
            "inference": f"http://{host}:{ports.inference}",
            "management": f"http://{host}:{ports.management}",
            "metrics": f"http://{host}:{ports.metrics}/metrics",
            "grpc": f"{host}:{ports.grpc_inference}",
        },
        env={
            "TMPDIR": str(work_dir / "tmp"),
            "LOG_LOCATION": str(work_dir / "logs"),
            "METRICS_LOCATION": str(work_dir / "logs"),
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        },
        cwd=work_dir,
        prepare=prepare,
    )
