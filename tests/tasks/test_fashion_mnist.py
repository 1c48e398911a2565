"""The Fashion-MNIST task end to end: its data, its Spark job, its pipeline run and its retrain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.base import PreprocessError, RawDataError
from tasks.fashion_mnist.data import CLASS_NAMES, batch_frame, select, transform_images
from tasks.registry import get_task
from tests.pipeline_fixtures import CLASSIFIER, ClassifierRun

TASK = get_task("fashion_mnist")


def test_the_package_files_read_as_labelled_images() -> None:
    image_ids, images, labels = select("test", 0, 50)
    assert images.shape == (50, 28, 28) and images.dtype == np.uint8
    assert image_ids[0] == "test-000000" and set(labels) <= set(range(10))
    shifted_ids, _, shifted = select("train", 100, 40, classes=[1, 7])
    assert set(shifted) == {1, 7} and all(int(i.split("-")[1]) >= 100 for i in shifted_ids)
    with pytest.raises(ValueError, match="unknown classes"):
        select("train", 0, 1, classes=[12])


def test_drift_transforms_change_what_the_images_look_like() -> None:
    _, images, _ = select("test", 0, 200)
    assert np.array_equal(transform_images(images, "invert"), 255 - images)
    assert np.array_equal(transform_images(images, "rotate")[:, :, 0], images[:, 0, ::-1])
    noisy = transform_images(images, "noise", seed=1)
    assert noisy.dtype == np.uint8 and abs(float(noisy.std()) - float(images.std())) > 1.0
    with pytest.raises(ValueError, match="unknown transform"):
        transform_images(images, "blur")  # type: ignore[arg-type]


def _batch(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / name, index=False)
    return folder / name


def test_ingest_refuses_a_batch_that_is_not_labelled_images(tmp_path: Path) -> None:
    image_ids, images, labels = select("test", 0, 3)
    good = _batch(tmp_path, "good.parquet", batch_frame(image_ids, images, labels))
    TASK.check_raw(good, "s3://raw/good.parquet")
    no_pixels = _batch(tmp_path, "np.parquet", pd.DataFrame({"image_id": ["a"], "label": [1]}))
    with pytest.raises(RawDataError, match=r"s3://raw/np.parquet: schema mismatch: missing column pixels"):
        TASK.check_raw(no_pixels, "s3://raw/np.parquet")
    text_labels = _batch(
        tmp_path, "tl.parquet", pd.DataFrame({"image_id": ["a"], "label": ["Coat"], "pixels": [b"\0" * 784]})
    )
    with pytest.raises(RawDataError, match="label is string, expected an integer class index"):
        TASK.check_raw(text_labels, "tl.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(RawDataError, match=r"junk\.parquet: not a readable Parquet file"):
        TASK.check_raw(tmp_path / "junk.parquet", "junk.parquet")
    schema = pa.schema([("image_id", pa.string()), ("label", pa.int64()), ("pixels", pa.binary())])
    pq.write_table(schema.empty_table(), tmp_path / "empty.parquet")
    with pytest.raises(RawDataError, match="holds no images"):
        TASK.check_raw(tmp_path / "empty.parquet", "empty.parquet")


def test_the_spark_job_quarantines_splits_and_profiles(spark: Any, tmp_path: Path) -> None:
    image_ids, images, labels = select("train", 0, 600)
    good = batch_frame(image_ids, images, labels)
    bad = pd.DataFrame(
        {
            "image_id": ["short", "badlabel", None, image_ids[0]],
            "label": [1, 12, 3, int(labels[0])],
            "pixels": [b"\1" * 100, b"\1" * 784, b"\1" * 784, images[0].tobytes()],
        }
    )
    _batch(tmp_path / "raw", "a.parquet", good)
    _batch(tmp_path / "raw", "b.parquet", bad)
    report = TASK.preprocess(spark, tmp_path / "raw", tmp_path / "out")
    assert report["quarantine_reasons"] == {
        "not 784 pixel bytes": 1,
        "unknown label": 1,
        "missing image id": 1,
    }
    assert report["rows_valid"] == 600, "the duplicate id counts once"
    shares = {split: rows / 600 for split, rows in report["split_rows"].items()}
    assert shares["train"] == pytest.approx(0.8, abs=0.06) and shares["test"] == pytest.approx(0.1, abs=0.04)
    splits = TASK.load_splits(tmp_path / "out")
    assert splits["train"].features.shape[1:] == (28, 28) and splits["train"].features.dtype == np.float32
    assert float(splits["train"].features.max()) > 200, "clients send grey levels 0-255"
    normalisation = json.loads((tmp_path / "out" / "normalization.json").read_text())["pixels"]
    train = splits["train"].features
    assert normalisation["mean"] == pytest.approx(float(train.mean()), rel=1e-4)
    assert normalisation["std"] == pytest.approx(float(train.std()), rel=1e-3)
    profile = json.loads((tmp_path / "out" / "profile.json").read_text())
    assert profile["input_view"] == "row_stats" and list(profile["features"]) == ["input_mean", "input_std"]
    assert sum(profile["features"]["input_mean"]["frequencies"]) == pytest.approx(1.0)
    with pytest.raises(PreprocessError, match="no Parquet batches"):
        TASK.preprocess(spark, tmp_path / "nothing", tmp_path / "out2")


def test_first_classifier_beats_the_majority_class_and_records_its_task(
    classifier_run: ClassifierRun,
) -> None:
    store = classifier_run.store
    manifest = store.get_manifest(CLASSIFIER, 1)
    assert manifest.task == "fashion_mnist" and store.aliases(CLASSIFIER)["champion"] == 1
    assert manifest.output.kind == "classification" and manifest.output.class_names == list(CLASS_NAMES)
    assert [spec.shape for spec in manifest.signature.inputs] == [[-1, 28, 28]]
    assert [spec.shape for spec in manifest.signature.outputs] == [[-1, 10]]
    evaluation = classifier_run.base["evaluate"]
    assert evaluation["gate"]["passed"] and evaluation["gate"]["metric"] == "accuracy"
    for framework in ("pytorch", "tensorflow"):
        report = evaluation["candidate"][framework]
        assert report["accuracy"] > 0.7 > report["accuracy_naive"], report
    profile = json.loads(store.read_artifact(CLASSIFIER, 1, "profile.json"))
    assert profile["prediction"]["kind"] == "classes" and len(profile["prediction"]["frequencies"]) == 10
    assert len(profile["confidence"]["edges"]) >= 5
    paths = {artifact.path for artifact in manifest.artifacts}
    assert {
        f"torchserve/{CLASSIFIER}.mar",
        f"triton/{CLASSIFIER}/1/model.pt",
        "savedmodel/1/saved_model.pb",
    } <= paths


def test_cbpe_estimates_the_accuracy_of_held_out_images_from_their_confidences_alone(
    classifier_run: ClassifierRun,
) -> None:
    """The profile carries each confidence bin's validation accuracy; on test images the model never
    saw, the estimate from confidences alone lands near the accuracy their labels give."""
    from tasks.fashion_mnist.bench_case import drift_detection

    profile = json.loads(classifier_run.store.read_artifact(CLASSIFIER, 1, "profile.json"))
    accuracy = profile["confidence"]["accuracy"]
    assert len(accuracy) == len(profile["confidence"]["edges"]) + 1 and all(0 <= a <= 1 for a in accuracy)
    report = drift_detection(classifier_run.store, CLASSIFIER, 1, images=1000)
    clean = report["none"]
    assert abs(clean["estimate_error"]) < 0.06, clean
    # Fewer, harder classes: both the estimate and the truth move, and the estimate is still recorded.
    assert all(case["estimated_accuracy"] is not None for case in report.values())


def test_inverted_images_retrain_a_classifier_that_beats_the_champion(
    classifier_drifted_run: ClassifierRun,
) -> None:
    drifted = classifier_drifted_run.drifted
    assert drifted is not None and drifted["ingest"]["new_objects"] == 1, "only the new batch"
    evaluation = drifted["evaluate"]
    assert evaluation["gate"]["passed"], evaluation["gate"]["reasons"]
    assert evaluation["gate"]["champion_version"] == 1
    champion, candidate = evaluation["champion"]["pytorch"], evaluation["candidate"]["pytorch"]
    assert candidate["accuracy"] > champion["accuracy"] + 0.2, (candidate, champion)
    assert drifted["publish"]["version"] == 2


def test_batch_scoring_takes_unlabelled_images_and_keeps_their_reference(spark: Any, tmp_path: Path) -> None:
    """New images usually come without a label: scoring must take them (ingest for training must not)."""
    image_ids, images, _ = select("test", 100, 20)
    unlabelled = pd.DataFrame({"image_id": image_ids, "pixels": [image.tobytes() for image in images]})
    _batch(tmp_path / "raw" / "h1", "new.parquet", unlabelled)
    with pytest.raises(RawDataError, match="missing column label"):
        TASK.check_raw(tmp_path / "raw" / "h1" / "new.parquet", "new.parquet")
    keys, inputs = TASK.scoring_inputs(spark, tmp_path / "raw")
    assert list(keys.columns) == ["image_id", "source"] and len(keys) == 20
    assert set(keys["source"]) == {"h1/new.parquet"}, "the path batch scoring maps to the S3 object"
    assert inputs.shape == (20, 28, 28) and inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs[keys["image_id"].tolist().index(image_ids[0])], images[0])
