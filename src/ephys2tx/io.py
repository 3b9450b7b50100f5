"""File input/output shared by every layer: checksums and atomic writers.

Every file ephys2tx writes goes through one of these writers: a reader sees
the old file or the complete new one, never a partial one. It also reads the
YAML configuration files (column maps, protocol maps) through one strict
reader, :func:`read_yaml`. (A leaf module: it imports nothing of ephys2tx but
``errors``; pandas/pyarrow/yaml are imported where used.)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
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
    # A unique name opened with O_EXCL and mode 0666 (the umask applies, as for any new file);
    # the name is _TEMPORARY's, by which remove_stale_temporaries knows it.
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


#: The name of :func:`replace_atomically`'s temporary file: ``.<target name>.<pid>.<12 hex>.tmp``.
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.(?P<pid>[0-9]+)\.[0-9a-f]{12}\.tmp")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0 only checks
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # another user's process, or not a pid here
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, *, target: str | None = None,
                             suffix: str = "") -> list[Path]:
    """Remove the temporary files :func:`replace_atomically` left behind in a killed process.

    A process killed while writing (``SIGKILL``, a power cut) cannot remove its
    temporary sibling of the target. Only regular files named exactly as
    :func:`replace_atomically` names them (``.<target>.<pid>.<12 hex digits>.tmp``)
    whose process no longer runs on this machine are removed; nothing else is
    touched, and a file of a process that still runs (or of another user) is kept.

    Parameters
    ----------
    folder : path-like
        The folder of the targets.
    target : str, optional
        Only the temporaries of this target name.
    suffix : str
        Only the temporaries of targets whose name ends with ``suffix``.

    Returns
    -------
    list of Path
        The files removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.name.endswith(".tmp")]
    except OSError:  # no folder (yet), or not readable: nothing of ours to remove
        return removed
    for name in names:
        match = _TEMPORARY.fullmatch(name)
        if match is None or (target is not None and match["target"] != target) \
                or not match["target"].endswith(suffix) or _process_alive(int(match["pid"])):
            continue
        path = folder / name
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                path.unlink()
                removed.append(path)
        except OSError:  # gone meanwhile, or not ours to remove
            pass
    return removed


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


# ------------------------------------------------------------------ YAML configuration files

#: A configuration file (column map, protocol map) larger than this is refused before parsing:
#: the shipped 93-entry map is about 10 kB; a 50 MB file takes most of a minute to parse.
MAX_YAML_BYTES = 1 << 20

# YAML 1.2 floats with an exponent (``1e-3``, ``1.3e1``, ``1E6``): PyYAML (YAML 1.1) wants a dot
# and a signed exponent, else reads them as strings, so ``scale: 1e-3`` would be the text '1e-3'.
_FLOAT_EXPONENT = r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"


@functools.cache
def _yaml_loader():
    """A safe YAML loader class that refuses repeated keys, anchors/aliases and merge keys."""
    import re

    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: 10x faster

    class Loader(base):
        def construct_document(self, node):
            seen, stack = set(), [node]
            while stack:  # an alias is a node reached twice (``*name``): refused, see read_yaml
                current = stack.pop()
                if id(current) in seen:
                    raise _YamlRefused("uses a YAML anchor and alias (&name ... *name) for the value "
                                       "that starts here", current.start_mark,
                                       "write the value out wherever it is needed")
                seen.add(id(current))
                if isinstance(current, yaml.MappingNode):
                    stack.extend(n for pair in current.value for n in pair)
                elif isinstance(current, yaml.SequenceNode):
                    stack.extend(current.value)
            return super().construct_document(node)

        def construct_mapping(self, node, deep=False):
            keys = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # an unhashable key: refused by PyYAML itself
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _YamlRefused("uses a YAML merge key (<<)", key_node.start_mark,
                                       "write the keys out in this mapping")
                key = self.construct_object(key_node, deep=True)
                if key in keys:
                    raise _YamlRefused(f"repeats the key {key!r} (first on line {keys[key] + 1})",
                                       key_node.start_mark,
                                       "YAML keeps only the last value of a repeated key; keep one")
                keys[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(_FLOAT_EXPONENT),
                                 list("-+.0123456789"))
    return Loader


class _YamlRefused(Exception):
    def __init__(self, problem, mark, fix):
        super().__init__(problem)
        self.problem, self.mark, self.fix = problem, mark, fix


