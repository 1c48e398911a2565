"""Spark preprocessing for Fashion-MNIST batches: check, quarantine, de-duplicate, split, profile.

Stages, all in one Spark job over the snapshot's Parquet batches:

1. **Read and check.** Every batch must carry ``image_id``, ``label`` and ``pixels``. Rows with a
   missing id, a label outside the classes or not 784 pixel bytes go to ``quarantine/`` with a
   reason and their source file; they are counted, never fatal. An image id seen twice keeps one.
2. **Image statistics** per image (Arrow-vectorised ``pandas_udf``): mean and standard deviation
   of its grey levels, cheap inputs the drift monitor bins next to the model's confidence.
3. **Split** by a hash of the image id: 80 % train, 10 % validation, 10 % test, stable across runs.
4. **Normalisation**: the train images' pixel mean and standard deviation (the models carry them).
5. **Profile** for drift: the image statistics' train deciles (``input_view: row_stats``, which the
   gateway computes from any input tensor without knowing it holds images).
6. **Parquet** out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tasks.base import PreprocessError, RawDataError
from tasks.fashion_mnist.data import CLASS_NAMES, PIXELS
from training.profiles import spark_feature_profile

IMAGE_STATISTICS = ("input_mean", "input_std")
REQUIRED_COLUMNS = {"image_id": "string", "label": "int64", "pixels": "binary"}
TRAIN_SHARE, VALIDATION_SHARE = 80, 10
PROFILE_BINS = 10


def check_parquet_batch(path: Path, source: str, labelled: bool = True) -> None:
    """Refuse a batch that is not Parquet, lacks a column, or holds no row (ingest's check).

    ``labelled=False`` (batch scoring): the ``label`` column may be missing; new images usually
    arrive without one, and they are what labeling wants.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise RawDataError(f"{source}: not a readable Parquet file ({error})") from None
    schema = metadata.schema_arrow
    problems = []
    for name, kind in REQUIRED_COLUMNS.items():
        if name not in schema.names:
            if name != "label" or labelled:
                problems.append(f"missing column {name}")
        elif kind == "binary" and not pa.types.is_binary(schema.field(name).type):
            problems.append(f"{name} is {schema.field(name).type}, expected binary (784 bytes)")
        elif kind == "int64" and not pa.types.is_integer(schema.field(name).type):
            problems.append(f"{name} is {schema.field(name).type}, expected an integer class index")
    if problems:
        raise RawDataError(
            f"{source}: schema mismatch: {'; '.join(problems)}; a Fashion-MNIST batch has columns "
            "image_id (string), label (integer) and pixels (784 bytes, row-major 28x28)"
        )
    if metadata.metadata.num_rows == 0:
        raise RawDataError(f"{source}: the batch holds no images")


def _batch_files(input_dir: Path, labelled: bool = True) -> list[Path]:
    files = sorted(path for path in input_dir.rglob("*") if path.is_file() and path.suffix == ".parquet")
    if not files:
        raise PreprocessError(f"{input_dir}: the snapshot holds no Parquet batches")
    for path in files:
        try:
            check_parquet_batch(path, str(path.relative_to(input_dir)), labelled)
        except RawDataError as error:
            raise PreprocessError(str(error)) from None
    return files


def parse_and_clean(spark: Any, input_dir: Path, labelled: bool = True) -> tuple[Any, Any]:
    """(clean rows, quarantined rows with a ``reason``) from every batch below ``input_dir``.

    ``labelled=False`` (batch scoring) takes images with or without a label and checks no label.
    """
    from pyspark.sql import functions as F

    frames = []
    for path in _batch_files(input_dir, labelled):
        batch = spark.read.parquet(str(path))
        label = F.col("label") if "label" in batch.columns else F.lit(None)
        frames.append(
            batch.select(
                F.col("image_id").cast("string"),
                label.cast("long").alias("label"),
                F.col("pixels"),
                F.lit(str(path.relative_to(input_dir))).alias("source_file"),
            )
        )
    raw = frames[0]
    for frame in frames[1:]:
        raw = raw.unionByName(frame)
    unknown_label = F.col("label").isNull() | (F.col("label") < 0) | (F.col("label") >= len(CLASS_NAMES))
    reason = (
        F.when(F.col("image_id").isNull() | (F.trim("image_id") == ""), F.lit("missing image id"))
        .when(F.col("pixels").isNull() | (F.length("pixels") != PIXELS), F.lit(f"not {PIXELS} pixel bytes"))
        .when(unknown_label & F.lit(labelled), F.lit("unknown label"))
    )
    checked = raw.withColumn("reason", reason).cache()
    quarantined = checked.where(F.col("reason").isNotNull()).select(
        "source_file", "image_id", "label", "reason"
    )
    clean = checked.where(F.col("reason").isNull()).drop("reason").dropDuplicates(["image_id"])
    return clean, quarantined


def hash_split(frame: Any) -> Any:
    from pyspark.sql import functions as F

    bucket = F.pmod(F.xxhash64("image_id"), F.lit(100))
    split = (
        F.when(bucket < TRAIN_SHARE, F.lit("train"))
        .when(bucket < TRAIN_SHARE + VALIDATION_SHARE, F.lit("validation"))
        .otherwise(F.lit("test"))
    )
    return frame.withColumn("split", split)


def run_preprocess(spark: Any, input_dir: Path, output_dir: Path) -> dict[str, Any]:
    """The whole job: batches under ``input_dir`` -> Parquet, quarantine and JSON under ``output_dir``."""
    from pyspark.sql import functions as F

    output_dir.mkdir(parents=True, exist_ok=True)
    clean, quarantined = parse_and_clean(spark, input_dir)
    reasons = {row["reason"]: row["count"] for row in quarantined.groupBy("reason").count().collect()}
    quarantined.coalesce(1).write.mode("overwrite").parquet(str(output_dir / "quarantine"))
    from tasks.fashion_mnist.image_statistics import image_statistics_udf

    statistics = image_statistics_udf()
    images = hash_split(clean.withColumn("stats", statistics("pixels")).select("*", "stats.*").drop("stats"))
    images = images.cache()
    split_rows = {row["split"]: row["count"] for row in images.groupBy("split").count().collect()}
    missing = [split for split in ("train", "validation", "test") if not split_rows.get(split)]
    if missing:
        raise PreprocessError(
            f"{sum(split_rows.values())} valid images leave the {', '.join(missing)} split(s) empty; "
            f"land more images ({sum(reasons.values())} were quarantined: {reasons or 'none'})"
        )
    train = images.where(F.col("split") == "train")
    moments = train.agg(
        F.avg("input_mean").alias("mean"),
        F.avg(F.col("input_std") ** 2 + F.col("input_mean") ** 2).alias("square"),
    ).first()
    mean = float(moments["mean"])
    normalisation = {
        "pixels": {"mean": mean, "std": max(math.sqrt(max(moments["square"] - mean**2, 0.0)), 1e-6)}
    }
    profile = spark_feature_profile(train, IMAGE_STATISTICS, PROFILE_BINS)
    labels = {int(row["label"]): row["count"] for row in train.groupBy("label").count().collect()}
    images.select("image_id", "label", "split", "pixels", *IMAGE_STATISTICS).orderBy("image_id").coalesce(
        1
    ).write.mode("overwrite").parquet(str(output_dir / "features"))
    (output_dir / "normalization.json").write_text(json.dumps(normalisation, indent=2))
    (output_dir / "profile.json").write_text(
        json.dumps({"input_view": "row_stats", "bins": PROFILE_BINS, "features": profile}, indent=2)
    )
    valid = sum(split_rows.values())
    report = {
        "rows_in": valid + sum(reasons.values()),
        "rows_valid": valid,
        "rows_quarantined": sum(reasons.values()),
        "quarantine_reasons": reasons,
        "split_rows": split_rows,
        "train_class_counts": {CLASS_NAMES[label]: count for label, count in sorted(labels.items())},
    }
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    images.unpersist()
    return report
