"""Replay before the canary: the packaged candidate answers the champion's captured traffic on a
real private Triton, and labels joined to that traffic can stop it before any live request."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from prometheus_client import CollectorRegistry

from model_store.labels import LabelStore, normalise_labels
from monitoring.join import LabelJoiner
from serving.gateway.capture import CaptureWriter
from tasks.fashion_mnist.data import select
from tests.pipeline_fixtures import CLASSIFIER, ClassifierRun
from training.replay import compare, step_replay


@pytest.fixture
def classifier(classifier_run: ClassifierRun) -> Iterator[ClassifierRun]:
    """The session's classifier, with whatever this test captures, labels and replays removed after:
    later runs of the same model must not train on or replay it."""
    yield classifier_run
    storage = classifier_run.store.storage
    run_id = classifier_run.base["ingest"]["snapshot_id"]
    for prefix in (f"capture/{CLASSIFIER}/", f"labels/{CLASSIFIER}/", f"joined/{CLASSIFIER}/",
                   f"runs/{CLASSIFIER}/{run_id}/replay/"):  # fmt: skip
        for key in list(storage.list_keys(prefix)):
            storage.delete(key)


def test_the_candidate_replays_captured_traffic_and_fails_on_worse_joined_labels(
    classifier: ClassifierRun,
) -> None:
    classifier_run = classifier
    store = classifier_run.store
    champion = store.aliases(CLASSIFIER)["champion"]
    with tempfile.TemporaryDirectory() as scratch:
        store.fetch(CLASSIFIER, champion, Path(scratch), prefix="torchscript/")
        scripted = torch.jit.load(str(Path(scratch) / "torchscript" / "model.pt")).eval()
    _, images, truth = select("test", 5000, 150)
    with torch.no_grad():
        answers = scripted(torch.as_tensor(images.astype(np.float32))).numpy()

    def capture(prefix: str, probabilities: np.ndarray) -> None:
        writer = CaptureWriter(store.storage, CollectorRegistry(), "gateway", 1.0)
        for number, image in enumerate(images):
            inputs = {"images": image[None].astype(np.float32)}
            answer = {"probabilities": probabilities[number : number + 1]}
            writer.offer(CLASSIFIER, champion, f"triton-v{champion}", "triton", f"{prefix}-{number}", inputs,
                         answer, 0.01, True, None)  # fmt: skip
        asyncio.run(writer.flush())

    capture("replay", answers)
    run_id = classifier_run.base["ingest"]["snapshot_id"]
    context = classifier_run.context(run_id)
    context.settings = classifier_run.settings.model_copy(
        update={"replay_min_requests": 100, "replay_requests": 150}
    )

    replayed = step_replay(context, force=True)
    assert replayed["passed"] and replayed["requests"] == 150 and replayed["server"] == "triton", replayed
    # v1's own package against v1's captured answers (TorchScript on Triton vs TorchScript in torch).
    assert replayed["disagreement"] <= 0.02 and replayed["psi_against_champion"] < 0.1, replayed
    assert "labelled" not in replayed, "no labels were joined yet"

    # Newer traffic that a perfect champion answered, and labels that came back for it: the
    # candidate is worse on the same labelled requests, so it never gets live traffic.
    capture("perfect", np.eye(10, dtype=np.float32)[truth])
    labels = pa.table({"request_id": [f"perfect-{n}" for n in range(150)], "label": truth})
    LabelStore(store.storage).write(CLASSIFIER, normalise_labels(labels, "cli"), "cli")
    LabelJoiner(store.storage).run(CLASSIFIER)
    failed = step_replay(context, force=True)
    assert not failed["passed"] and "joined labels" in failed["reasons"][0], failed
    assert failed["labelled"]["requests"] == 150 and failed["labelled"]["champion_accuracy"] == 1.0
    assert step_replay(context) == failed, "a recorded verdict is reused unless forced"


def test_the_comparison_fails_worse_labels_broken_outputs_and_answers_off_their_profile() -> None:
    champion = np.eye(3)[[0, 1, 2, 0, 1, 2] * 10]
    profile = {"prediction": {"frequencies": [1 / 3, 1 / 3, 1 / 3]}}
    same = compare(champion, champion, True, profile, np.array([0, 1, 2] * 10, float), np.arange(30))
    assert same["passed"] and same["disagreement"] == 0.0 and same["labelled"]["candidate_accuracy"] == 1.0
    shifted = np.eye(3)[[1, 2, 0, 0, 1, 2] * 10]
    worse = compare(shifted, champion, True, profile, np.array([0, 1, 2] * 10, float), np.arange(30))
    assert not worse["passed"] and "joined labels" in worse["reasons"][0] and worse["disagreement"] == 0.5
    piled = np.eye(3)[[0] * 60]
    off = compare(piled, champion, True, {"prediction": {"frequencies": [0.01, 0.49, 0.5]}}, None, None)
    assert not off["passed"] and "own validation profile" in off["reasons"][0]
    broken = compare(np.full((60, 3), np.nan), champion, True, profile, None, None)
    assert not broken["passed"] and "non-finite" in broken["reasons"][0]
    regression = compare(np.linspace(-1, 1, 50)[:, None], np.linspace(-1, 1, 50)[:, None] * 1.02, False,
                         {}, np.linspace(-1, 1, 50)[:25], np.arange(25))  # fmt: skip
    assert regression["passed"] and regression["disagreement"] == 0.0
