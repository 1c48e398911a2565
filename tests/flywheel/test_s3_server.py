"""The local S3 endpoint (SeaweedFS as `flywheel up` runs it): durable across restarts, even after
SIGKILL; conditional writes enforced by the server; loopback only; every request signed."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ProcessRecord, group_members, stop_process
from flywheel.stack.seaweedfs import seaweedfs_ports
from flywheel.stack.sockets import listeners
from model_store.backends.s3 import S3Storage, s3_client
from tests.conftest import s3_server_settings, s3_server_spec
from tests.support import start_and_wait, wait_until, wildcard_listeners


def start(settings: FlywheelSettings) -> ProcessRecord:
    return start_and_wait(s3_server_spec(settings), settings.var_path, settings.s3_url)


def kill_hard(record: ProcessRecord) -> None:
    os.killpg(record.pid, signal.SIGKILL)
    stop_process(record, 5)


def fill(client: Any, tmp_path: Path) -> dict[str, str]:
    """Objects, a multipart upload, deletions; returns key -> ETag of what is left."""
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
    return before


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_objects_survive_a_restart(tmp_path: Path, stop: str) -> None:
    settings = s3_server_settings(tmp_path)
    record = start(settings)
    try:
        before = fill(s3_client(settings), tmp_path)
    except BaseException:
        stop_process(record, 20)
        raise
    client = s3_client(settings)

    if stop == "sigkill":
        kill_hard(record)
    else:
        stop_process(record, 20)
    assert not group_members(record)
    record = start(settings)
    try:
        after = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket="landing")["Contents"]}
        assert after == before
        assert sorted(after) == ["raw", "raw/AAPL.csv", "raw/big.bin"]
        body = client.get_object(Bucket="landing", Key="raw/big.bin")["Body"].read()
        assert body == (tmp_path / "big.bin").read_bytes()
    finally:
        stop_process(record, 20)


def test_every_port_is_pinned_loopback_and_every_request_signed(s3_settings: FlywheelSettings) -> None:
    """SeaweedFS listens on exactly the configured ports, none on a wildcard address, and refuses a
    request signed with another key."""
    record = ProcessRecord.from_file(s3_settings.run_dir / "s3.json")
    expected = set(seaweedfs_ports(s3_settings).values())

    def held() -> set[int]:
        return {listener.port for listener in listeners() if listener.pgid == record.pid}

    # The admin server opens its ports a moment after S3 answers.
    wait_until(lambda: held() >= expected, 30, "every SeaweedFS port to open")
    assert held() == expected
    assert wildcard_listeners({record.pid}) == []
    secret = s3_settings.s3_secret_access_key
    assert secret is not None and secret.get_secret_value() not in " ".join(record.argv)

    # The filer's own HTTP API (paths of every bucket) wants a token too, not only the S3 port.
    filer = f"http://127.0.0.1:{s3_settings.seaweedfs_filer_port}/buckets/"
    assert httpx.get(filer).status_code == 401
    assert httpx.put(filer + "planted/manifest.json", content=b"{}").status_code == 401
    assert (s3_settings.s3_data_dir / "security.toml").stat().st_mode & 0o777 == 0o600

    stranger = s3_settings.model_copy(update={"s3_secret_access_key": SecretStr("not-the-key")})
    with pytest.raises(ClientError) as refused:
        s3_client(stranger, max_attempts=1).list_buckets()
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert secret.get_secret_value() not in Path(record.log).read_text()


def test_conditional_puts_are_atomic_under_contention(s3_settings: FlywheelSettings) -> None:
    """Sixteen threads race to create one key: exactly one wins, as on AWS S3. A replace that names
    a stale ETag loses, and the winner's content stays."""
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
    current = storage.get("contended")
    storage.put("contended", b"replaced")
    with pytest.raises(PreconditionFailedError):
        storage.put_if_match("contended", b"late", current.etag)
    assert storage.get("contended").data == b"replaced"
