"""Per-cell result cache: one pickle per cell, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path

CACHE_VERSION = 1


def cell_key(path: str | Path, settings: dict) -> str:
    """Key of a cell result: file identity (path, size, mtime) plus extraction settings."""
    path = Path(path).resolve()
    try:
        stat = path.stat()
        identity = [str(path), stat.st_size, stat.st_mtime_ns]
    except OSError:
        identity = [str(path), None, None]
    blob = json.dumps([CACHE_VERSION, identity, settings], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def write_atomic(cache_dir: Path, key: str, record: dict) -> Path:
    """Write ``record`` to ``cache_dir/key.pkl`` via a temporary file and ``os.replace``."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{key}.pkl"
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(record, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read(cache_dir: Path, key: str) -> dict | None:
    """Cached record or None (missing or unreadable entries count as missing)."""
    target = cache_dir / f"{key}.pkl"
    try:
        with open(target, "rb") as fh:
            return pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError):
        return None
