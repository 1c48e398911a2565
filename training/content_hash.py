"""A content hash of a preprocessing output folder: equal when the data is, whatever wrote it.

Spark's Parquet files differ byte for byte between runs (part-file names, writer metadata, row
order across partitions), so the hash is over content: every Parquet dataset's rows, each as
canonical JSON with floats at 12 significant digits (sums in another partition order differ in
the last bits), sorted; and every JSON file, parsed and re-serialised with sorted keys.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

SIGNIFICANT_DIGITS = 12


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        return value if not math.isfinite(value) or value == 0 else float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):  # e.g. an image's pixels
        return bytes(value).hex()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _canonical(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def content_hash(folder: Path) -> str:
    """sha256 over the folder's Parquet rows and JSON documents (see the module docstring)."""
    import pandas as pd

    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.json")):
        document = _canonical(json.loads(path.read_text()))
        digest.update(
            f"{path.relative_to(folder)}\n{json.dumps(document, sort_keys=True, default=str)}\n".encode()
        )
    for dataset in sorted({path.parent for path in folder.rglob("*.parquet")}):
        frame = pd.read_parquet(dataset)
        rows = sorted(
            json.dumps(_canonical(row), sort_keys=True, default=str) for row in frame.to_dict("records")
        )
        digest.update(f"{dataset.relative_to(folder)}\n{len(rows)}\n".encode())
        for row in rows:
            digest.update(row.encode() + b"\n")
    return digest.hexdigest()
