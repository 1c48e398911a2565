"""Real TorchServe (Java 17 frontend, Python worker) starts here, registers a .mar and predicts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from flywheel.stack.process import stop_process
from serving.backends.torchserve.runtime import TorchServePorts, torchserve_service
from tests.support import free_port, start_and_wait

HANDLER = '''
import json


def handle(data, context):
    """Doubles every number it is sent: enough to prove a Python worker answered."""
    if data is None:
        return None
    outputs = []
    for row in data:
        body = row.get("body") or row.get("data")
        values = json.loads(body) if isinstance(body, (bytes, bytearray, str)) else body
        outputs.append([2 * value for value in values])
    return outputs
'''


def build_mar(workdir: Path, store: Path) -> None:
    handler = workdir / "doubler.py"
    handler.write_text(HANDLER)
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    subprocess.run(
        [
            str(archiver),
            "--model-name",
            "doubler",
            "--version",
            "1.0",
            "--handler",
            str(handler),
            "--export-path",
            str(store),
            "--force",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_torchserve_registers_a_mar_and_predicts(tmp_path: Path) -> None:
    store = tmp_path / "model-store"
    store.mkdir()
    build_mar(tmp_path, store)
    ports = TorchServePorts(free_port(), free_port(), free_port(), free_port(), free_port())
    spec = torchserve_service("torchserve-smoke", store, tmp_path / "ts", ports)
    record = start_and_wait(spec, tmp_path, f"http://127.0.0.1:{ports.inference}/ping", timeout_s=180)
    try:
        management = f"http://127.0.0.1:{ports.management}"
        assert httpx.get(f"{management}/models").json() == {"models": []}
        registered = httpx.post(
            f"{management}/models",
            params={"url": "doubler.mar", "initial_workers": 1, "synchronous": "true"},
            timeout=120,
        )
        assert registered.status_code == 200, registered.text
        prediction = httpx.post(
            f"http://127.0.0.1:{ports.inference}/predictions/doubler", json=[1, 2, 3], timeout=60
        )
        assert prediction.status_code == 200, prediction.text
        assert prediction.json() == [2, 4, 6]
    finally:
        stop_process(record, 30)
    assert not httpx_reachable(f"http://127.0.0.1:{ports.inference}/ping")


def httpx_reachable(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.HTTPError:
        return False
