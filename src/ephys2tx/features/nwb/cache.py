"""Per-cell result cache: one pickle per cell, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

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


def replace_atomically(target: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``target`` through ``write(handle)`` into a temporary sibling, then ``os.replace`` it.

    Readers see either the old file or the complete new one, never a partial
    file; the temporary file is removed if ``write`` fails or is interrupted.

    Parameters
    ----------
    target : Path
        File to create or replace; its directory must exist.
    write : callable
        Called with a binary file handle open for writing.

    Returns
    -------
    Path
        ``target``.
    """
    target = Path(target)
    # A unique name opened with O_EXCL and mode 0666 (the umask applies, as for any new file).
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


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
