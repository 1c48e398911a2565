"""The stock `moto_server` command installs and serves S3 (Flywheel's launcher wraps the same app)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ServiceSpec, stop_process
from model_store.backends.s3 import s3_client
from tests.support import free_port, http_ok, start_and_wait


def test_moto_server_binary_serves_s3(tmp_path: Path) -> None:
    port = free_port()
    binary = Path(sys.executable).parent / "moto_server"
    assert binary.exists() or shutil.which("moto_server")
    spec = ServiceSpec(
        name="moto",
        argv=[str(binary), "-H", "127.0.0.1", "-p", str(port)],
        probe=lambda: None if http_ok(f"http://127.0.0.1:{port}/") else "down",
    )
    record = start_and_wait(spec, tmp_path, f"http://127.0.0.1:{port}/", timeout_s=60)
    try:
        client = s3_client(FlywheelSettings(home=tmp_path, s3_port=port))
        client.create_bucket(Bucket="smoke")
        client.put_object(Bucket="smoke", Key="k", Body=b"v")
        assert client.get_object(Bucket="smoke", Key="k")["Body"].read() == b"v"
    finally:
        stop_process(record, 10)
