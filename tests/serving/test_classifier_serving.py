"""The image classifier, served through the same gateway as the forecaster, on all three servers.

Nothing in serving/ knows it is an image model: the gateway reads the signature, output kind and
class names from the manifest and the drift bins from profile.json.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tasks.fashion_mnist.data import select
from tests.pipeline_fixtures import CLASSIFIER, ClassifierRun
from tests.serving.gateway_fixtures import GatewayStack
from tests.serving.test_gateway import metric_value
from training.exports import load_serving_signature, predict_savedmodel

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    _, pixels, labels = select("test", 0, 16)
    return pixels.astype(np.float32), labels


@pytest.fixture(scope="module")
def reference(classifier_run: ClassifierRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """v1's own TorchScript and SavedModel, fetched (and verified) from the store."""
    folder: Path = tmp_path_factory.mktemp("classifier-v1")
    manifest = classifier_run.store.fetch(CLASSIFIER, 1, folder)
    return {
        "torch": torch.jit.load(str(folder / "torchscript" / "model.pt")).eval(),
        "tensorflow": load_serving_signature(folder / "savedmodel" / "1"),
        "manifest": manifest,
    }


def infer(stack: GatewayStack, images: np.ndarray, **extra: Any) -> Any:
    return stack.client.post(
        f"{stack.url}/v2/models/{CLASSIFIER}/infer",
        json={
            "inputs": [
                {
                    "name": "images",
                    "shape": list(images.shape),
                    "datatype": "FP32",
                    "data": images.ravel().tolist(),
                }
            ],
            **extra,
        },
    )


@pytest.mark.parametrize("backend", ["triton", "torchserve", "tfserving"])
def test_each_server_answers_class_probabilities(
    gateway_stack: GatewayStack,
    classifier_run: ClassifierRun,
    reference: dict[str, Any],
    images: tuple[np.ndarray, np.ndarray],
    backend: str,
) -> None:
    deployed = gateway_stack.admin(
        "POST",
        f"/deployments/{CLASSIFIER}/deploy",
        json={"version": 1, "backend": backend, "strategy": "single"},
    )
    assert deployed.status_code == 200, deployed.text
    pixels, labels = images
    response = infer(gateway_stack, pixels)
    assert response.status_code == 200, response.text
    assert response.headers["x-flywheel-backend"] == backend
    output = response.json()["outputs"][0]
    assert output["name"] == "probabilities" and output["shape"] == [16, 10]
    probabilities = np.asarray(output["data"], dtype=np.float32).reshape(16, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    if backend == "tfserving":
        expected = predict_savedmodel(reference["tensorflow"], reference["manifest"].signature, pixels)
    else:
        with torch.no_grad():
            expected = reference["torch"](torch.as_tensor(pixels)).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=TOLERANCE)
    assert float(np.mean(probabilities.argmax(axis=1) == labels)) >= 0.6

    torchserve_style = gateway_stack.client.post(
        f"{gateway_stack.url}/predictions/{CLASSIFIER}", json={"instances": pixels[:3].tolist()}
    )
    assert torchserve_style.status_code == 200, torchserve_style.text
    rows = torchserve_style.json()["predictions"]
    assert len(rows) == 3 and all(len(row) == 10 for row in rows), "a row of probabilities per image"
    np.testing.assert_allclose(rows, probabilities[:3], atol=TOLERANCE)

    metadata = gateway_stack.client.get(f"{gateway_stack.url}/v2/models/{CLASSIFIER}").json()
    assert metadata["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 28, 28]}]
    wrong = infer(gateway_stack, pixels[:, :14, :14])
    assert wrong.status_code == 400 and "[-1, 28, 28]" in wrong.text


def test_feedback_labels_are_class_indices_and_drift_bins_follow_the_profile(
    gateway_stack: GatewayStack, classifier_run: ClassifierRun, images: tuple[np.ndarray, np.ndarray]
) -> None:
    gateway_stack.admin(
        "POST",
        f"/deployments/{CLASSIFIER}/deploy",
        json={"version": 1, "backend": "triton", "strategy": "single"},
    )
    pixels, _ = images
    response = infer(gateway_stack, pixels[:1])
    assert response.status_code == 200, response.text
    predicted = int(np.argmax(response.json()["outputs"][0]["data"]))
    feedback = f"{gateway_stack.url}/v2/models/{CLASSIFIER}/feedback"
    hit = gateway_stack.client.post(
        feedback, json={"id": response.headers["x-request-id"], "label": predicted}
    )
    assert hit.status_code == 200 and hit.json()["reward"] == 1.0, hit.text
    missed = infer(gateway_stack, pixels[:1])
    wrong_class = (int(np.argmax(missed.json()["outputs"][0]["data"])) + 1) % 10
    miss = gateway_stack.client.post(
        feedback, json={"id": missed.headers["x-request-id"], "label": wrong_class}
    )
    assert miss.json()["reward"] == 0.0, "a classifier's label is right or wrong, not a direction"
    for bad in (3.5, 10, -1):
        third = infer(gateway_stack, pixels[:1])
        refused = gateway_stack.client.post(
            feedback, json={"id": third.headers["x-request-id"], "label": bad}
        )
        assert refused.status_code == 400 and "class index from 0 to 9" in refused.text, refused.text

    before = gateway_stack.metrics()
    assert infer(gateway_stack, pixels).status_code == 200
    after = gateway_stack.metrics()

    def counted(feature: str) -> float:
        labels_ = {"model": CLASSIFIER, "version": "1", "feature": feature}
        return metric_value(after, "flywheel_gateway_profile_bin_total", **labels_) - metric_value(
            before, "flywheel_gateway_profile_bin_total", **labels_
        )

    # drift_sample_rate is 1.0 in the test stack: every row lands in one bin of each entry.
    for feature in ("input_mean", "input_std", "confidence", "prediction"):
        assert counted(feature) == len(pixels), feature
    class_bins = {
        labels_["bin"]
        for line in after.splitlines()
        if line.startswith("flywheel_gateway_profile_bin_total{")
        and (labels_ := dict(re.findall(r'(\w+)="([^"]*)"', line)))["model"] == CLASSIFIER
        and labels_["feature"] == "prediction"
    }
    assert class_bins and {int(index) for index in class_bins} <= set(range(10)), "counted by class index"
