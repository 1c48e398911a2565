"""A Spark standalone cluster in ``flywheel up`` (``FLYWHEEL_SPARK_CLUSTER=1``): one master, one worker.

Both run from the pyspark wheel's ``bin/spark-class`` (the wheel has no ``sbin/`` scripts):
``org.apache.spark.deploy.master.Master`` and ``org.apache.spark.deploy.worker.Worker``. Every
address is the stack's host (``SPARK_LOCAL_IP`` and ``--host``), every port a setting, and the
master's REST submission server (6066, on by default) is turned off: jobs come in through the
master's own port, as ``spark-submit --master spark://...`` sends them.

The worker's executors run on this machine, so a folder the driver stages into is one they reach:
the preprocessing step works unchanged on the cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import HealthProbe, ServiceSpec


def spark_class() -> Path:
    """``bin/spark-class`` of the pyspark wheel in this interpreter's environment."""
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


def _cluster_environment(settings: FlywheelSettings, role: str) -> dict[str, str]:
    folder = settings.var_path / "spark"
    return {
        "SPARK_HOME": str(spark_class().parent.parent),
        "SPARK_LOCAL_IP": settings.host,
        "SPARK_LOG_DIR": str(settings.log_dir),
        "SPARK_WORKER_DIR": str(folder / "work"),
        # Executors start Python workers for a task's UDFs: this venv's interpreter has Flywheel.
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        # Finished applications' folders (executor logs, staged files) go after a day, not never.
        "SPARK_WORKER_OPTS": "-Dspark.worker.cleanup.enabled=true -Dspark.worker.cleanup.appDataTtl=86400",
        "SPARK_DAEMON_MEMORY": "512m" if role == "worker" else "1g",
    }


def master_state(settings: FlywheelSettings, timeout_s: float = 2.0) -> dict[str, Any]:
    """The master's own view (``/json/``): its URL, workers and applications."""
    url = f"http://{settings.host}:{settings.spark_master_ui_port}/json/"
    response = httpx.get(url, timeout=timeout_s)
    response.raise_for_status()
    state: dict[str, Any] = response.json()
    return state


def _master_probe(settings: FlywheelSettings) -> HealthProbe:
    def probe() -> str | None:
        try:
            state = master_state(settings)
        except (httpx.HTTPError, ValueError) as error:
            return f"spark master UI: {type(error).__name__}"
        return None if state.get("status") == "ALIVE" else f"spark master is {state.get('status')}"

    return probe


def _worker_probe(settings: FlywheelSettings) -> HealthProbe:
    """Healthy once the master lists this worker as ALIVE: registered, not just started."""

    def probe() -> str | None:
        try:
            workers = master_state(settings).get("workers", [])
        except (httpx.HTTPError, ValueError) as error:
            return f"spark master UI: {type(error).__name__}"
        alive = [
            w for w in workers if w.get("port") == settings.spark_worker_port and w.get("state") == "ALIVE"
        ]
        return None if alive else "the worker has not registered with the master yet"

    return probe


def spark_cluster_services(settings: FlywheelSettings) -> list[ServiceSpec]:
    """The master and its worker, in start order (none unless ``spark_cluster``)."""
    if not settings.spark_cluster:
        return []
    launcher = str(spark_class())
    master = ServiceSpec(
        name="spark-master",
        argv=[
            launcher,
            "org.apache.spark.deploy.master.Master",
            "--host",
            settings.host,
            "--port",
            str(settings.spark_master_port),
            "--webui-port",
            str(settings.spark_master_ui_port),
        ],
        probe=_master_probe(settings),
        urls={
            "master": settings.resolved_spark_master,
            "ui": f"http://{settings.host}:{settings.spark_master_ui_port}",
        },
        env=_cluster_environment(settings, "master"),
        cwd=settings.var_path,
    )
    work_dir = settings.var_path / "spark" / "work"
    worker = ServiceSpec(
        name="spark-worker",
        argv=[
            launcher,
            "org.apache.spark.deploy.worker.Worker",
            settings.resolved_spark_master,
            "--host",
            settings.host,
            "--port",
            str(settings.spark_worker_port),
            "--webui-port",
            str(settings.spark_worker_ui_port),
            "--cores",
            str(settings.spark_worker_cores),
            "--memory",
            settings.spark_worker_memory,
            "--work-dir",
            str(work_dir),
        ],
        probe=_worker_probe(settings),
        urls={"ui": f"http://{settings.host}:{settings.spark_worker_ui_port}"},
        env=_cluster_environment(settings, "worker"),
        cwd=settings.var_path,
        prepare=lambda: work_dir.mkdir(parents=True, exist_ok=True),
    )
    return [master, worker]
