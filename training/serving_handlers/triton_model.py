"""Flywheel's Triton Python-backend model for the next-day-return forecaster.

Runs the exported MLP (``weights.npz``: normalisation plus dense layers) with numpy alone, so it
loads in the CPU ``tritonserver`` bundled here and in the stock Triton image. Dynamic batching
hands several requests to one ``execute``; they are stacked and computed in one pass.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        folder = os.path.join(args["model_repository"], args["model_version"])
        with np.load(os.path.join(folder, "weights.npz")) as weights:
            self.weights = {key: weights[key].astype(np.float32) for key in weights.files}
        self.layers = sum(1 for key in self.weights if key.startswith("w"))

    def _forward(self, features):
        hidden = ((features - self.weights["mean"]) / self.weights["std"]).reshape(len(features), -1)
        for layer in range(self.layers):
            hidden = hidden @ self.weights[f"w{layer}"].T + self.weights[f"b{layer}"]
            if layer < self.layers - 1:
                hidden = np.maximum(hidden, 0.0)
        return hidden.astype(np.float32)

    def execute(self, requests):
        inputs = [
            pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy() for request in requests
        ]
        outputs = self._forward(np.concatenate(inputs)) if inputs else np.empty((0, 1), np.float32)
        responses, offset = [], 0
        for array in inputs:
            tensor = pb_utils.Tensor(self.output_name, outputs[offset : offset + len(array)])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            offset += len(array)
        return responses
