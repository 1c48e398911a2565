"""The TF-Serving-protocol runtime as a local stack service."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from flywheel.stack.process import ServiceSpec, http_probe
from serving.backends.tfserving.runtime.monitoring import DEFAULT_PATH, MONITORING_CONFIG

EMPTY_CONFIG = "model_config_list {\n}\n"


@dataclass(frozen=True)
class TFServingPorts:
    grpc: int = 8500
    rest: int = 8501


def tfserving_service(
    name: str, base_dir: Path, config_file: Path, ports: TFServingPorts, host: str = "127.0.0.1"
) -> ServiceSpec:
    """The runtime, started from the model config file the adapter maintains (empty at first)."""

    monitoring_file = config_file.with_name("monitoring.config")

    def prepare() -> None:
        base_dir.mkdir(parents=True, exist_ok=True)
        monitoring_file.parent.mkdir(parents=True, exist_ok=True)
        monitoring_file.write_text(MONITORING_CONFIG)
        if not config_file.exists():
            config_file.parent.mkdir(parents=True, exist_ok=True)
            config_file.write_text(EMPTY_CONFIG)

    return ServiceSpec(
        name=name,
        argv=[
            sys.executable,
            "-m",
            "serving.backends.tfserving.runtime",
            "--host",
            host,
            f"--port={ports.grpc}",
            f"--rest_api_port={ports.rest}",
            f"--model_config_file={config_file}",
            "--file_system_poll_wait_seconds=1",
            f"--monitoring_config_file={monitoring_file}",  # Prometheus at /monitoring/prometheus/metrics
        ],
        # Any answer from the REST port means it is serving; an unknown model is a 404.
        probe=http_probe(f"http://{host}:{ports.rest}/v1/models/__health__", expect_status=404),
        urls={
            "rest": f"http://{host}:{ports.rest}",
            "grpc": f"{host}:{ports.grpc}",
            "metrics": f"http://{host}:{ports.rest}{DEFAULT_PATH}",
        },
        env={"TF_CPP_MIN_LOG_LEVEL": "2"},
        prepare=prepare,
    )
