"""The feature contract shared by preprocessing, both trainers, every packaged artifact and the gateway.

One definition of the model's inputs and outputs: a window of ``WINDOW`` trading days, each with
the engineered features below, predicts the next day's simple return.
"""

from __future__ import annotations

from model_store.manifest import Signature, TensorSpec

#: Engineered per-day features, in the order they appear in the input tensor's last axis.
FEATURE_COLUMNS: tuple[str, ...] = (
    "return_1d",
    "log_return_1d",
    "return_mean_5d",
    "return_mean_20d",
    "volatility_5d",
    "volatility_20d",
    "volume_zscore_20d",
    "high_low_range",
)
TARGET_COLUMN = "target_next_return"
#: Trading days of history per prediction.
WINDOW = 10
INPUT_NAME = "features"
#: Rows per request; Triton's config.pbtxt is packaged with the same limit.
MAX_BATCH_SIZE = 256
OUTPUT_NAME = "prediction"
#: Yahoo-style CSV columns; "Adj Close" is optional.
REQUIRED_CSV_COLUMNS: tuple[str, ...] = ("Date", "Open", "High", "Low", "Close", "Volume")
OPTIONAL_CSV_COLUMNS: tuple[str, ...] = ("Adj Close",)


def model_signature() -> Signature:
    """The signature every backend serves: FP32 [batch, WINDOW, features] -> FP32 [batch, 1]."""
    return Signature(
        inputs=[TensorSpec(name=INPUT_NAME, datatype="FP32", shape=[-1, WINDOW, len(FEATURE_COLUMNS)])],
        outputs=[TensorSpec(name=OUTPUT_NAME, datatype="FP32", shape=[-1, 1])],
        max_batch_size=MAX_BATCH_SIZE,
    )
