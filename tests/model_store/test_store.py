"""The model store against both backends: publishing, reading, verification, races and crashes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flywheel.settings import FlywheelSettings
from model_store import (
    AliasConflictError,
    ChecksumMismatchError,
    InvalidNameError,
    ModelStore,
    VersionNotFoundError,
)
from model_store.manifest import GateResult, Lineage, Signature, TensorSpec
from model_store.store import sha256_file
from tests.support import REPO_ROOT, wait_until


def write_artifacts(folder: Path) -> dict[str, Path]:
    files = {
        "torchserve/demo.mar": b"mar-bytes" * 100,
        "savedmodel/{version}/saved_model.pb": b"pb",
        "triton/demo/config.pbtxt": b'name: "demo"',
        "profile.json": b'{"features": {}}',
    }
    paths = {}
    for relative, data in files.items():
        path = folder / relative.replace("{version}", "v")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[relative] = path
    return paths


def publish(store: ModelStore, folder: Path, name: str = "demo", **fields: object) -> int:
    return store.publish(name, write_artifacts(folder), framework="pytorch", **fields).version


def test_publish_then_read_back_everything(store: ModelStore, tmp_path: Path) -> None:
    signature = Signature(
        inputs=[TensorSpec(name="features", datatype="FP32", shape=[-1, 30, 8])],
        outputs=[TensorSpec(name="prediction", datatype="FP32", shape=[-1, 1])],
    )
    lineage = Lineage(
        dataset_snapshot="snap-1",
        dataset_hash="abc",
        source_objects=["raw/a.csv"],
        git_sha="deadbeef",
        git_dirty=False,
        params={"epochs": 3},
        packages={"torch": "2.13.0"},
    )
    gate = GateResult(passed=True, metric="rmse", reasons=["first model: compared with the naive baseline"])
    manifest = store.publish(
        "demo",
        write_artifacts(tmp_path / "src"),
        framework="pytorch",
        backends=["torchserve", "triton"],
        signature=signature,
        lineage=lineage,
        metrics={"rmse": 0.12},
        gate=gate,
    )
    assert manifest.version == 1
    read = store.get_manifest("demo", 1)
    assert read == manifest
    assert read.lineage.dataset_snapshot == "snap-1" and read.lineage.params == {"epochs": 3}
    assert read.gate is not None and read.gate.passed
    # The version placeholder became the allocated number, as TF Serving's layout needs.
    assert {a.path for a in read.artifacts} == {
        "torchserve/demo.mar",
        "savedmodel/1/saved_model.pb",
        "triton/demo/config.pbtxt",
        "profile.json",
    }
    assert store.list_models() == ["demo"]
    assert store.list_versions("demo") == [1]


def test_versions_increase_and_fetch_verifies(store: ModelStore, tmp_path: Path) -> None:
    assert [publish(store, tmp_path / f"s{i}") for i in range(3)] == [1, 2, 3]
    destination = tmp_path / "fetched"
    manifest = store.fetch("demo", 2, destination)
    for record in manifest.artifacts:
        assert sha256_file(destination / record.path) == record.sha256
    store.fetch("demo", 2, tmp_path / "only-mar", prefix="torchserve/")
    assert [p.name for p in (tmp_path / "only-mar").rglob("*") if p.is_file()] == ["demo.mar"]


def test_missing_version_names_the_existing_ones(store: ModelStore, tmp_path: Path) -> None:
    publish(store, tmp_path / "a")
    publish(store, tmp_path / "b")
    with pytest.raises(VersionNotFoundError, match=r"no version 9; existing versions: 1, 2"):
        store.get_manifest("demo", 9)
    with pytest.raises(VersionNotFoundError, match="existing versions: none"):
        store.get_manifest("never-published", 1)


def test_checksum_mismatch_refuses_the_artifact_and_names_it(store: ModelStore, tmp_path: Path) -> None:
    version = publish(store, tmp_path / "src")
    store.storage.put(f"models/demo/{version}/torchserve/demo.mar", b"tampered")
    destination = tmp_path / "fetched"
    with pytest.raises(ChecksumMismatchError, match=r"torchserve/demo\.mar"):
        store.fetch("demo", version, destination)
    assert not (destination / "torchserve" / "demo.mar").exists()
    assert not [p for p in destination.rglob("*demo.mar*")], "no partial file may remain"


@pytest.mark.parametrize("bad", ["../evil", "a/b", "ctl\x07", ".."])
def test_bad_model_names_are_refused_before_anything_is_written(
    store: ModelStore, tmp_path: Path, bad: str
) -> None:
    with pytest.raises(InvalidNameError):
        publish(store, tmp_path / "src", name=bad)
    assert list(store.storage.list_keys("")) == []


def test_bad_artifact_paths_are_refused(store: ModelStore, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    for bad in ("../escape", "manifest.json", "/abs"):
        with pytest.raises(InvalidNameError):
            store.publish("demo", {bad: source}, framework="x")
    assert store.list_versions("demo") == []


def _publisher_env(store: ModelStore, request: pytest.FixtureRequest) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    if store.uri.startswith("s3://"):  # the endpoint and key of the session's SeaweedFS
        env.update(request.getfixturevalue("s3_settings").as_env())
    return env


def test_a_publisher_killed_half_way_leaves_no_visible_version(
    store: ModelStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    first = tmp_path / "a_first.bin"
    first.write_bytes(b"uploaded before the crash")
    # The publisher blocks reading this FIFO while hashing its second artifact: a deterministic
    # point after the version was claimed and the first artifact stored, before the manifest.
    blocker = tmp_path / "b_blocker.bin"
    os.mkfifo(blocker)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.model_store.publisher", store.uri, "demo", str(first), str(blocker)],
        env=_publisher_env(store, request),
        cwd=REPO_ROOT,
    )
    try:
        wait_until(lambda: store.storage.etag("models/demo/1/a_first.bin") is not None, 60, "first artifact")
    finally:
        process.kill()
        process.wait()
    assert store.list_versions("demo") == []
    assert store.list_models() == []
    with pytest.raises(VersionNotFoundError):
        store.get_manifest("demo", 1)
    # The abandoned number is not reused; the next publish is visible and complete.
    assert publish(store, tmp_path / "src") == 2
    assert store.list_versions("demo") == [2]


def test_eight_concurrent_publisher_processes_get_eight_distinct_versions(
    store: ModelStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(b"w" * 4096)
    command = [sys.executable, "-m", "tests.model_store.publisher", store.uri, "demo", str(artifact)]
    barrier = threading.Barrier(8)

    def run_one(_: int) -> int:
        barrier.wait()
        result = subprocess.run(
            command,
            env=_publisher_env(store, request),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return int(result.stdout.strip())

    with ThreadPoolExecutor(max_workers=8) as pool:
        versions = list(pool.map(run_one, range(8)))
    assert sorted(versions) == list(range(1, 9))
    assert store.list_versions("demo") == list(range(1, 9))
    for version in versions:
        assert store.get_manifest("demo", version).version == version


def test_aliases_compare_and_swap(store: ModelStore, tmp_path: Path) -> None:
    for index in range(3):
        publish(store, tmp_path / f"s{index}")
    assert store.set_alias("demo", "champion", 1, expected=None) == {"champion": 1}
    assert store.set_alias("demo", "champion", 2, expected=1) == {"champion": 2}
    with pytest.raises(AliasConflictError, match="points at 2, not the expected 1"):
        store.set_alias("demo", "champion", 3, expected=1)
    assert store.aliases("demo") == {"champion": 2}
    with pytest.raises(VersionNotFoundError):
        store.set_alias("demo", "champion", 42)
    assert store.resolve("demo", "champion") == 2
    assert store.resolve("demo", "latest") == 3
    store.set_alias("demo", "champion", None)
    assert store.aliases("demo") == {}


def test_concurrent_alias_writers_lose_no_update(store: ModelStore, tmp_path: Path) -> None:
    publish(store, tmp_path / "src")
    names = [f"alias-{index}" for index in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda alias: store.set_alias("demo", alias, 1), names))
    assert store.aliases("demo") == dict.fromkeys(names, 1)
    history = store._aliases_document("demo").read()
    assert history is not None and len(history["history"]) == 8


def test_s3_store_is_reachable_through_settings(s3_settings: FlywheelSettings) -> None:
    from flywheel.stack.buckets import ensure_bucket

    assert ensure_bucket(s3_settings, "settings-store") is True
    assert ensure_bucket(s3_settings, "settings-store") is False
    store = ModelStore.open("s3://settings-store/models-root", s3_settings)
    assert store.list_models() == []
