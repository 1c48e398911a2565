"""Folders a Spark job reads and writes, named by a plain path, ``file://``, ``s3a://`` or ``s3://``.

A task's Spark job works on local folders (it writes its JSON reports beside Spark's Parquet), so
object-store locations are copied through Hadoop's FileSystem API: in before the job, out after
it. That is the cluster's S3 connector (``hadoop-aws`` and the AWS SDK bundle on the classpath);
none is installed here (Maven is unreachable), so such a location fails with a message that says
which jars a cluster brings, before any work starts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

S3A_FILESYSTEM = "org.apache.hadoop.fs.s3a.S3AFileSystem"
OBJECT_STORE_SCHEMES = {"s3", "s3a"}


class LocationError(ValueError):
    """A location the job cannot use, with what to do about it."""


def local_folder(location: str) -> Path | None:
    """The folder a plain path or ``file://`` URI names; None for an object-store location."""
    parts = urlsplit(location)
    if not parts.scheme:
        return Path(location)
    if parts.scheme == "file":
        # file:///abs is absolute; file://rel/path is relative, as FLYWHEEL_STORE_URI reads it.
        host = "" if parts.netloc in ("", "localhost") else parts.netloc
        return Path(host + parts.path) if host else Path(parts.path)
    if parts.scheme in OBJECT_STORE_SCHEMES:
        if not parts.netloc:
            raise LocationError(f"{location!r} names no bucket: use s3a://BUCKET/PREFIX")
        return None
    raise LocationError(f"unsupported location {location!r}: use a path, file://, s3a:// or s3://")


def hadoop_uri(location: str) -> str:
    """Hadoop's name for a location: ``s3://`` is read through the S3A connector."""
    return "s3a://" + location.removeprefix("s3://") if location.startswith("s3://") else location


def require_s3a(spark: Any, location: str) -> None:
    """Fail clearly when Hadoop finds no filesystem for the location's scheme.

    Asked through Hadoop's own lookup, which sees the jars Spark added (``spark.jars``,
    ``--packages``), unlike a bare ``Class.forName`` from py4j's class loader.
    """
    jvm = spark.sparkContext._jvm
    try:
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(urlsplit(hadoop_uri(location)).scheme, conf)
    except Exception as error:  # py4j wraps the JVM's UnsupportedFileSystemException
        raise LocationError(
            f"{location} needs Spark's S3 connector, which this Spark lacks ({S3A_FILESYSTEM} is not on "
            "the classpath). A cluster brings org.apache.hadoop:hadoop-aws matching its Hadoop version and "
            "com.amazonaws/software.amazon.awssdk bundle jars (spark.jars or its image); or stage the folder "
            "yourself and pass a path both the driver and the executors reach"
        ) from error


def _copy(spark: Any, source: str, destination: str) -> None:
    """Copy a folder so that ``destination`` becomes it: an existing destination is replaced (a
    copy into an existing folder would nest, and leave stale files of an earlier run)."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    source_path = jvm.org.apache.hadoop.fs.Path(source)
    destination_path = jvm.org.apache.hadoop.fs.Path(destination)
    try:
        source_fs, destination_fs = source_path.getFileSystem(conf), destination_path.getFileSystem(conf)
        if not source_fs.exists(source_path):
            raise LocationError(f"{source} does not exist")
        destination_fs.delete(destination_path, True)
        jvm.org.apache.hadoop.fs.FileUtil.copy(
            source_fs, source_path, destination_fs, destination_path, False, True, conf
        )
    except LocationError:
        raise
    except Exception as error:  # py4j: the JVM's IOException, with Hadoop's message
        raise LocationError(f"copying {source} to {destination} failed: {str(error)[:500]}") from error


@contextmanager
def staged_folders(
    spark: Any, input_location: str, output_location: str, staging_dir: str | None = None
) -> Iterator[tuple[Path, Path]]:
    """(input folder, output folder) on local disk; object-store ones are copied in and out."""
    input_dir, output_dir = local_folder(input_location), local_folder(output_location)
    for location, folder in ((input_location, input_dir), (output_location, output_dir)):
        if folder is None:
            require_s3a(spark, location)
    if input_dir is not None and output_dir is not None:
        yield input_dir, output_dir
        return
    with tempfile.TemporaryDirectory(prefix="flywheel-staging-", dir=staging_dir) as scratch:
        staged_input = input_dir or Path(scratch) / "input"
        staged_output = output_dir or Path(scratch) / "output"
        if input_dir is None:
            _copy(spark, hadoop_uri(input_location), f"file://{staged_input}")
        yield staged_input, staged_output
        if output_dir is None:
            _copy(spark, f"file://{staged_output}", hadoop_uri(output_location))
