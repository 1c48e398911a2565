"""Framework exports shaped by the task's signature, so packaging and the gate never name a task.

- TorchScript by tracing with a zero batch of the signature's input shape: what TorchServe's
  handler, Triton's entry and the evaluation gate load.
- A SavedModel whose ``serving_default`` maps the signature's input name to its output name, as
  TF Serving clients call it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flywheel.native_logs import quiet_import
from model_store.manifest import Signature, TensorSpec
from serving.protocols.examples import example_inputs


def example_batch(spec: TensorSpec, rows: int = 2) -> np.ndarray:
    """An input of the tensor's shape with ``rows`` for each variable dimension."""
    return example_inputs([spec.protocol_view()], rows=rows)[spec.name]


def export_torchscript(model: Any, signature: Signature, path: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    traced = torch.jit.trace(model, torch.as_tensor(example_batch(signature.inputs[0])))
    traced.save(str(path))
    return path


def torch_predict(model: Any, features: np.ndarray, batch_rows: int = 4096) -> np.ndarray:
    """The model's first output for ``features``, in batches, without gradients."""
    import torch

    model.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(features), batch_rows):
            parts.append(model(torch.as_tensor(features[start : start + batch_rows])).numpy())
    return np.concatenate(parts)


def export_savedmodel(model: Any, signature: Signature, directory: Path) -> Path:
    """Write a SavedModel whose ``serving_default`` maps the input name to the output name."""
    tf = quiet_import("tensorflow")
    spec, output = signature.inputs[0], signature.outputs[0]
    dtype = tf.as_dtype(example_batch(spec).dtype)

    class ServingModule(tf.Module):  # type: ignore[name-defined]
        def __init__(self, keras_model: Any) -> None:
            super().__init__()
            self.model = keras_model

        @tf.function(input_signature=[tf.TensorSpec([None, *spec.shape[1:]], dtype, name=spec.name)])
        def serve(self, features: Any) -> dict[str, Any]:
            return {output.name: self.model(features, training=False)}

    module = ServingModule(model)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


def load_serving_signature(directory: Path) -> Any:
    """The exported ``serving_default`` signature, as TF Serving would call it."""
    tf = quiet_import("tensorflow")
    return tf.saved_model.load(str(directory)).signatures["serving_default"]


def predict_savedmodel(serving: Any, signature: Signature, features: np.ndarray) -> np.ndarray:
    tf = quiet_import("tensorflow")
    result = serving(**{signature.inputs[0].name: tf.constant(features)})
    return np.asarray(result[signature.outputs[0].name])
