"""The transport-free core of the TF-Serving-protocol runtime: which servables exist, and Predict.

It follows TF Serving's model: a ``ModelServerConfig`` lists models, each with a ``base_path``
whose numbered sub-folders are SavedModel versions, a version policy (``latest`` N, the
default being latest 1; ``all``; ``specific``) and version labels. ``reconcile`` loads the
versions the policy wants and unloads the rest; it runs on a poll interval (hot pick-up of new
version folders) and after a config reload. Errors carry TF Serving's codes and wording so that
clients and the Flywheel adapter see what the real server would say.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("flywheel.tfserving")


class ServingError(Exception):
    """An error with a TF Serving (gRPC) status code name: NOT_FOUND, INVALID_ARGUMENT, ..."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Servable:
    name: str
    version: int
    path: Path
    signatures: dict[str, Any]
    signature_defs: Any  # tensorflow.core.protobuf.meta_graph_pb2 SignatureDef map


@dataclass
class ModelState:
    config: Any  # model_server_config_pb2.ModelConfig
    servables: dict[int, Servable] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


def _tensorflow() -> Any:
    import tensorflow as tf

    return tf


def _version_folders(base_path: Path) -> list[int]:
    if not base_path.is_dir():
        return []
    return sorted(
        int(child.name)
        for child in base_path.iterdir()
        if child.name.isdigit() and (child / "saved_model.pb").is_file()
    )


def wanted_versions(config: Any, available: list[int]) -> list[int]:
    policy = config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return available
    if which == "specific":
        return sorted(set(policy.specific.versions) & set(available))
    count = policy.latest.num_versions if which == "latest" and policy.latest.num_versions > 0 else 1
    return available[-count:]


def load_savedmodel(name: str, version: int, path: Path) -> Servable:
    from tensorflow.core.protobuf import saved_model_pb2

    tf = _tensorflow()
    loaded = tf.saved_model.load(str(path))
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    signature_defs = proto.meta_graphs[0].signature_def
    # Keep the loaded object alive alongside its concrete functions.
    signatures = {key: loaded.signatures[key] for key in signature_defs if key in loaded.signatures}
    signatures["__object__"] = loaded
    return Servable(name, version, path, signatures, signature_defs)


class ServableManager:
    """Loaded SavedModels by (name, version), reconciled against a ModelServerConfig."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._models: dict[str, ModelState] = {}

    # Configuration ---------------------------------------------------------------------------
    def apply_config(self, server_config: Any) -> None:
        """Replace the model list (a config reload); models no longer listed are unloaded."""
        configs = {config.name: config for config in server_config.model_config_list.config}
        with self._lock:
            for name in set(self._models) - set(configs):
                logger.info("unloading model %s (removed from config)", name)
                del self._models[name]
            for name, config in configs.items():
                if config.model_platform and config.model_platform != "tensorflow":
                    raise ServingError(
                        "INVALID_ARGUMENT", f"model {name}: unsupported platform {config.model_platform}"
                    )
                state = self._models.setdefault(name, ModelState(config))
                state.config = config
        self.reconcile()

    def reconcile(self) -> None:
        """Load wanted versions that are not loaded; unload loaded versions that are not wanted."""
        with self._lock:
            models = list(self._models.values())
        for state in models:
            base_path = Path(state.config.base_path)
            wanted = set(wanted_versions(state.config, _version_folders(base_path)))
            for version in sorted(wanted - set(state.servables) - set(state.failed)):
                try:
                    servable = load_savedmodel(state.config.name, version, base_path / str(version))
                except Exception as error:
                    logger.error("failed to load %s version %d: %s", state.config.name, version, error)
                    with self._lock:
                        state.failed[version] = str(error)
                    continue
                with self._lock:
                    state.servables[version] = servable
                logger.info("loaded %s version %d from %s", state.config.name, version, servable.path)
            with self._lock:
                for version in sorted(set(state.servables) - wanted):
                    logger.info("unloading %s version %d", state.config.name, version)
                    del state.servables[version]
                for version in sorted(set(state.failed) - wanted):
                    del state.failed[version]

    # Lookup ----------------------------------------------------------------------------------
    def _state(self, name: str) -> ModelState:
        state = self._models.get(name)
        if state is None:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
        return state

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        with self._lock:
            state = self._state(name)
            if label:
                labels = dict(state.config.version_labels)
                if label not in labels:
                    raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
                version = labels[label]
            if version is None:
                if not state.servables:
                    raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
                return state.servables[max(state.servables)]
            if version not in state.servables:
                raise ServingError(
                    "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
                )
            return state.servables[version]

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[tuple[int, str, str]]:
        """(version, state, error message) for one version or every known version of a model."""
        with self._lock:
            state = self._state(name)
            if label:
                version = self.resolve(name, label=label).version
            rows = [(v, "AVAILABLE", "") for v in state.servables] + [
                (v, "END", e) for v, e in state.failed.items()
            ]
        if version is not None:
            rows = [row for row in rows if row[0] == version]
            if not rows:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
        return sorted(rows)

    def loaded(self) -> dict[str, list[int]]:
        with self._lock:
            return {name: sorted(state.servables) for name, state in self._models.items()}

    # Predict ---------------------------------------------------------------------------------
    def predict(
        self, servable: Servable, signature_name: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        tf = _tensorflow()
        signature_name = signature_name or "serving_default"
        if signature_name not in servable.signature_defs:
            raise ServingError(
                "INVALID_ARGUMENT",
                f'Serving signature name: "{signature_name}" not found in signature def; '
                f"available: {sorted(servable.signature_defs)}",
            )
        definition = servable.signature_defs[signature_name]
        expected = set(definition.inputs)
        if set(inputs) != expected:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"input names {sorted(inputs)} do not match the signature's inputs {sorted(expected)}",
            )
        function = servable.signatures[signature_name]
        arguments = {}
        for key, value in inputs.items():
            spec = function.structured_input_signature[1][key]
            if not spec.shape.is_compatible_with(value.shape):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"input {key!r} has shape {list(value.shape)}, "
                    f"but the signature expects {spec.shape.as_list()}",
                )
            try:
                arguments[key] = tf.constant(value, dtype=spec.dtype)
            except (TypeError, ValueError) as error:
                raise ServingError(
                    "INVALID_ARGUMENT", f"input {key!r} is not {spec.dtype.name}: {error}"
                ) from None
        outputs = function(**arguments)
        return {key: np.asarray(value) for key, value in outputs.items()}
