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
* a cache folder (:func:`check_cache_dir`) may not be an input or an output,
  nor lie inside one (``--cache-dir`` the data folder or inside ``--out``);
* the first existing parent must be a folder in which a file can actually be
  created (a probe, so that a read-only file system or a path blocked by a
  file is found before a long fit, also when running as root);
* the target is claimed for this process (:func:`claim_output`, an exclusive
  ``flock`` that the kernel drops when the process ends): a second ephys2tx
  process, or a second command run in another thread of this process, writing
  the same location is refused.

Folders are then written through :func:`staged_output_dir` (a staging folder
renamed into place, see :func:`ephys2tx.io.staged_directory`), which writes
the marker and re-checks the target just before the swap. On Ctrl-C or
SIGTERM (:func:`interrupts_raise`) the staging folder is removed and the target
is left as it was.

Every refusal is an :class:`~ephys2tx.errors.InputError` with one line saying
what, where and how to fix it.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ephys2tx.errors import InputError

__all__ = ["MARKER", "check_cache_dir", "check_location", "check_output_dir", "check_output_file", "check_writable_dir",
           "claim_output", "interrupts_raise", "is_own_output", "read_marker", "release_claims",
           "release_output", "releases_claims", "staged_output_dir"]

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
    says yes to everything). A folder that nobody may write to (no ``w`` in
    its permissions, e.g. after ``chmod a-w``) is refused as well, also for
    root, who could write there: it was made read-only on purpose.

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
        mode = probe_in.stat().st_mode
    except OSError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode) and not mode & 0o222:
        raise InputError(f"cannot write {what} {named}: {probe_in} is not writable (read-only "
                         f"permissions {stat.filemode(mode)}); make it writable (chmod u+w) or "
                         "choose another location.")
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


def check_cache_dir(cache: PathLike, *, what: str, option: str = "--cache-dir",
                    outputs: Iterable = (), inputs: Iterable = (), hint: str = "") -> Path:
    """Check a cache folder before any work starts: outside every input and output, writable.

    A cache is refused when it is an input or lies inside an input folder (its
    entries would mix with the data, e.g. ``--cache-dir`` the data folder), and
    when it is an output folder or lies inside one (the next ``--overwrite``
    replaces the output whole, and the cache with it). A cache that holds an
    input or an output is allowed: its entries have names of their own.

    Parameters
    ----------
    cache : path-like
        The cache folder (it need not exist).
    what : str
        What the cache is, for the messages (e.g. ``fold cache (--cache-dir)``).
    option : str
        How the user named the folder.
    outputs, inputs : iterable of path-like
        The command's output locations and the files and folders it reads.
    hint : str
        Appended to the refusals (e.g. ``, or pass --no-cache``).

    Returns
    -------
    Path
        ``cache`` (``~`` expanded).

    Raises
    ------
    InputError
    """
    if str(cache).strip() == "":
        raise InputError(f"{option} is empty; give a folder{hint}.")
    path = Path(cache).expanduser()
    real = _resolved(path)
    for kind, items in (("input", inputs), ("output", outputs)):
        for item in items:
            if item is None or str(item).strip() == "":
                continue
            if _is_relative_to(real, _resolved(Path(item))):
                where = f"the {kind}" if real == _resolved(Path(item)) else f"inside the {kind} folder"
                raise InputError(f"{option} {path} is {where} {item}; a cache must lie outside the "
                                 f"data, the inputs and the outputs: choose another folder{hint}.")
    check_writable_dir(path, what=what)
    return path


def _checked_target(path: PathLike, option: str, inputs: Iterable) -> Path:
    """The location rules and the link rule shared by output folders and files."""
    path = Path(path).expanduser()
    _check_location(path, option=option, inputs=inputs, allow_inside_inputs=False)
    if path.is_symlink():
        raise InputError(f"{option} {path} is a symbolic link; ephys2tx does not replace links: "
                         "give the real path or a new one.")
    return path


@contextmanager
def _claimed_while_checking(path: Path, option: str) -> Iterator[None]:
    """Claim ``path`` (:func:`claim_output`) for the checks; a failed check gives a new claim back."""
    new = claim_output(path, option=option)
    try:
        yield
    except BaseException:
        if new:
            release_output(path)
        raise


