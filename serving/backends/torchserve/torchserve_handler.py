"""Flywheel's batch-aware TorchServe handler for any TorchScript model with one input and one output.

TorchServe may hand several client requests to one ``handle`` call (server-side batching). Each
request body is JSON: ``{"instances": [...]}`` (TF Serving style), ``{"inputs": [...]}`` or a bare
list; one instance has the shape of the packaged ``signature.json``'s input without the batch
axis. Valid requests are stacked into one tensor and run through the TorchScript model once; a
malformed request gets HTTP 400 with the reason, and does not fail the others in its batch.
An output of one value per row comes back as a list of numbers, a wider one as a list of rows.
"""

import json
import os

import numpy as np
import torch


class SignatureHandler:
    def __init__(self):
        self.model = None
        self.device = torch.device("cpu")
        self.instance_shape = None
        self.initialized = False

    def initialize(self, context):
        properties = context.system_properties
        model_dir = properties.get("model_dir")
        if torch.cuda.is_available() and properties.get("gpu_id") is not None:
            self.device = torch.device(f"cuda:{properties.get('gpu_id')}")
        with open(os.path.join(model_dir, "signature.json")) as handle:
            signature = json.load(handle)
        self.instance_shape = tuple(signature["inputs"][0]["shape"][1:])
        serialized = context.manifest["model"]["serializedFile"]
        self.model = torch.jit.load(os.path.join(model_dir, serialized), map_location=self.device).eval()
        self.initialized = True

    def _parse(self, row):
        body = row.get("body") if row.get("body") is not None else row.get("data")
        if isinstance(body, (bytes, bytearray)):
            body = body.decode("utf-8")
        if isinstance(body, str):
            body = json.loads(body)
        instances = body.get("instances", body.get("inputs")) if isinstance(body, dict) else body
        if instances is None:
            raise ValueError('expected {"instances": [...]}, {"inputs": [...]} or a list of instances')
        array = np.asarray(instances, dtype=np.float32)
        if array.ndim == len(self.instance_shape):
            array = array[None]
        if array.shape[1:] != self.instance_shape:
            raise ValueError(
                f"each instance must be a {list(self.instance_shape)} array of numbers; got shape "
                f"{list(array.shape[1:]) if array.ndim > len(self.instance_shape) else list(array.shape)}"
            )
        if not np.isfinite(array).all():
            raise ValueError("instances must hold finite numbers")
        return array

    def handle(self, data, context):
        arrays, positions, responses = [], [], [None] * len(data)
        for index, row in enumerate(data):
            try:
                arrays.append(self._parse(row))
                positions.append(index)
            except (ValueError, TypeError, json.JSONDecodeError) as error:
                context.set_response_status(400, str(error), idx=index)
                responses[index] = {"error": str(error)}
        if arrays:
            batch = torch.from_numpy(np.concatenate(arrays)).to(self.device)
            with torch.no_grad():
                predictions = self.model(batch).cpu().numpy().reshape(len(batch), -1)
            if predictions.shape[1] == 1:
                predictions = predictions[:, 0]
            offset = 0
            for index, array in zip(positions, arrays, strict=True):
                responses[index] = {"predictions": predictions[offset : offset + len(array)].tolist()}
                offset += len(array)
        return responses


_service = SignatureHandler()


def handle(data, context):
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
