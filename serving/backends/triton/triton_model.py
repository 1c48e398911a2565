"""Flywheel's Triton Python-backend entry: runs the packaged TorchScript model itself.

One entry for every task: it loads ``model.pt`` (exported by ``training/exports.py``) with torch
inside the Python backend, so a CNN needs no hand-written forward pass. Production Triton images
serve the same file with the native ``pytorch_libtorch`` backend instead (docs/architecture.md);
the ``tritonserver`` bundled here ships only the Python backend. Dynamic batching hands several
requests to one ``execute``; they are stacked and computed in one pass.
"""

import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

_TORCH_TYPES = {
    "TYPE_FP32": torch.float32,
    "TYPE_FP64": torch.float64,
    "TYPE_INT64": torch.int64,
    "TYPE_INT32": torch.int32,
}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.output_width = int(np.prod(config["output"][0]["dims"]))
        on_gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu")
        if not on_gpu:
            torch.set_num_threads(1)  # one instance per CPU; the server batches across requests
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.model = torch.jit.load(os.path.join(folder, "model.pt"), map_location=self.device).eval()
        # TorchScript optimises on its first calls: make them here, so the version reports ready
        # only once it answers at full speed (the first live request would otherwise pay for it).
        dtype = _TORCH_TYPES.get(config["input"][0]["data_type"], torch.float32)
        dims = [int(dim) for dim in config["input"][0]["dims"]]
        example = torch.zeros([2, *dims], dtype=dtype, device=self.device)
        with torch.no_grad():
            for _ in range(2):
                self.model(example)

    def execute(self, requests):
        inputs = [
            pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy() for request in requests
        ]
        if inputs:
            with torch.no_grad():
                batch = torch.from_numpy(np.concatenate(inputs)).to(self.device)
                outputs = self.model(batch).cpu().numpy().astype(np.float32)
        else:
            outputs = np.empty((0, self.output_width), np.float32)
        responses, offset = [], 0
        for array in inputs:
            tensor = pb_utils.Tensor(self.output_name, outputs[offset : offset + len(array)])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            offset += len(array)
        return responses