def check_output_dir(path: PathLike, *, kind: str, overwrite: bool = False, option: str = "--out",
                     inputs: Iterable = (), has_overwrite: bool = True) -> Path:
    """Check an output folder before any work starts (see the module docstring).

    The folder is also claimed for this process (:func:`claim_output`): another
    ephys2tx process writing the same location is refused.

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
    path = _checked_target(path, option, inputs)
    with _claimed_while_checking(path, option):
        if path.exists():
            if not path.is_dir():
                raise InputError(f"{option} {path} is an existing file; ephys2tx never replaces a "
                                 "file it did not create: choose another path.")
            if not overwrite:
                hint = " or pass --overwrite" if has_overwrite else ""
                raise InputError(f"output {path} already exists; choose another path{hint}.")
            marker = read_marker(path)
            if marker is None:
                raise InputError(f"{option} {path} exists and was not written by ephys2tx (no "
                                 f"{MARKER} in it), so --overwrite does not replace it; choose "
                                 "another path or remove it yourself.")
            if marker.get("kind") != kind:
                raise InputError(f"{option} {path} holds ephys2tx {marker.get('kind')!r} output, "
                                 f"not {kind!r}; --overwrite replaces only output of the same kind: "
                                 "choose another path.")
        check_writable_dir(path.parent, what=option, target=path)
    return path


def check_output_file(path: PathLike, *, overwrite: bool = False, option: str = "--out",
                      inputs: Iterable = (), recognise: Callable[[Path], bool] | None = None,
                      written_by: str = "ephys2tx") -> Path:
    """Check an output file before any work starts, and claim it (:func:`claim_output`).

    With ``overwrite``, an existing file is replaced only if ``recognise(path)``
    says ephys2tx wrote it (e.g. a predictions table by its header).

    Raises
    ------
    InputError
    """
    path = _checked_target(path, option, inputs)
    with _claimed_while_checking(path, option):
        if path.exists():
            if path.is_dir():
                raise InputError(f"{option} {path} is a folder; give a file path, e.g. "
                                 f"{path / 'predictions.csv'}.")
            if not overwrite:
                raise InputError(f"output {path} already exists; choose another path or pass "
                                 "--overwrite.")
            if recognise is None or not recognise(path):
                raise InputError(f"{option} {path} exists and was not written by {written_by}, so "
                                 "--overwrite does not replace it; choose another path or remove "
                                 "it yourself.")
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

    try:
        with staged_directory(target, before_replace=recheck) as staging:
            yield staging
            write_marker(staging, kind, **details)
    finally:
        release_output(target)  # written (or given up): the location is free again


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

    closing = False

    def handler(signum, frame):
        if state["signum"] is not None:
            return
        state["signum"] = signum
        if not closing:  # once the block has ended the signal is only recorded
            raise Interrupted(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield state
    finally:
        closing = True
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


# --------------------------------------------------------------------------- output claims

#: Claims this process holds: resolved target -> ((owner pid, owner thread), lock file descriptor, lock path).
_CLAIMS: dict[str, tuple[tuple[int, int], int, Path]] = {}
_CLAIMS_LOCK = threading.Lock()


def _lock_folder() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"ephys2tx-locks-{uid}"


def _lock_dir() -> Path | None:
    """This user's folder of output locks (``$TMPDIR/ephys2tx-locks-<uid>``), or None if unusable.

    The locks live outside the output's folder, keyed by the resolved target, so
    that a target whose parent does not exist yet is claimed too, and nothing is
    left among the user's files (the folder is removed when its last lock is
    given back). A folder of that name that is not this user's own folder (a
    link, another owner) is not used.
    """
    uid = os.getuid() if hasattr(os, "getuid") else 0
    folder = _lock_folder()
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != uid):
        return None
    return folder


def lock_path(path: PathLike) -> Path:
    """The lock file of the claim on ``path`` (:func:`claim_output`); nothing is created."""
    key = str(_resolved(Path(path).expanduser()))
    return _lock_folder() / (hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
                             + ".lock")


def _holder(fd: int) -> str:
    """`` (pid N)`` from a lock file's content, or ``""``."""
    try:
        first = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    except OSError:
        return ""
    return f" (pid {first[0]})" if first and first[0].isdigit() else ""


