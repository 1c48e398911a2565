"""`flywheel up | status | down` against real processes, and durability across killed services."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ProcessRecord, ServiceSpec, group_members, is_running
from flywheel.stack.sockets import listeners
from flywheel.stack.supervisor import ServiceStartError, StackSupervisor
from model_store import ModelStore
from model_store.backends.s3 import s3_client
from serving.routing.spec import RoutingSpec
from serving.routing.spec_store import SpecStore
from tests.support import REPO_ROOT, free_port, free_stack_ports, http_ok, wait_until, wildcard_listeners


def flywheel(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flywheel", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    ports = {f"FLYWHEEL_{name.upper()}": str(port) for name, port in free_stack_ports().items()}
    env = {
        **os.environ,
        **ports,
        "FLYWHEEL_HOME": str(tmp_path),
        "FLYWHEEL_CONFIG": str(tmp_path / "absent.toml"),
        # The repair checks kill a service's child: its launcher lives on, unhealthy for good, and
        # each repair would otherwise wait out the default 15 s grace.
        "FLYWHEEL_UNHEALTHY_GRACE_S": "5",
    }
    yield env
    # Whatever a failed assertion left running stops here: a stray stack would slow every later test.
    flywheel(env, "down")


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def assert_stack_owns_its_ports(tmp_path: Path, names: list[str], ports: set[int]) -> None:
    """Every listener on a stack port belongs to the process group of a live record."""
    groups = {ProcessRecord.from_file(tmp_path / "var" / "run" / f"{name}.json").pid for name in names}
    strays = [held for held in listeners(ports) if held.pgid not in groups]
    assert strays == [], f"listeners outside the stack's recorded groups: {strays}"


def assert_supervision_repairs_every_service(
    stack_env: dict[str, str], tmp_path: Path, names: list[str], ports: set[int]
) -> None:
    """Kill every service's recorded PID alone, then one child each spawned: status says so, and one
    `up` repairs them all (a round per kind of damage rather than a restart per service keeps the
    test to two repairs of the whole stack)."""
    records = {name: ProcessRecord.from_file(tmp_path / "var" / "run" / f"{name}.json") for name in names}
    children = {name: _children(record.pid) for name, record in records.items()}
    for record in records.values():
        os.kill(record.pid, signal.SIGKILL)
    for name, record in records.items():
        wait_until(lambda record=record: not is_running(record), 10, f"{name} to die")
    states = {
        s["name"]: s["state"] for s in json.loads(flywheel(stack_env, "status", "--json").stdout)["services"]
    }
    expected = {name: "orphaned" if group_members(record) else "dead" for name, record in records.items()}
    assert states == expected
    up = json_of(flywheel(stack_env, "up", "--json"))
    assert {s["state"] for s in up["services"]} == {"running"}, up
    left = [name for name, record in records.items() if group_members(record)]
    assert left == [], "what each killed launcher left behind was stopped"
    assert_stack_owns_its_ports(tmp_path, names, ports)

    killed = []
    for name in names:
        if not children[name]:
            continue  # the service is its own server: killing the launcher above was the whole test
        fresh = ProcessRecord.from_file(tmp_path / "var" / "run" / f"{name}.json")
        if child := _children(fresh.pid):
            os.kill(child[0], signal.SIGKILL)
            killed.append(child[0])
    assert killed, "some services run their server as a child"
    for pid in killed:
        wait_until(lambda pid=pid: _gone(pid), 10, "the child to die")
    up = json_of(flywheel(stack_env, "up", "--json"))
    assert {s["state"] for s in up["services"]} == {"running"}, ("children", up)
    assert_stack_owns_its_ports(tmp_path, names, ports)


def test_up_status_down_leaves_nothing_running_and_loses_nothing(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    up = json_of(flywheel(stack_env, "up", "--json"))
    names = [
        "s3", "triton", "torchserve", "tfserving", "agent-triton", "agent-torchserve", "agent-tfserving",
        "gateway", "rollout-controller", "drift-exporter",
        "alertmanager", "prometheus", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
    ]  # fmt: skip
    assert [(s["name"], s["state"]) for s in up["services"]] == [(name, "running") for name in names]
    pids = [s["pid"] for s in up["services"]]
    pid = pids[0]
    records = [ProcessRecord.from_file(tmp_path / "var" / "run" / f"{name}.json") for name in names]
    record = ProcessRecord.from_file(tmp_path / "var" / "run" / "s3.json")
    assert record.pid == pid and is_running(record)

    # Loopback only: no service (nor a child: Java, Airflow workers) listens on all interfaces.
    assert wildcard_listeners({r.pid for r in records}) == []
    # Generated secrets never reach a log.
    generated = ("admin-token", "airflow-password", "airflow-jwt-secret", "s3-secret-access-key")
    secrets = [(tmp_path / "var" / "credentials" / name).read_text().strip() for name in generated]
    for log in (tmp_path / "var" / "log").glob("*.log"):
        text = log.read_text(errors="replace")
        assert not any(secret in text for secret in secrets), f"a secret in {log.name}"

    # `up` again is a no-op for a healthy service.
    again = json_of(flywheel(stack_env, "up", "--json"))
    assert [s["pid"] for s in again["services"]] == pids

    status = json_of(flywheel(stack_env, "status", "--json"))
    assert {s["state"] for s in status["services"]} == {"running"}
    assert status["services"][0]["urls"]["s3"].startswith("http://127.0.0.1:")
    # On an 80-column terminal every URL still prints whole (a cut URL cannot be copied).
    table = flywheel({**stack_env, "COLUMNS": "80"}, "status")
    assert table.returncode == 0, table.stderr
    for service in status["services"]:
        for url in service["urls"].values():
            assert url in table.stdout, f"{url} is not printed whole"

    ports = {
        int(value) for key, value in stack_env.items() if key.startswith("FLYWHEEL_") and key.endswith("PORT")
    }
    # State that must survive every service being killed: a model version in the store, a raw
    # object in S3 and a routing spec.
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "model.pt").write_bytes(b"weights")
    published = json_of(
        flywheel(stack_env, "models", "publish", "demo", str(artifacts), "--framework", "pytorch", "--json")
    )
    assert published["version"] == 1
    settings = FlywheelSettings(home=tmp_path, s3_port=int(stack_env["FLYWHEEL_S3_PORT"]))
    client = s3_client(settings)
    put = client.put_object(Bucket=settings.raw_bucket, Key="raw/AAPL.csv", Body=b"Date,Close\n")
    spec = SpecStore(ModelStore.open(settings.resolve_store_uri(), settings).storage).update(
        "demo",
        lambda current: RoutingSpec(
            model="demo", variants=[{"name": "triton-v1", "version": 1, "backend": "triton", "weight": 100}]
        ),
        actor="test",
        action="deploy",
    )

    # SIGKILL of every service, then `up`: a harsher restart than `down` + `up`, which loses nothing.
    assert_supervision_repairs_every_service(stack_env, tmp_path, names, ports)
    listed = json_of(flywheel(stack_env, "models", "list", "--json"))
    assert [(m["name"], m["versions"]) for m in listed["models"]] == [("demo", [1])]
    head = client.head_object(Bucket=settings.raw_bucket, Key="raw/AAPL.csv")
    assert head["ETag"] == put["ETag"]
    # The routing spec survives too, and the gateway serves it with the token kept in var/.
    token = (tmp_path / "var" / "credentials" / "admin-token").read_text()
    gateway = f"http://127.0.0.1:{stack_env['FLYWHEEL_GATEWAY_HTTP_PORT']}"
    served = httpx.get(f"{gateway}/admin/deployments/demo", headers={"Authorization": f"Bearer {token}"})
    assert served.status_code == 200 and served.json()["revision"] == spec.revision
    assert httpx.get(f"{gateway}/admin/deployments/demo").status_code == 401

    records = [ProcessRecord.from_file(tmp_path / "var" / "run" / f"{name}.json") for name in names]
    down = json_of(flywheel(stack_env, "down", "--json"))
    assert down["stopped"] == list(reversed(names))
    assert listeners(ports) == [], "down leaves nothing listening on the stack's ports"
    assert not any(is_running(r) for r in records)
    assert not any(group_members(r) for r in records), "no child process (Java, stubs, workers) is left"
    assert not http_ok(settings.s3_url + "/")
    assert not list((tmp_path / "var" / "run").glob("*.json"))
    assert {s["state"] for s in json_of(flywheel(stack_env, "status", "--json"))["services"]} == {"stopped"}


def test_a_service_that_cannot_start_fails_up_with_its_log(stack_env: dict[str, str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(stack_env["FLYWHEEL_S3_PORT"])))
        blocker.listen()
        result = flywheel(stack_env, "up")
    assert result.returncode == 1
    assert "s3 failed to start" in result.stderr
    assert "Address already in use" in result.stderr
    assert {s["state"] for s in json.loads(flywheel(stack_env, "status", "--json").stdout)["services"]} == {
        "stopped"
    }


def test_failed_start_stops_what_this_up_started(tmp_path: Path) -> None:
    port = free_port()
    server = ServiceSpec(
        name="web",
        argv=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        probe=lambda: None if http_ok(f"http://127.0.0.1:{port}/") else "down",
        cwd=tmp_path,
    )
    broken = ServiceSpec(
        name="broken",
        argv=[sys.executable, "-c", "import sys; print('boom: bad config line 3'); sys.exit(3)"],
        probe=lambda: "never healthy",
    )
    supervisor = StackSupervisor([server, broken], tmp_path / "run", tmp_path / "log", start_timeout_s=30)
    with pytest.raises(ServiceStartError, match="boom: bad config line 3") as error:
        supervisor.up()
    assert error.value.name == "broken"
    assert not http_ok(f"http://127.0.0.1:{port}/"), "the healthy service this up started is stopped again"
    assert [s.state for s in supervisor.status()] == ["stopped", "stopped"]


def test_down_stops_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = ServiceSpec(
        name="stubborn",
        argv=[
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(600)",
        ],
        probe=lambda: None,
    )
    supervisor = StackSupervisor([stubborn], tmp_path / "run", tmp_path / "log", stop_timeout_s=1)
    supervisor.up()
    record = ProcessRecord.from_file(tmp_path / "run" / "stubborn.json")
    assert is_running(record)
    assert supervisor.down() == ["stubborn"]
    assert not is_running(record)


def test_free_ports_stay_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    """Outgoing connections take their local ports from the ephemeral range, so a port picked there
    can be gone before a stack's later server binds it (a gateway's gRPC port was, in CI)."""
    from flywheel.stack.sockets import ephemeral_port_range

    low, _ = ephemeral_port_range()
    ports = [free_port() for _ in range(50)]
    assert all(1024 <= port < low for port in ports), ports
    assert len(set(ports)) == len(ports)
    stack = free_stack_ports()
    assert len(set(stack.values())) == len(stack)
    assert all(port < low for port in stack.values())
