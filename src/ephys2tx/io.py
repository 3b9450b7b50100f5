"""File input/output shared by every layer: checksums and atomic writers.

Every file ephys2tx writes goes through one of these writers: a reader sees
the old file or the complete new one, never a partial one. (A leaf module:
it imports nothing of ephys2tx; pandas/pyarrow are imported where used.)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 16


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


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
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # e.g. a full disk while writing: name the file the user asked for
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


@contextmanager
def staged_directory(target: str | os.PathLike, *,
                     before_replace: Callable[[], None] | None = None) -> Iterator[Path]:
    """An empty folder beside ``target`` that replaces ``target`` whole when the block succeeds.

    Build the new content inside the yielded folder. When the ``with`` block
    ends without error, an existing ``target`` is moved aside, the new folder
    is renamed into place and the old one deleted; on any error (or an
    interrupt) the new folder is deleted and ``target`` is left as it was.

    Parameters
    ----------
    target : path-like
        Folder to create or replace; its parent is created if needed.
    before_replace : callable, optional
        Called after the block, just before the swap; an exception it raises
        leaves ``target`` as it was (e.g. a last check that the target may be
        replaced, see :func:`ephys2tx.safety.staged_output_dir`).

    Yields
    ------
    Path
        The staging folder, on the same file system as ``target``.
    """
    target = Path(target)
    created = _make_parents(target)
    done = False
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
        content = staging / "content"
        try:
            content.mkdir()  # the umask applies, as for any new folder (mkdtemp's is private)
            yield content
            if before_replace is not None:
                before_replace()
            if target.exists():
                os.replace(target, staging / "previous")
            os.replace(content, target)
            done = True
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if not done:
            _remove_empty(created)


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parent folders of ``path``; return those created, outermost first."""
    created = [p for p in reversed(path.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(created: list[Path]) -> None:
    """Remove folders made for an output that was not written (innermost first, if still empty)."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            pass


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return replace_atomically(Path(path), lambda handle: handle.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def write_json(path: str | os.PathLike, data, *, indent: int | None = 2) -> Path:
    """Write ``data`` as UTF-8 JSON (numpy scalars and arrays as plain values), atomically."""
    text = json.dumps(data, indent=indent, default=_json_default, ensure_ascii=False)
    return write_text(path, text)


def write_csv(frame, path: str | os.PathLike) -> Path:
    """Write a DataFrame (without its index) as a UTF-8 CSV, atomically; missing values are empty."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    path = Path(path)
    created = _make_parents(path)
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        return replace_atomically(path, lambda handle: pa_csv.write_csv(
            table, handle, pa_csv.WriteOptions(quoting_style="needed")))
    except BaseException:
        _remove_empty(created)  # folders made for this file only: nothing half-written stays
        raise