def read_yaml(text: str, *, where: str, kind: str = "file"):
    """Parse YAML ``text`` (safe: plain data only) and return the document.

    Stricter than ``yaml.safe_load``: a key repeated in one mapping (which
    PyYAML silently resolves to the last value), anchors/aliases (which can
    expand a small file into an enormous structure) and merge keys (``<<``) are
    refused, naming the key and line; ``1e-3`` is read as a number, as in YAML 1.2.

    Parameters
    ----------
    text : str
        The YAML text.
    where : str
        What the text is, for messages (e.g. ``"column map lab.yaml"``).
    kind : str
        What the document is for, used in the fix hints (e.g. ``"column map"``).

    Returns
    -------
    object
        The document (``None`` for an empty one).

    Raises
    ------
    InputError
        Invalid YAML, a Python tag, a repeated key or an alias: one line naming
        the line and column and how to fix it.
    """
    import yaml

    from ephys2tx.errors import InputError

    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506  (a SafeLoader subclass)
    except _YamlRefused as exc:
        raise InputError(f"{where}, line {exc.mark.line + 1}: the {kind} {exc.problem}; "
                         f"{exc.fix}.") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        if problem.startswith("but ") and exc.context:  # "expected ... but found ..."
            problem = " ".join(str(exc.context).split()) + " " + problem
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
            problem += " (only plain values, lists and mappings are allowed)"
        if "\t" in text and ("tab" in problem or "cannot start any token" in problem):
            problem += " (YAML indents with spaces, not tabs)"
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InputError(f"{where} is not valid YAML{at}: {problem}; fix the file (a {kind} is "
                         "plain YAML: key: value lines, lists of mappings).") from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())[:200]
        raise InputError(f"{where} is not valid YAML: {problem}.") from None
    except RecursionError:
        raise InputError(f"{where} nests lists or mappings too deeply; a {kind} is a few "
                         "levels deep.") from None


def yaml_number(value) -> float | None:
    """A number given in a YAML file (a map's scale, a junction potential), as a float.

    Numbers, and text that reads as one (``'2'``, ``' -13'``: quoted in the file), give
    their float (``inf`` for an integer too large for a float, so callers can refuse it
    as not finite); anything else (booleans, other text, lists, mappings, nothing)
    gives None.
    """
    import numbers

    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or type(value).__name__ == "bool_" or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:
        return float("inf")


def read_yaml_file(path: str | os.PathLike, *, kind: str, hint: str):
    """Read a YAML configuration file (a column map, a protocol map) with :func:`read_yaml`.

    Parameters
    ----------
    path : path
        The file.
    kind : str
        What it is, for messages (``"column map"``).
    hint : str
        How to get a good file, appended to the messages about a missing or
        empty file (e.g. ``"see docs/mapping.md"``).

    Returns
    -------
    object
        The (non-empty) document.

    Raises
    ------
    InputError
        Missing, a directory, unreadable, larger than :data:`MAX_YAML_BYTES`,
        binary, not UTF-8, empty, or not valid YAML (see :func:`read_yaml`).
    """
    from ephys2tx.errors import InputError

    path = Path(path).expanduser()
    where = f"{kind} {path}"
    try:
        if path.is_dir():
            raise InputError(f"{where} is a directory; give the YAML file itself.")
        if not path.exists():
            raise InputError(f"{where} does not exist; {hint}.")
        if not path.is_file():
            raise InputError(f"{where} is not a regular file; give a YAML file.")
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise InputError(f"{where} is {size / 1e6:.1f} MB; a {kind} is a small YAML file (at most "
                             f"{MAX_YAML_BYTES / 1e6:.0f} MB): is it the right file?")
        data = path.read_bytes()
    except PermissionError:
        raise InputError(f"{where} cannot be read (permission denied); make it readable "
                         f"(chmod u+r) or copy it.") from None
    except OSError as exc:
        raise InputError(f"{where} cannot be read: {exc.strerror or exc}.") from None
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{where} is a binary file, not YAML text; give the YAML {kind}.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
    text = text.removeprefix("\ufeff")
    if not text.strip() or all(line.lstrip().startswith("#") or not line.strip()
                               for line in text.splitlines()):
        raise InputError(f"{where} is empty; {hint}.")
    document = read_yaml(text, where=where, kind=kind)
    if document is None:
        raise InputError(f"{where} holds no value (an empty YAML document); {hint}.")
    return document
