"""Per-cell result cache: one ``.npz`` file per cell (arrays + a JSON header), written atomically.

The cache is data, never code: entries are read with ``numpy.load(...,
allow_pickle=False)`` (only plain numeric and string arrays), so a file planted
in a shared cache cannot run code.  An entry that is unreadable, truncated or
malformed is treated as missing: the cell is extracted again and the entry
replaced.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from ephys2tx.io import replace_atomically

__all__ = ["CACHE_VERSION", "SUFFIX", "cell_key", "read", "write_atomic"]

CACHE_VERSION = 2
SUFFIX = ".npz"
_STATUSES = ("ok", "failed")


def cell_key(path: str | Path, settings: dict) -> str:
    """Key of a cell result: file identity (path, size, mtime) plus extraction settings.

    The path is made absolute but symbolic links are not resolved: two links
    to one file are two cells (with their own ids), each with its own entry.
    """
    path = Path(os.path.abspath(path))
    try:
        stat = path.stat()
        identity = [str(path), stat.st_size, stat.st_mtime_ns]
    except (OSError, RuntimeError):
        identity = [str(path), None, None]
    blob = json.dumps([CACHE_VERSION, identity, settings], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _json_float(value: float):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def write_atomic(cache_dir: Path, key: str, record: dict) -> Path:
    """Write ``record`` to ``cache_dir/<key>.npz`` atomically (see :func:`replace_atomically`).

    ``record`` has ``cell_id``, ``path``, ``status`` (``"ok"``/``"failed"``),
    ``reason`` and, for ``"ok"``, ``vectors`` (name -> 1-d array), ``summary``
    (name -> float) and ``layout``.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    vectors = record.get("vectors") or {}
    header = {
        "version": CACHE_VERSION,
        "cell_id": str(record["cell_id"]), "path": str(record["path"]),
        "status": record["status"], "reason": str(record.get("reason", "")),
        "layout": record.get("layout"),
        "notes": [str(n) for n in record.get("notes") or []],
        "families": list(vectors),
        "summary": {k: _json_float(v) for k, v in (record.get("summary") or {}).items()},
    }
    arrays = {f"v{k}": np.asarray(v, dtype=np.float64).ravel() for k, v in enumerate(vectors.values())}
    arrays["header"] = np.array(json.dumps(header, allow_nan=False))
    return replace_atomically(cache_dir / f"{key}{SUFFIX}", lambda fh: np.savez(fh, **arrays))


def read(cache_dir: Path, key: str) -> dict | None:
    """Cached record, or None when missing, unreadable or malformed (the cell is then recomputed)."""
    target = Path(cache_dir) / f"{key}{SUFFIX}"
    try:
        with np.load(target, allow_pickle=False) as data:
            header = json.loads(str(data["header"][()]))
            if header.get("version") != CACHE_VERSION or header.get("status") not in _STATUSES:
                return None
            families = header["families"]
            vectors = {}
            for k, name in enumerate(families):
                array = data[f"v{k}"]
                if array.dtype != np.float64 or array.ndim != 1:
                    return None
                vectors[str(name)] = array
            summary = {str(k): float("nan") if v is None else float(v) for k, v in header["summary"].items()}
            record = {"cell_id": str(header["cell_id"]), "path": str(header["path"]), "status": header["status"],
                      "reason": str(header["reason"]), "layout": header.get("layout"),
                      "notes": [str(n) for n in header.get("notes") or []]}
            if header["status"] == "ok":
                record.update(vectors=vectors, summary=summary)
            return record
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError):
        return None
