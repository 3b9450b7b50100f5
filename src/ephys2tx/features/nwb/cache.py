"""Per-cell result cache: one pickle per cell, written atomically."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

from ephys2tx.atomic import replace_atomically

__all__ = ["CACHE_VERSION", "cell_key", "read", "write_atomic"]

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
    """Write ``record`` to ``cache_dir/key.pkl`` atomically (see :func:`replace_atomically`)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    return replace_atomically(cache_dir / f"{key}.pkl",
                              lambda fh: pickle.dump(record, fh, protocol=pickle.HIGHEST_PROTOCOL))


def read(cache_dir: Path, key: str) -> dict | None:
    """Cached record or None (missing or unreadable entries count as missing)."""
    target = cache_dir / f"{key}.pkl"
    try:
        with open(target, "rb") as fh:
            return pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError):
        return None
