"""Where the data directory is: ``--data-dir``, else ``EPHYS2TX_DATA``, else the user cache."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

ENV_VAR = "EPHYS2TX_DATA"


def default_data_dir() -> Path:
    """The per-user cache directory used when nothing else is given."""
    return Path(platformdirs.user_cache_dir("ephys2tx")) / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory without checking that it exists.

    Parameters
    ----------
    data_dir : path-like, optional
        Explicit directory (the CLI's ``--data-dir``). Takes precedence.

    Returns
    -------
    pathlib.Path
        ``data_dir`` if given, else ``$EPHYS2TX_DATA`` if set, else
        :func:`default_data_dir`.

    Raises
    ------
    InputError
        ``data_dir`` is neither None nor a path (a str or path-like).
    """
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        from ephys2tx.errors import InputError

        raise InputError(f"data_dir must be a path to the data folder (a str or pathlib.Path), got "
                         f"{type(data_dir).__name__} {data_dir!r:.60}.")
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    return default_data_dir()
