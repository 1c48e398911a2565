"""From the preprocessed Parquet to model-ready arrays: FP32 grey levels [n, 28, 28] -> class index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.base import Split
from tasks.fashion_mnist.data import PIXELS, SIDE

SPLITS = ("train", "validation", "test")


def images_of(pixels: pd.Series) -> np.ndarray:
    """Pixel byte strings -> FP32 grey levels [n, 28, 28] (0-255, what clients send)."""
    flat = np.frombuffer(b"".join(pixels), dtype=np.uint8).reshape(len(pixels), PIXELS)
    return flat.reshape(len(pixels), SIDE, SIDE).astype(np.float32)


def make_splits(frame: pd.DataFrame) -> dict[str, Split]:
    result = {}
    for split in SPLITS:
        rows = frame[frame["split"] == split]
        if rows.empty:
            raise ValueError(f"the {split} split has no images")
        result[split] = Split(images_of(rows["pixels"]), rows["label"].to_numpy(dtype=np.int64))
    return result


def load_splits(preprocess_dir: Path) -> dict[str, Split]:
    frame = pd.read_parquet(preprocess_dir / "features", columns=["image_id", "label", "split", "pixels"])
    return make_splits(frame.sort_values("image_id").reset_index(drop=True))


def subsample(split: Split, limit: int, seed: int) -> Split:
    """At most ``limit`` examples, a seeded draw in the original order."""
    if len(split) <= limit:
        return split
    keep = np.sort(np.random.default_rng(seed).choice(len(split), size=limit, replace=False))
    return Split(split.features[keep], split.target[keep])
