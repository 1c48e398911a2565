"""Per-image grey-level statistics as an Arrow-vectorised Spark UDF.

No ``from __future__ import annotations`` here: Spark reads the UDF's type hints at definition to
pick the vectorised evaluation, and needs them as real types.
"""

import numpy as np
import pandas as pd

from tasks.fashion_mnist.data import PIXELS


def image_statistics(pixels: pd.Series) -> pd.DataFrame:
    """Mean and standard deviation of each image's 784 grey levels."""
    images = np.frombuffer(b"".join(pixels), dtype=np.uint8).reshape(len(pixels), PIXELS).astype(np.float64)
    return pd.DataFrame({"input_mean": images.mean(axis=1), "input_std": images.std(axis=1)})


def image_statistics_udf():  # type: ignore[no-untyped-def]
    from pyspark.sql.functions import pandas_udf

    return pandas_udf(image_statistics, "input_mean double, input_std double")  # type: ignore[call-overload]
