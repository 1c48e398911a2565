"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, landed in S3 as Parquet batches.

The IDX files (``/usr/share/datasets/fashion-mnist/``: 60,000 training and 10,000 test images,
28x28 grey levels, 10 classes) are read offline. A batch lands as one Parquet object under the
raw prefix with a row per labelled image: ``image_id`` (``train-000123``: source split and
index, so the same image never counts twice), ``label`` (class index) and ``pixels`` (784 bytes,
row-major). Ingest takes only batches no earlier snapshot took, as for the forecaster's CSVs.

Drift for the demo and the tests is injected here, on the images themselves: ``invert``
(negative), ``rotate`` (90 degrees), ``noise`` (Gaussian, sigma 64 grey levels), or a class-prior
shift (``classes``: keep only some classes), which is what a new camera, a new supplier or a new
season look like to a deployed classifier.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from model_store.names import validate_name

if TYPE_CHECKING:
    import pandas as pd

    from flywheel.settings import FlywheelSettings

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
SIDE = 28
PIXELS = SIDE * SIDE
Source = Literal["train", "test"]
Transform = Literal["none", "invert", "rotate", "noise"]
TRANSFORMS: tuple[str, ...] = ("none", "invert", "rotate", "noise")
_FILES = {"train": "train", "test": "t10k"}


class DatasetMissingError(FileNotFoundError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} is missing: Fashion-MNIST comes from the Debian package dataset-fashion-mnist, "
            "which `make setup` installs"
        )


def _read_idx(path: Path, magic: int) -> np.ndarray:
    if not path.exists():
        raise DatasetMissingError(path)
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(
            f"{path}: not an IDX file of the expected kind (magic {found:#x}, wanted {magic:#x})"
        )
    dimensions = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(magic & 0xFF)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dimensions)).reshape(dimensions)


def load_images(source: Source = "train", data_dir: Path = DATA_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 28, 28], labels uint8 [n]) of one of the package's two files."""
    prefix = _FILES[source]
    images = _read_idx(data_dir / f"{prefix}-images-idx3-ubyte.gz", 0x0803)
    labels = _read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz", 0x0801)
    if len(images) != len(labels):
        raise ValueError(f"{data_dir}: {len(images)} images but {len(labels)} labels")
    return images, labels


def transform_images(images: np.ndarray, transform: Transform, seed: int = 0) -> np.ndarray:
    """The drift injections: invert, rotate by 90 degrees, or add Gaussian noise (sigma 64)."""
    if transform == "none":
        return images
    if transform == "invert":
        return 255 - images
    if transform == "rotate":
        return np.rot90(images, k=1, axes=(1, 2)).copy()
    if transform == "noise":
        noisy = images.astype(np.float32) + np.random.default_rng(seed).normal(0.0, 64.0, images.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")


def select(
    source: Source, start: int, count: int, classes: Sequence[int] | None = None, data_dir: Path = DATA_DIR
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``count`` images from index ``start`` on (only ``classes`` when given): ids, images, labels."""
    images, labels = load_images(source, data_dir)
    indices = np.arange(len(images))[start:]
    if classes is not None:
        unknown = sorted(set(classes) - set(range(len(CLASS_NAMES))))
        if unknown:
            raise ValueError(f"unknown classes {unknown}; classes are 0-{len(CLASS_NAMES) - 1}")
        indices = indices[np.isin(labels[indices], list(classes))]
    indices = indices[:count]
    if len(indices) == 0:
        raise ValueError(f"no {source} images from index {start} on (the file has {len(images)})")
    return [f"{source}-{index:06d}" for index in indices], images[indices], labels[indices]


def batch_frame(image_ids: list[str], images: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    import pandas as pd

    flat = images.reshape(len(images), PIXELS)
    return pd.DataFrame(
        {"image_id": image_ids, "label": labels.astype(np.int64), "pixels": [row.tobytes() for row in flat]}
    )


def land_batch(
    settings: FlywheelSettings,
    batch: str,
    source: Source = "train",
    start: int = 0,
    count: int = 6000,
    transform: Transform = "none",
    classes: Sequence[int] | None = None,
    seed: int = 0,
) -> dict[str, object]:
    """Write one batch of labelled images to ``s3://<raw_bucket>/<raw_prefix>fashion/<batch>.parquet``."""
    from model_store.backends.s3 import s3_client

    validate_name(batch, kind="batch name")
    image_ids, images, labels = select(source, start, count, classes)
    if transform != "none":
        image_ids = [f"{image_id}-{transform}" for image_id in image_ids]
    frame = batch_frame(image_ids, transform_images(images, transform, seed), labels)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    key = f"{settings.raw_prefix}fashion/{batch}.parquet"
    s3_client(settings).put_object(Bucket=settings.raw_bucket, Key=key, Body=buffer.getvalue())
    return {
        "uri": f"s3://{settings.raw_bucket}/{key}",
        "images": len(frame),
        "transform": transform,
        "classes": sorted({int(label) for label in labels}),
        "bytes": buffer.getbuffer().nbytes,
    }
