"""PostgreSQL and Redis for Airflow's Celery profile (``FLYWHEEL_AIRFLOW_EXECUTOR=celery``).

Both are the machine's own binaries (Debian ``postgresql-15`` and ``redis-server``), run by the
stack on loopback with generated passwords that never reach a command line or a log:

- **PostgreSQL** gets its superuser password from a file at ``initdb`` (``--pwfile``), uses
  scram-sha-256 for every TCP connection, and listens on ``host:postgres_port`` only; it opens no
  Unix socket. PostgreSQL refuses to run as root, so when Flywheel is root
  the server runs as ``postgres_os_user`` (``setpriv``, which execs: the recorded PID is the
  server's) and its data folder belongs to that user.
- **Redis** reads ``requirepass`` from a 0600 config file, with protected mode on. It is only a
  broker: Celery's results go to PostgreSQL, so Redis keeps no snapshot.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from flywheel.settings import FlywheelSettings
from flywheel.stack.credentials import generated_secret, write_private_file
from flywheel.stack.process import HealthProbe, ServiceSpec

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE_USER = "flywheel"
AIRFLOW_DATABASE = "airflow"


def postgres_data_dir(settings: FlywheelSettings) -> Path:
    return settings.postgres_data_dir or settings.var_path / "postgres"


def postgres_password(settings: FlywheelSettings) -> str:
    return generated_secret(settings, "postgres-password")


def redis_password(settings: FlywheelSettings) -> str:
    return generated_secret(settings, "redis-password")


def airflow_database_url(settings: FlywheelSettings, driver: str = "postgresql+psycopg2") -> str:
    password = postgres_password(settings)  # token_urlsafe: nothing to escape in a URL
    return (
        f"{driver}://{DATABASE_USER}:{password}@{settings.host}:{settings.postgres_port}/{AIRFLOW_DATABASE}"
    )


def redis_url(settings: FlywheelSettings) -> str:
    return f"redis://:{redis_password(settings)}@{settings.host}:{settings.redis_port}/0"


def _runs_as_root() -> bool:
    return os.geteuid() == 0


def _as_database_user(settings: FlywheelSettings, argv: list[str]) -> list[str]:
    if not _runs_as_root():
        return argv
    return ["setpriv", f"--reuid={settings.postgres_os_user}", f"--regid={settings.postgres_os_user}",
            "--init-groups", "--", *argv]  # fmt: skip


def _hand_to_database_user(settings: FlywheelSettings, path: Path) -> None:
    if _runs_as_root():
        user = pwd.getpwnam(settings.postgres_os_user)
        os.chown(path, user.pw_uid, user.pw_gid)


def _check_reachable(settings: FlywheelSettings, folder: Path) -> None:
    """Every parent must let the database user through, or initdb fails with a bare EACCES."""
    if not _runs_as_root():
        return
    for parent in folder.parents:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise PermissionError(
                f"PostgreSQL runs as {settings.postgres_os_user!r} (it refuses root), which cannot enter "
                f"{parent}: set FLYWHEEL_POSTGRES_DATA_DIR to a folder it can reach"
            )


#: Suffix of the marker written beside a data folder before initdb: only a folder with it may be
#: cleared after a failed initdb. Flywheel never deletes a folder it did not create.
OWNED_MARKER = ".flywheel-initdb"


def initialise_postgres(settings: FlywheelSettings) -> None:
    """``initdb`` once: scram-sha-256 everywhere, the superuser's password from a private file."""
    data_dir = postgres_data_dir(settings)
    if (data_dir / "PG_VERSION").exists():
        return
    _check_reachable(settings, data_dir)
    # Beside the data folder (initdb wants the folder itself empty): present from before initdb
    # until it succeeds, so only a folder an interrupted initdb of ours left is ever cleared.
    marker = data_dir.parent / f".{data_dir.name}{OWNED_MARKER}"
    if data_dir.exists() and any(data_dir.iterdir()):
        if not marker.exists():
            raise FileExistsError(
                f"{data_dir} is not empty and is not a PostgreSQL data folder: point "
                "FLYWHEEL_POSTGRES_DATA_DIR at a new or empty folder"
            )
        shutil.rmtree(data_dir)  # what an interrupted initdb of ours left
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _hand_to_database_user(settings, data_dir)
    marker.touch()
    # The password goes in a private folder of its own, readable by the database user only.
    scratch = Path(tempfile.mkdtemp(prefix="flywheel-initdb-"))
    try:
        _hand_to_database_user(settings, scratch)
        password_file = scratch / "pwfile"
        descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(postgres_password(settings))
            if _runs_as_root():
                user = pwd.getpwnam(settings.postgres_os_user)
                os.fchown(handle.fileno(), user.pw_uid, user.pw_gid)
        initdb = [str(POSTGRES_BIN / "initdb"), "-D", str(data_dir), "-U", DATABASE_USER,
                  f"--pwfile={password_file}", "--auth=scram-sha-256", "--encoding=UTF8"]  # fmt: skip
        result = subprocess.run(
            _as_database_user(settings, initdb), capture_output=True, text=True, timeout=300
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{(result.stdout + result.stderr)[-2000:]}")
    marker.unlink(missing_ok=True)


def _postgres_environment(settings: FlywheelSettings) -> dict[str, str]:
    """libpq reads the password from a 0600 passfile: none in any environment or command line."""
    passfile = write_private_file(
        settings.var_path / "credentials" / "pgpass",
        f"{settings.host}:{settings.postgres_port}:*:{DATABASE_USER}:{postgres_password(settings)}\n",
    )
    return {"PGPASSFILE": str(passfile), "PGCONNECT_TIMEOUT": "3"}


def _postgres_probe(settings: FlywheelSettings) -> HealthProbe:
    def probe() -> str | None:
        where = ["-h", settings.host, "-p", str(settings.postgres_port)]
        try:
            result = subprocess.run(
                [str(POSTGRES_BIN / "pg_isready"), *where, "-t", "2"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"postgres: {type(error).__name__}"
        return None if result.returncode == 0 else f"postgres: {result.stdout.strip() or result.returncode}"

    return probe


def create_airflow_database(settings: FlywheelSettings) -> None:
    """The ``airflow`` database, once (its owner is the superuser Flywheel created)."""
    result = subprocess.run(
        [str(POSTGRES_BIN / "createdb"), "-h", settings.host, "-p", str(settings.postgres_port),
         "-U", DATABASE_USER, AIRFLOW_DATABASE],
        env={**os.environ, **_postgres_environment(settings)},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise RuntimeError(f"createdb {AIRFLOW_DATABASE} failed: {result.stderr.strip()}")


def postgres_service(settings: FlywheelSettings) -> ServiceSpec:
    data_dir = postgres_data_dir(settings)
    server = [str(POSTGRES_BIN / "postgres"), "-D", str(data_dir),
              "-c", f"listen_addresses={settings.host}", "-c", f"port={settings.postgres_port}",
              "-c", "unix_socket_directories=", "-c", "password_encryption=scram-sha-256",
              "-c", "max_connections=100"]  # fmt: skip
    return ServiceSpec(
        name="postgres",
        argv=_as_database_user(settings, server),
        probe=_postgres_probe(settings),
        urls={"postgres": f"postgresql://{settings.host}:{settings.postgres_port}/{AIRFLOW_DATABASE}"},
        cwd=settings.var_path,
        prepare=lambda: initialise_postgres(settings),
        after_start=lambda: create_airflow_database(settings),
    )


def write_redis_config(settings: FlywheelSettings) -> None:
    folder = settings.var_path / "redis"
    write_private_file(
        folder / "redis.conf",
        f"bind {settings.host}\nport {settings.redis_port}\nprotected-mode yes\n"
        f'requirepass {redis_password(settings)}\ndir {folder}\nsave ""\nappendonly no\n'
        'daemonize no\nlogfile ""\n',
    )


def _redis_probe(settings: FlywheelSettings) -> HealthProbe:
    """Healthy when an authenticated PING gets PONG."""

    def probe() -> str | None:
        try:
            with socket.create_connection((settings.host, settings.redis_port), timeout=2) as connection:
                connection.sendall(f"AUTH {redis_password(settings)}\r\nPING\r\n".encode())
                answer = b""
                while b"PONG" not in answer and b"-" not in answer:
                    chunk = connection.recv(256)
                    if not chunk:
                        break
                    answer += chunk
        except OSError as error:
            return f"redis: {type(error).__name__}"
        return None if b"+PONG" in answer else f"redis answered {answer[:40]!r}"

    return probe


def redis_service(settings: FlywheelSettings) -> ServiceSpec:
    config = settings.var_path / "redis" / "redis.conf"
    return ServiceSpec(
        name="redis",
        argv=["redis-server", str(config)],
        probe=_redis_probe(settings),
        urls={"redis": f"redis://{settings.host}:{settings.redis_port}/0"},
        cwd=settings.var_path,
        prepare=lambda: write_redis_config(settings),
    )