def _owner() -> tuple[int, int]:
    """Who holds a claim: this process and thread (two commands run in threads of one process
    are two writers as much as two processes are)."""
    return os.getpid(), threading.get_ident()


def claim_output(path: PathLike, *, option: str = "--out") -> bool:
    """Claim an output location for this process, so that no other ephys2tx process writes it.

    The claim is an exclusive ``flock`` on a lock file named after the resolved
    ``path``: the kernel drops it when the process ends in any way (Ctrl-C,
    SIGKILL, a crash), so a lock left by a killed process never blocks. A
    location this thread of this process has claimed already is claimed again at
    no cost (commands check their outputs more than once); a claim held by another
    thread (a second command run in the same process) is refused like another
    process's. Claims are given back by
    :func:`release_output` / :func:`release_claims` (the CLI does at the end
    of every command) and at exit.

    Returns
    -------
    bool
        True if the claim is new, False if this process held it already (or
        the platform has no ``flock``).

    Raises
    ------
    InputError
        Another process holds the claim.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return False
    key = str(_resolved(Path(path).expanduser()))
    with _CLAIMS_LOCK:
        held = _CLAIMS.get(key)
        if held is not None and held[0] == _owner():
            return False
        if held is not None and held[0][0] == os.getpid():
            raise InputError(f"another ephys2tx command in this process (pid {os.getpid()}) is writing "
                             f"{option} {path} right now; wait until it has finished, or choose another path.")
        if _lock_dir() is None:
            return False
        lock = lock_path(key)
        for _ in range(10):
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                             | getattr(os, "O_CLOEXEC", 0), 0o600)
            except FileNotFoundError:  # the folder was removed by a process giving its last claim back
                if _lock_dir() is None:
                    return False
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _holder(fd)
                os.close(fd)
                raise InputError(f"another ephys2tx process{holder} is writing {option} {path} "
                                 "right now; wait until it has finished, or choose another path.")
            try:  # the previous holder may have removed the file between our open and flock
                if os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        else:  # pragma: no cover - a lock file replaced ten times in a row
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {key}\n".encode("utf-8", "surrogateescape"), 0)
        _CLAIMS[key] = (_owner(), fd, lock)
        return True


def release_output(path: PathLike) -> None:
    """Give back this process's claim on ``path`` (see :func:`claim_output`), if it holds one."""
    key = str(_resolved(Path(path).expanduser()))
    with _CLAIMS_LOCK:
        _release(key)


def _release(key: str, any_thread: bool = False) -> None:
    held = _CLAIMS.get(key)
    if held is None or held[0][0] != os.getpid():  # a forked child does not give back its parent's claims
        return
    if not any_thread and held[0] != _owner():  # another command's, running in another thread
        return
    del _CLAIMS[key]
    _, fd, lock = held
    try:
        os.unlink(lock)  # while still locked: a process waiting on this file sees it replaced
    except OSError:
        pass
    os.close(fd)
    try:
        lock.parent.rmdir()  # the last claim given back: nothing is left in the temporary folder
    except OSError:
        pass


def releases_claims(func: Callable) -> Callable:
    """Decorate a workflow so that the claims it takes are given back when it returns or fails.

    Claims the caller held before the call are kept.
    """
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with _CLAIMS_LOCK:
            before = {key for key, held in _CLAIMS.items() if held[0] == _owner()}
        try:
            return func(*args, **kwargs)
        finally:
            with _CLAIMS_LOCK:
                for key in set(_CLAIMS) - before:
                    _release(key)

    return wrapper


def release_claims(*, all_threads: bool = False) -> None:
    """Give back the claims this thread holds (end of a command), or with ``all_threads`` every
    claim of this process (exit)."""
    with _CLAIMS_LOCK:
        for key in list(_CLAIMS):
            _release(key, any_thread=all_threads)


atexit.register(release_claims, all_threads=True)
