"""Airflow 3 in ``flywheel up``: api-server, scheduler and dag-processor from ``.venv-airflow``.

- Everything binds ``settings.host``; the scheduler runs with ``--skip-serve-logs`` (no log server
  on 0.0.0.0) and task logs are read from files.
- The simple auth manager knows one admin user, ``airflow_username``, whose password is generated
  into ``var/credentials`` and handed to Airflow as a passwords file: Airflow never generates or
  prints one. The JWT and API secrets are generated the same way and shared by the three
  components (tasks authenticate to the execution API with them).
- DAG tasks inherit the ``FLYWHEEL_*`` settings, so each ``flywheel pipeline ...`` step they run
  sees the same store, S3 endpoint and gateway as the stack.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from flywheel.settings import FlywheelSettings
from flywheel.stack.airflow_env import airflow_environment
from flywheel.stack.credentials import admin_token, airflow_password, generated_secret
from flywheel.stack.process import HealthProbe, ServiceSpec

#: The checkout holding ``.venv-airflow`` and ``dags/`` (settings.home may be elsewhere, e.g. in tests).
REPO_ROOT = Path(__file__).resolve().parents[2]


def airflow_bin() -> Path:
    return REPO_ROOT / ".venv-airflow" / "bin" / "airflow"


def dags_folder() -> Path:
    return REPO_ROOT / "dags"


def airflow_stack_environment(settings: FlywheelSettings) -> dict[str, str]:
    """Airflow's variables for the local stack, plus the settings its tasks pass on to ``flywheel``."""
    home = settings.var_path / "airflow"
    base_url = settings.resolved_airflow_url
    passwords = settings.var_path / "credentials" / "airflow-passwords.json"
    environment = {
        **settings.as_env(),
        "FLYWHEEL_ADMIN_TOKEN": admin_token(settings),
        **airflow_environment(home, dags_folder()),
        "AIRFLOW__API__HOST": settings.host,
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__API__SECRET_KEY": generated_secret(settings, "airflow-api-secret"),
        "AIRFLOW__API_AUTH__JWT_SECRET": generated_secret(settings, "airflow-jwt-secret"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        # Two cores: parse with one process, notice new DAG files within seconds.
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
        "PYTHONPATH": "",  # .venv-airflow stands on its own
    }
    if settings.dag_runner == "spark-submit":
        environment[f"AIRFLOW_CONN_{settings.spark_submit_conn_id.upper()}"] = spark_connection(settings)
    if settings.airflow_executor == "celery":
        del environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]  # a set variable would beat the _CMD form
        environment.update(celery_environment(settings))
    return environment


def spark_connection(settings: FlywheelSettings) -> str:
    """The spark-submit runner's connection (Airflow's JSON form): the master preprocessing uses."""
    master = settings.resolved_spark_master
    if master.startswith("spark://"):
        address = urlsplit(master)
        connection = {"conn_type": "spark", "host": f"spark://{address.hostname}", "port": address.port}
    else:  # yarn, k8s://..., local[*]: the hook passes the host on as --master
        connection = {"conn_type": "spark", "host": master}
    return json.dumps(connection)


def celery_environment(settings: FlywheelSettings) -> dict[str, str]:
    """CeleryExecutor on the stack's Redis, metadata and results in its PostgreSQL.

    The three URLs hold passwords, so Airflow reads each from a 0600 file through its ``_CMD``
    form: no secret is in any process's environment or command line.
    """
    from flywheel.stack.credentials import write_private_file
    from flywheel.stack.databases import airflow_database_url, redis_url

    folder = settings.var_path / "credentials"
    database = write_private_file(folder / "airflow-database-url", airflow_database_url(settings))
    broker = write_private_file(folder / "airflow-broker-url", redis_url(settings))
    results = write_private_file(
        folder / "airflow-result-backend", "db+" + airflow_database_url(settings, "postgresql")
    )
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": f"cat {database}",
        "AIRFLOW__CELERY__BROKER_URL_CMD": f"cat {broker}",
        "AIRFLOW__CELERY__RESULT_BACKEND_CMD": f"cat {results}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(settings.airflow_celery_concurrency),
        # INFO for Celery alone: its "ready." line is the workers' health signal, and each task's
        # "received"/"succeeded" lines show which worker ran it.
        "AIRFLOW__LOGGING__CELERY_LOGGING_LEVEL": "INFO",
        "AIRFLOW__CORE__PARALLELISM": str(4 * settings.airflow_celery_workers),
    }


