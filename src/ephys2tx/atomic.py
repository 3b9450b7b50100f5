"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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
