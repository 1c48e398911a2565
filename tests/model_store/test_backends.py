"""The two storage backends behave the same, including their conditional writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store.backends.base import ObjectStorage
from model_store.errors import ObjectNotFoundError, PreconditionFailedError
from model_store.store import ModelStore


@pytest.fixture
def storage(store: ModelStore) -> ObjectStorage:
    return store.storage


def test_put_get_roundtrip_with_stable_etag(storage: ObjectStorage) -> None:
    etag = storage.put("a/b.json", b'{"x": 1}')
    stored = storage.get("a/b.json")
    assert stored.data == b'{"x": 1}'
    assert stored.etag == etag == storage.etag("a/b.json")


def test_missing_key(storage: ObjectStorage) -> None:
    with pytest.raises(ObjectNotFoundError):
        storage.get("nope")
    assert storage.etag("nope") is None


def test_put_if_absent_refuses_an_existing_key(storage: ObjectStorage) -> None:
    storage.put_if_absent("k", b"first")
    with pytest.raises(PreconditionFailedError):
        storage.put_if_absent("k", b"second")
    assert storage.get("k").data == b"first"


def test_put_if_match_needs_the_current_etag(storage: ObjectStorage) -> None:
    first = storage.put("k", b"v1")
    second = storage.put_if_match("k", b"v2", first)
    with pytest.raises(PreconditionFailedError):
        storage.put_if_match("k", b"stale", first)
    assert storage.get("k").data == b"v2"
    assert storage.etag("k") == second


def test_put_if_match_on_a_missing_key_fails(storage: ObjectStorage) -> None:
    with pytest.raises(PreconditionFailedError):
        storage.put_if_match("missing", b"v", "0" * 32)
    assert storage.etag("missing") is None


def test_listing(storage: ObjectStorage) -> None:
    for key in ("m/1/a", "m/1/b/c", "m/2/a", "m/aliases.json", "other/x"):
        storage.put(key, b"x")
    assert sorted(storage.list_keys("m/1/")) == ["m/1/a", "m/1/b/c"]
    assert storage.list_children("m/") == ["1", "2", "aliases.json"]
    assert storage.list_children("m/1/") == ["a", "b"]
    assert storage.list_children("absent/") == []


def test_files_roundtrip_and_delete(storage: ObjectStorage, tmp_path: Path) -> None:
    source = tmp_path / "blob.bin"
    source.write_bytes(bytes(range(256)) * 1000)
    storage.put_file("blobs/blob.bin", source)
    storage.get_file("blobs/blob.bin", tmp_path / "out" / "copy.bin")
    assert (tmp_path / "out" / "copy.bin").read_bytes() == source.read_bytes()
    storage.delete("blobs/blob.bin")
    storage.delete("blobs/blob.bin")  # deleting twice is fine
    with pytest.raises(ObjectNotFoundError):
        storage.get_file("blobs/blob.bin", tmp_path / "out" / "again.bin")
    assert not (tmp_path / "out" / "again.bin").exists()