def write_passwords_file(settings: FlywheelSettings) -> Path:
    """Airflow's simple-auth passwords file, mode 0600, rewritten to match the configured password."""
    from flywheel.stack.credentials import write_private_file

    return write_private_file(
        settings.var_path / "credentials" / "airflow-passwords.json",
        json.dumps({settings.airflow_username: airflow_password(settings)}),
    )


def migrate_database(settings: FlywheelSettings, timeout_s: float = 600) -> None:
    """``airflow db migrate``: creates the SQLite DB on first run, a quick check afterwards."""
    environment = {**os.environ, **airflow_stack_environment(settings)}
    (settings.var_path / "airflow").mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [str(airflow_bin()), "db", "migrate"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{(result.stdout + result.stderr)[-2000:]}")


def _component_probe(base_url: str, component: str) -> HealthProbe:
    """Healthy when the api-server's monitor endpoint reports ``component`` healthy."""

    def probe() -> str | None:
        try:
            health = httpx.get(f"{base_url}/api/v2/monitor/health", timeout=5).json()
        except (httpx.HTTPError, ValueError) as error:
            return f"api-server: {type(error).__name__}"
        status = (health.get(component) or {}).get("status")
        return None if status == "healthy" else f"{component}: {status}"

    return probe


def airflow_services(settings: FlywheelSettings) -> list[ServiceSpec]:
    base_url = settings.resolved_airflow_url
    environment = airflow_stack_environment(settings)
    airflow = str(airflow_bin())

    def prepare_api_server() -> None:
        write_passwords_file(settings)
        migrate_database(settings)

    databases: list[ServiceSpec] = []
    workers: list[ServiceSpec] = []
    if settings.airflow_executor == "celery":
        from flywheel.stack.databases import postgres_service, redis_service

        databases = [postgres_service(settings), redis_service(settings)]
        workers = [
            celery_worker_service(settings, index, environment)
            for index in range(settings.airflow_celery_workers)
        ]
    return [
        *databases,
        ServiceSpec(
            name="airflow-api-server",
            argv=[
                airflow,
                "api-server",
                "--host",
                settings.host,
                "--port",
                str(settings.airflow_port),
                "--workers",
                "1",
            ],
            probe=_component_probe(base_url, "metadatabase"),
            urls={"http": base_url},
            env=environment,
            cwd=settings.home,
            prepare=prepare_api_server,
        ),
        ServiceSpec(
            name="airflow-scheduler",
            argv=[airflow, "scheduler", "--skip-serve-logs"],
            probe=_component_probe(base_url, "scheduler"),
            env=environment,
            cwd=settings.home,
        ),
        ServiceSpec(
            name="airflow-dag-processor",
            argv=[airflow, "dag-processor"],
            probe=_component_probe(base_url, "dag_processor"),
            env=environment,
            cwd=settings.home,
        ),
        *workers,
    ]


_CELERY_PING = (
    "import sys; from celery import Celery; "
    "app = Celery(broker=open(sys.argv[1]).read().strip()); "
    "sys.exit(0 if app.control.ping([sys.argv[2]], timeout=2.0) else 1)"
)


def celery_worker_service(settings: FlywheelSettings, index: int, environment: dict[str, str]) -> ServiceSpec:
    """One Celery worker; ``--skip-serve-logs`` keeps it from opening a log server on all interfaces."""
    name = f"airflow-celery-worker-{index}"
    hostname = f"flywheel-worker-{index}@{settings.host}"
    broker_file = settings.var_path / "credentials" / "airflow-broker-url"

    def probe() -> str | None:
        # A worker answers Celery's ping only once it consumes from the broker. Celery alone
        # imports in well under a second (Airflow would take several).
        try:
            result = subprocess.run(
                [str(airflow_bin().with_name("python")), "-c", _CELERY_PING, str(broker_file), hostname],
                capture_output=True,
                text=True,
                timeout=20,
            )
        except subprocess.TimeoutExpired:
            return "celery ping timed out"
        return None if result.returncode == 0 else "does not answer Celery's ping yet"

    return ServiceSpec(
        name=name,
        argv=[
            str(airflow_bin()),
            "celery",
            "worker",
            "--celery-hostname",
            hostname,
            "--concurrency",
            str(settings.airflow_celery_concurrency),
            "--skip-serve-logs",
        ],
        probe=probe,
        env=environment,
        cwd=settings.home,
    )
