"""The local S3 endpoint keeps objects, ETags and deletions across restarts, even after SIGKILL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ProcessRecord, stop_process
from model_store.backends.s3 import S3Storage, s3_client
from tests.conftest import s3_server_spec
from tests.support import free_port, start_and_wait


def start(workdir: Path, data_dir: Path, port: int) -> ProcessRecord:
    return start_and_wait(s3_server_spec(port, data_dir), workdir, f"http://127.0.0.1:{port}/")


def client_for(workdir: Path, port: int) -> Any:
    return s3_client(FlywheelSettings(home=workdir, s3_port=port))


def kill_hard(record: ProcessRecord) -> None:
    import os
    import signal

    os.killpg(record.pid, signal.SIGKILL)
    stop_process(record, 5)


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_objects_survive_a_restart(tmp_path: Path, stop: str) -> None:
    data_dir, port = tmp_path / "data", free_port()
    record = start(tmp_path, data_dir, port)
    client = client_for(tmp_path, port)
    client.create_bucket(Bucket="landing")
    client.put_object(Bucket="landing", Key="raw/AAPL.csv", Body=b"Date,Open\n2024-01-02,1\n")
    client.put_object(Bucket="landing", Key="raw", Body=b"a key that is also a prefix")
    big = tmp_path / "big.bin"
    big.write_bytes(b"0123456789abcdef" * (1 << 20))  # 16 MiB: boto3 uploads it in parts
    client.upload_file(str(big), "landing", "raw/big.bin")
    client.put_object(Bucket="landing", Key="raw/deleted.csv", Body=b"x")
    client.delete_object(Bucket="landing", Key="raw/deleted.csv")
    client.put_object(Bucket="landing", Key="batch/1", Body=b"1")
    client.put_object(Bucket="landing", Key="batch/2", Body=b"2")
    client.delete_objects(Bucket="landing", Delete={"Objects": [{"Key": "batch/1"}, {"Key": "batch/2"}]})
    before = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket="landing")["Contents"]}
    assert before["raw/big.bin"].endswith('-2"'), "a multipart ETag, which a naive re-put would change"

    if stop == "sigkill":
        kill_hard(record)
    else:
        stop_process(record, 10)
    record = start(tmp_path, data_dir, port)
    try:
        after = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket="landing")["Contents"]}
        assert after == before
        assert sorted(after) == ["raw", "raw/AAPL.csv", "raw/big.bin"]
        body = client.get_object(Bucket="landing", Key="raw/big.bin")["Body"].read()
        assert body == big.read_bytes()
    finally:
        stop_process(record, 10)


def test_conditional_puts_are_atomic_under_contention(s3_settings: FlywheelSettings) -> None:
    """Sixteen threads race to create one key: exactly one wins, as on AWS S3."""
    from concurrent.futures import ThreadPoolExecutor

    from model_store.errors import PreconditionFailedError
    from tests.conftest import new_bucket

    storage = S3Storage(s3_client(s3_settings), new_bucket(s3_settings))

    def attempt(index: int) -> bool:
        try:
            storage.put_if_absent("contended", str(index).encode())
            return True
        except PreconditionFailedError:
            return False

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(attempt, range(16))) == 1
