"""The versioned model store: publish, list, read and fetch versions, and move aliases.

Layout below the storage root (see docs/architecture.md):

    models/<name>/<version>/claim.json      version number reserved (create-if-absent)
    models/<name>/<version>/<artifacts...>  uploaded next, each recorded with its sha256
    models/<name>/<version>/manifest.json   written last (create-if-absent): the version now exists
    models/<name>/aliases.json              alias -> version, replaced by compare-and-swap
    models/<name>/registration.json         the model's task, written once (create-if-absent)

A version exists if and only if its manifest exists, so a publisher that dies half-way leaves
nothing visible; its number is simply never reused.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_store.backends.base import ObjectStorage, open_storage
from model_store.documents import JsonDocument
from model_store.errors import (
    AliasConflictError,
    ChecksumMismatchError,
    InvalidNameError,
    ModelNotFoundError,
    ObjectNotFoundError,
    PreconditionFailedError,
    VersionNotFoundError,
)
from model_store.manifest import ArtifactRecord, Manifest
from model_store.names import validate_name, validate_relative_path, validate_version

MODELS_PREFIX = "models/"
MANIFEST_FILE = "manifest.json"
CLAIM_FILE = "claim.json"
ALIASES_FILE = "aliases.json"
REGISTRATION_FILE = "registration.json"
#: Artifact paths may contain this placeholder; publish replaces it with the allocated version.
VERSION_PLACEHOLDER = "{version}"
_RESERVED_FILES = {MANIFEST_FILE, CLAIM_FILE}
_MAX_ALIAS_HISTORY = 200

#: Called after each artifact upload with (path, bytes uploaded so far, total bytes).
ProgressCallback = Callable[[str, int, int], None]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifacts_from_directory(directory: Path) -> dict[str, Path]:
    """Map every file below ``directory`` to its relative POSIX path, for :meth:`ModelStore.publish`."""
    if not directory.is_dir():
        raise FileNotFoundError(f"artifact folder {directory} does not exist")
    return {
        path.relative_to(directory).as_posix(): path
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


class ModelStore:
    """Versioned artifacts and manifests on any :class:`ObjectStorage`."""

    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage

    @classmethod
    def open(cls, uri: str, settings: Any = None) -> ModelStore:
        return cls(open_storage(uri, settings))

    @property
    def uri(self) -> str:
        return self.storage.uri

    # Keys ----------------------------------------------------------------------------------
    @staticmethod
    def _model_prefix(name: str) -> str:
        return f"{MODELS_PREFIX}{validate_name(name)}/"

    def _version_key(self, name: str, version: int, file_name: str) -> str:
        return f"{self._model_prefix(name)}{version}/{file_name}"

    # Reading -------------------------------------------------------------------------------
    def list_models(self) -> list[str]:
        """Names of models with at least one published version."""
        return [name for name in self.storage.list_children(MODELS_PREFIX) if self.list_versions(name)]

    def _numbered_children(self, name: str) -> list[int]:
        return sorted(
            int(child) for child in self.storage.list_children(self._model_prefix(name)) if child.isdigit()
        )

    def list_versions(self, name: str) -> list[int]:
        """Published versions, ascending. Reserved or abandoned numbers are not versions."""
        return [
            number
            for number in self._numbered_children(name)
            if self.storage.etag(self._version_key(name, number, MANIFEST_FILE)) is not None
        ]

    def get_manifest(self, name: str, version: int | str) -> Manifest:
        number = validate_version(version)
        try:
            stored = self.storage.get(self._version_key(name, number, MANIFEST_FILE))
        except ObjectNotFoundError:
            existing = self.list_versions(name)
            raise VersionNotFoundError(name, number, existing) from None
        return Manifest.model_validate_json(stored.data)

    def resolve(self, name: str, reference: int | str = "latest") -> int:
        """A version number from a number, ``latest``, or an alias name."""
        if isinstance(reference, int) or str(reference).isdigit():
            return validate_version(reference)
        versions = self.list_versions(name)
        if not versions:
            raise ModelNotFoundError(f"model {name!r} has no published version in {self.uri}")
        if reference == "latest":
            return versions[-1]
        aliases = self.aliases(name)
        if reference not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise VersionNotFoundError(name, f"alias {reference!r} (aliases: {known})", versions)
        return aliases[str(reference)]

    # Publishing ----------------------------------------------------------------------------
    def _claim_version(self, name: str, publisher: str) -> int:
        """Reserve the next free number with create-if-absent; concurrent claimers move on."""
        claim = json.dumps(
            {"publisher": publisher, "claimed_at": datetime.now(UTC).isoformat()}, sort_keys=True
        ).encode()
        candidate = max(self._numbered_children(name), default=0) + 1
        while True:
            try:
                self.storage.put_if_absent(self._version_key(name, candidate, CLAIM_FILE), claim)
                return candidate
            except PreconditionFailedError:
                candidate = max(candidate, *self._numbered_children(name)) + 1

    def publish(
        self,
        name: str,
        artifacts: Mapping[str, Path],
        *,
        framework: str,
        progress: ProgressCallback | None = None,
        **manifest_fields: Any,
    ) -> Manifest:
        """Store ``artifacts`` (relative path -> local file) as a new version; return its manifest.

        Artifacts are uploaded first, each hashed; the manifest is written last as a conditional put,
        so the version appears atomically or not at all.
        """
        validate_name(name)
        if not artifacts:
            raise InvalidNameError(f"refusing to publish {name!r} with no artifacts")
        for relative in artifacts:
            validate_relative_path(relative.replace(VERSION_PLACEHOLDER, "1"))
            if relative in _RESERVED_FILES:
                raise InvalidNameError(f"artifact path {relative!r} is reserved by the store")
        missing = [str(path) for path in artifacts.values() if not path.exists() or path.is_dir()]
        if missing:
            raise FileNotFoundError(f"artifacts to publish do not exist: {', '.join(missing)}")

        version = self._claim_version(name, publisher=socket.gethostname())
        total = sum(path.stat().st_size for path in artifacts.values())
        uploaded = 0
        records: list[ArtifactRecord] = []
        for relative, source in sorted(artifacts.items()):
            stored_path = relative.replace(VERSION_PLACEHOLDER, str(version))
            digest = sha256_file(source)
            size = source.stat().st_size
            self.storage.put_file(self._version_key(name, version, stored_path), source)
            records.append(ArtifactRecord(path=stored_path, sha256=digest, size=size))
            uploaded += size
            if progress:
                progress(stored_path, uploaded, total)

        manifest = Manifest(
            name=name, version=version, framework=framework, artifacts=records, **manifest_fields
        )
        self.storage.put_if_absent(
            self._version_key(name, version, MANIFEST_FILE), manifest.model_dump_json(indent=2).encode()
        )
        return manifest

    # Fetching ------------------------------------------------------------------------------
    def fetch(
        self,
        name: str,
        version: int | str,
        destination: Path,
        *,
        prefix: str = "",
        progress: ProgressCallback | None = None,
    ) -> Manifest:
        """Download (the artifacts under ``prefix`` of) a version into ``destination``, verified.

        Each file is downloaded beside its target, checked against the manifest's sha256 and size,
        and only then renamed into place. A file that fails is deleted and named in the error.
        """
        manifest = self.get_manifest(name, version)
        selected = [record for record in manifest.artifacts if record.path.startswith(prefix)]
        total = sum(record.size for record in selected)
        done = 0
        for record in selected:
            target = destination / record.path
            if not (target.is_file() and sha256_file(target) == record.sha256):
                partial = target.with_name(f".{target.name}.verify")
                self.storage.get_file(self._version_key(name, manifest.version, record.path), partial)
                actual = sha256_file(partial)
                if actual != record.sha256 or partial.stat().st_size != record.size:
                    partial.unlink(missing_ok=True)
                    raise ChecksumMismatchError(name, manifest.version, record.path, record.sha256, actual)
                partial.replace(target)
            done += record.size
            if progress:
                progress(record.path, done, total)
        return manifest

    def read_artifact(self, name: str, version: int | str, path: str) -> bytes:
        """One small artifact's bytes (a profile, a config), verified against the manifest."""
        manifest = self.get_manifest(name, version)
        record = next((record for record in manifest.artifacts if record.path == path), None)
        if record is None:
            raise ObjectNotFoundError(self._version_key(name, manifest.version, path))
        data = self.storage.get(self._version_key(name, manifest.version, record.path)).data
        actual = hashlib.sha256(data).hexdigest()
        if actual != record.sha256:
            raise ChecksumMismatchError(name, manifest.version, record.path, record.sha256, actual)
        return data

    # Registration --------------------------------------------------------------------------
    def registration(self, name: str) -> dict[str, Any] | None:
        """What the model was registered as (``{"task": ...}``), or None before its first run."""
        try:
            return dict(json.loads(self.storage.get(f"{self._model_prefix(name)}{REGISTRATION_FILE}").data))
        except ObjectNotFoundError:
            return None

    def register(self, name: str, task: str, actor: str = "cli") -> dict[str, Any]:
        """Record ``name``'s task once. Registering again with the same task is a no-op; with
        another task it is refused (``AliasConflictError``): a model's versions must stay comparable."""
        validate_name(task, kind="task name")
        document = {"task": task, "registered_at": datetime.now(UTC).isoformat(), "by": actor}
        try:
            self.storage.put_if_absent(
                f"{self._model_prefix(name)}{REGISTRATION_FILE}", json.dumps(document).encode()
            )
            return document
        except PreconditionFailedError:
            current = self.registration(name) or {}
            if current.get("task") != task:
                raise AliasConflictError(
                    f"model {name!r} is registered for task {current.get('task')!r}, not {task!r}; "
                    "publish under another model name"
                ) from None
            return current

    # Aliases -------------------------------------------------------------------------------
    def _aliases_document(self, name: str) -> JsonDocument:
        return JsonDocument(self.storage, f"{self._model_prefix(name)}{ALIASES_FILE}")

    def aliases(self, name: str) -> dict[str, int]:
        document = self._aliases_document(name).read()
        return {alias: int(number) for alias, number in (document or {}).get("aliases", {}).items()}

    def alias_history(self, name: str) -> list[dict[str, Any]]:
        """Every alias move, oldest first: alias, from, to, at, by, reason."""
        document = self._aliases_document(name).read()
        return list((document or {}).get("history", []))

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int | str | None,
        *,
        expected: int | object | None = ...,
        actor: str = "cli",
        reason: str = "",
    ) -> dict[str, int]:
        """Point ``alias`` at ``version`` (None removes it) with compare-and-swap.

        With ``expected`` given, the change only applies if the alias still points there (None means
        "does not exist yet"); otherwise AliasConflictError. Without it, the change is retried on
        concurrent writers until it applies, and never overwrites another alias.
        """
        validate_name(alias, kind="alias name")
        target = None if version is None else validate_version(version)
        if target is not None:
            self.get_manifest(name, target)  # refuses aliases to versions that do not exist

        def mutate(document: dict[str, Any] | None) -> dict[str, Any]:
            document = document or {"aliases": {}, "history": []}
            current = document["aliases"].get(alias)
            if expected is not ... and current != expected:
                raise AliasConflictError(
                    f"alias {name}:{alias} points at {current}, not the expected {expected}; nothing changed"
                )
            if target is None:
                document["aliases"].pop(alias, None)
            else:
                document["aliases"][alias] = target
            document["history"] = [
                *document.get("history", []),
                {
                    "alias": alias,
                    "from": current,
                    "to": target,
                    "at": datetime.now(UTC).isoformat(),
                    "by": actor,
                    "reason": reason,
                },
            ][-_MAX_ALIAS_HISTORY:]
            return document

        updated = self._aliases_document(name).update(mutate)
        return {key: int(value) for key, value in updated["aliases"].items()}
