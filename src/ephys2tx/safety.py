"""Never lose a user's files: output checks, ownership markers and interrupts.

Every command that writes checks all of its output locations with
:func:`check_output_dir` / :func:`check_output_file` *before* any work starts:

* an existing target is refused unless ``--overwrite`` is given;
* with ``--overwrite`` only an output that ephys2tx itself wrote is replaced:
  a folder that holds the marker file :data:`MARKER` (written into every output
  folder) of the same kind, or a file that a ``recognise`` function accepts
  (e.g. a predictions table by its header);
* a target that is the home folder, the current folder or one of their
  parents, the file system root, a symbolic link, an input, a folder holding
  an input, or a path inside an input folder is refused, even with
  ``--overwrite``;
* the first existing parent must be a folder in which a file can actually be
  created (a probe, so that a read-only file system or a path blocked by a
  file is found before a long fit, also when running as root).

Folders are then written through :func:`staged_output_dir` (a staging folder
renamed into place, see :func:`ephys2tx.io.staged_directory`), which writes
the marker and re-checks the target just before the swap. On Ctrl-C or
SIGTERM (:func:`interrupts_raise`) the staging folder is removed and the target
is left as it was.

Every refusal is an :class:`~ephys2tx.errors.InputError` with one line saying
what, where and how to fix it.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ephys2tx.errors import InputError

__all__ = ["MARKER", "check_location", "check_output_dir", "check_output_file", "check_writable_dir",
           "interrupts_raise", "is_own_output", "read_marker", "staged_output_dir"]

#: Marker file written into every output folder; ``--overwrite`` replaces only folders holding it.
MARKER = ".ephys2tx-output.json"

PathLike = str | os.PathLike


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser())).resolve(strict=False)


def _is_relative_to(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def read_marker(folder: PathLike) -> dict | None:
    """The marker of an ephys2tx output folder, or None (absent, unreadable or foreign)."""
    path = Path(folder) / MARKER
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 65536:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # unreadable, not UTF-8, not JSON, too deep
        return None
    return data if isinstance(data, dict) and data.get("created_by") == "ephys2tx" else None


def is_own_output(folder: PathLike, kind: str) -> bool:
    """Whether ``folder`` is an ephys2tx output folder of ``kind`` (by its marker)."""
    marker = read_marker(folder)
    return marker is not None and marker.get("kind") == kind


def write_marker(folder: Path, kind: str, **details) -> Path:
    """Write :data:`MARKER` (JSON: creator, kind, version, time, details) into ``folder``."""
    import ephys2tx

    record = {"created_by": "ephys2tx", "kind": kind, "version": ephys2tx.__version__,
              "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), **details}
    path = folder / MARKER
    path.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def check_writable_dir(folder: PathLike, *, what: str, target: PathLike | None = None) -> Path:
    """Check that files can be created in ``folder`` or, if absent, in its first existing parent.

    A probe folder is created and removed: this finds read-only file systems
    and permission problems also when running as root (where ``os.access``
    says yes to everything).

    Raises
    ------
    InputError
        A path component is a file, or the location is not writable.
    """
    folder = Path(folder).expanduser()
    named = folder if target is None else Path(target)
    probe_in = folder
    while not probe_in.exists() and not probe_in.is_symlink():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if probe_in.exists() and not probe_in.is_dir():
        raise InputError(f"cannot create {what} {named}: {probe_in} is a file, not a folder; "
                         "choose another location or move that file away.")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ephys2tx-probe-", dir=probe_in))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"cannot write {what} {named}: {probe_in} is not writable ({reason}); "
                         "choose a writable location.") from exc
    return folder


def _check_location(path: Path, *, option: str, inputs: Iterable, allow_inside_inputs: bool) -> Path:
    if str(path).strip() == "":
        raise InputError(f"{option} is empty; give a path.")
    real = _resolved(path)
    here, home = _resolved(Path.cwd()), _resolved(Path.home())
    for name, protected in (("the current folder", here), ("your home folder", home)):
        if _is_relative_to(protected, real):
            what = name if real == protected else f"a parent of {name}"
            raise InputError(f"{option} {path} is {what}; ephys2tx replaces an output whole and "
                             f"never writes there: give a new path such as {Path(path) / 'results'}.")
    if real.parent == real:
        raise InputError(f"{option} {path} is the file system root; give a new path.")
    for item in inputs:
        if item is None or str(item) == "":
            continue
        source = _resolved(Path(item))
        if real == source:
            raise InputError(f"{option} {path} is the input {item}; write the output elsewhere.")
        if _is_relative_to(source, real):
            raise InputError(f"{option} {path} contains the input {item}; writing there could "
                             "replace it: choose a path outside it.")
        if not allow_inside_inputs and Path(item).is_dir() and _is_relative_to(real, source):
            raise InputError(f"{option} {path} is inside the input folder {item}; write the "
                             "output outside it.")
    return real


def check_location(path: PathLike, *, option: str = "--out", inputs: Iterable = ()) -> Path:
    """Refuse an output location that is protected or touches an input (see the module docstring).

    Not the home or current folder or their parents, not the root, not an
    input, not a folder holding an input, not inside an input folder.

    Returns
    -------
    Path
        The resolved location.
    """
    return _check_location(Path(path).expanduser(), option=option, inputs=inputs,
                           allow_inside_inputs=False)


def check_output_dir(path: PathLike, *, kind: str, overwrite: bool = False, option: str = "--out",
                     inputs: Iterable = (), has_overwrite: bool = True) -> Path:
    """Check an output folder before any work starts (see the module docstring).

    Parameters
    ----------
    path : path-like
        The folder the command will create (or replace).
    kind : str
        What the folder holds (``study``, ``model``, ``mapping``, ...): with
        ``overwrite`` an existing folder is replaced only if its marker has
        this kind.
    overwrite : bool
        The user passed ``--overwrite``.
    option : str
        How the user named the path (for the messages).
    inputs : iterable of path-like
        Files and folders the command reads.
    has_overwrite : bool
        Whether the command has an ``--overwrite`` option (for the messages).

    Returns
    -------
    Path
        ``path`` (user spelling, ``~`` expanded).

    Raises
    ------
    InputError
    """
    path = Path(path).expanduser()
    _check_location(path, option=option, inputs=inputs, allow_inside_inputs=False)
    if path.is_symlink():
        raise InputError(f"{option} {path} is a symbolic link; ephys2tx does not replace links: "
                         "give the real path or a new one.")
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{option} {path} is an existing file; ephys2tx never replaces a file "
                             "it did not create: choose another path.")
        if not overwrite:
            hint = " or pass --overwrite" if has_overwrite else ""
            raise InputError(f"output {path} already exists; choose another path{hint}.")
        marker = read_marker(path)
        if marker is None:
            raise InputError(f"{option} {path} exists and was not written by ephys2tx (no {MARKER} "
                             "in it), so --overwrite does not replace it; choose another path or "
                             "remove it yourself.")
        if marker.get("kind") != kind:
            raise InputError(f"{option} {path} holds ephys2tx {marker.get('kind')!r} output, not "
                             f"{kind!r}; --overwrite replaces only output of the same kind: choose "
                             "another path.")
    check_writable_dir(path.parent, what=option, target=path)
    return path


def check_output_file(path: PathLike, *, overwrite: bool = False, option: str = "--out",
                      inputs: Iterable = (), recognise: Callable[[Path], bool] | None = None,
                      written_by: str = "ephys2tx") -> Path:
    """Check an output file before any work starts.

    With ``overwrite``, an existing file is replaced only if ``recognise(path)``
    says ephys2tx wrote it (e.g. a predictions table by its header).

    Raises
    ------
    InputError
    """
    path = Path(path).expanduser()
    _check_location(path, option=option, inputs=inputs, allow_inside_inputs=False)
    if path.is_symlink():
        raise InputError(f"{option} {path} is a symbolic link; ephys2tx does not replace links: "
                         "give the real path or a new one.")
    if path.exists():
        if path.is_dir():
            raise InputError(f"{option} {path} is a folder; give a file path, e.g. "
                             f"{path / 'predictions.csv'}.")
        if not overwrite:
            raise InputError(f"output {path} already exists; choose another path or pass --overwrite.")
        if recognise is None or not recognise(path):
            raise InputError(f"{option} {path} exists and was not written by {written_by}, so "
                             "--overwrite does not replace it; choose another path or remove it "
                             "yourself.")
    check_writable_dir(path.parent, what=option, target=path)
    return path


@contextmanager
def staged_output_dir(target: PathLike, kind: str, *, overwrite: bool = False,
                      option: str = "--out", **details) -> Iterator[Path]:
    """Build an output folder in a staging folder, then put it in place with its marker.

    Just before the swap the target is checked again (it may have appeared
    meanwhile): an existing folder is replaced only with ``overwrite`` and
    only if it is ephys2tx output of the same ``kind``.

    Yields
    ------
    Path
        The empty staging folder.
    """
    from ephys2tx.io import staged_directory

    target = Path(target).expanduser()

    def recheck() -> None:
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise InputError(f"{option} {target} appeared meanwhile as a file or link; it was not "
                             "replaced: choose another path.")
        if target.exists():
            if not overwrite:
                raise InputError(f"output {target} appeared meanwhile; choose another path or pass "
                                 "--overwrite.")
            if not is_own_output(target, kind):
                raise InputError(f"{option} {target} is not ephys2tx {kind!r} output (no matching "
                                 f"{MARKER}); it was not replaced: choose another path.")

    with staged_directory(target, before_replace=recheck) as staging:
        yield staging
        write_marker(staging, kind, **details)


# --------------------------------------------------------------------------- interrupts


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM received: unwinds like Ctrl-C, so every ``finally`` cleans up."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def interrupts_raise() -> Iterator[dict]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread, once.

    A second signal during the clean-up is ignored, so the clean-up of staged
    outputs runs to its end. Outside the main thread this does nothing.

    Yields
    ------
    dict
        ``{"signum": int or None}``: the first signal received.
    """
    state: dict = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if state["signum"] is not None:
            return
        state["signum"] = signum
        raise Interrupted(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
