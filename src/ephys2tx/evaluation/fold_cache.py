"""A content-addressed cache of cross-validation fold fits (``ephys2tx run``).

A fold's result (out-of-fold predictions and probabilities, its scores, the
attention and family importance it measured) depends only on what goes into
:func:`ephys2tx.evaluation.cv._fold`. The key is the sha256 of all of it:

* the content of the training/test data (feature table, labels, the mouse
  source cells of a transfer model), hashed value by value;
* the estimator's class and its parameters (``get_params(deep=True)``,
  nested estimators by class and parameters);
* the fold (repeat, fold number, train and test row indices), the classes,
  the families and number of permutations, the permutation seed;
* the torch threads of the fit (the one fold input chosen by the caller,
  :mod:`ephys2tx.study`, that the other parts do not name);
* the code: the ephys2tx version, :func:`source_fingerprint` of the source a
  fold fit can run, and the versions of numpy, scipy, scikit-learn,
  imbalanced-learn and torch.

So any change of data, parameter, fold or fold-fit code misses; a repeated run
reuses every fold and prints the same table.

The source fingerprint covers every file of the package except the modules of
:data:`NOT_IN_FOLD_FITS` (and the data files of
:data:`NOT_IN_FOLD_FITS_DATA`, which only those modules read): the command
line, the report, the study driver, mapping, the shift handling, extraction...
None of them runs inside a fold fit, so editing them keeps every cached fold.
The ``fold fits`` contract of ``[tool.importlinter]`` in ``pyproject.toml``
forbids the modules that build and run fold fits (:mod:`ephys2tx.evaluation.cv`,
this module, :mod:`ephys2tx.models.registry` and :mod:`ephys2tx.models.nn`) to
import any of them, directly or not, and ``tests/test_architecture.py`` checks
that its forbidden list is this tuple. A module that is in neither list (a new
one) is fingerprinted. Timing fields (``fit_seconds``) are those
of the run that computed the fold.

An entry is two files: ``<key>.npz`` (arrays, read with ``allow_pickle=False``)
and ``<key>.json`` (scores and the npz's sha256), each written atomically, the
JSON last. Nothing is pickled: an entry is data, never code. An entry that
cannot be read, whose npz does not match its sha256 or whose content does not
fit the fold (shapes, classes, field types) is ignored with a warning and
recomputed (then overwritten). A parameter that has no stable
description (an object whose ``repr`` holds a memory address) makes the fold
uncacheable: it is computed as without a cache.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import ephys2tx
from ephys2tx.errors import InputError
from ephys2tx.io import sha256_file, write_bytes, write_json

__all__ = ["FOLD_CACHE_FORMAT", "NOT_IN_FOLD_FITS", "NOT_IN_FOLD_FITS_DATA", "FoldCache",
           "UncacheableError", "content_hash", "default_fold_cache_dir", "fingerprinted_files",
           "open_fold_cache", "source_fingerprint"]

#: Bumped when the entry layout changes (part of every key).
FOLD_CACHE_FORMAT = 1
_LIBRARIES = ("numpy", "scipy", "scikit-learn", "imbalanced-learn", "torch")


class UncacheableError(ValueError):
    """A fold input without a stable description (its result is computed, not cached)."""


#: Environment variable naming the default fold cache folder.
ENV_VAR = "EPHYS2TX_FOLD_CACHE"


def default_fold_cache_dir() -> Path:
    """``$EPHYS2TX_FOLD_CACHE``, else ``<user cache>/ephys2tx/folds`` (:mod:`platformdirs`)."""
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ephys2tx")) / "folds"


def open_fold_cache(cache_dir=None, *, enabled: bool = True, out_dir=None,
                    inputs=()) -> FoldCache | None:
    """The fold cache of ``ephys2tx run``: ``cache_dir`` or the default; None when disabled.

    Raises
    ------
    InputError
        The folder is an input or ``out_dir``, lies inside one of them, or cannot
        be written (:func:`ephys2tx.safety.check_cache_dir`).
    """
    if not enabled:
        return None
    folder = default_fold_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    from ephys2tx.safety import check_cache_dir

    option = "--cache-dir" if cache_dir is not None else (
        f"${ENV_VAR}" if os.environ.get(ENV_VAR, "") else "the default fold cache")
    check_cache_dir(folder, what=f"fold cache (--cache-dir or ${ENV_VAR}; --no-cache disables it)",
                    option=option, outputs=() if out_dir is None else (out_dir,), inputs=inputs,
                    hint=", or pass --no-cache")
    return FoldCache(folder)


#: Modules and packages (with all their submodules) that no fold fit can import or run, left
#: out of :func:`source_fingerprint`. A fold fit is :func:`ephys2tx.evaluation.cv._fold` on an
#: estimator of :func:`ephys2tx.models.registry.make_model`; the modules it can reach are those
#: that ``evaluation.cv``, ``evaluation.fold_cache``, ``models.registry`` and ``models.nn`` (the
#: torch blocks that ``models.bilstm`` and ``models.transfer`` load by name through
#: :class:`~ephys2tx.models.nn.lazy.LazyModule`) import, at module level or in a function, and
#: the packages above those. The ``fold fits`` contract in ``pyproject.toml`` forbids exactly
#: these (kept equal by ``tests/test_architecture.py``); add a module here only with it.
NOT_IN_FOLD_FITS = (
    # the command line and what writes results: above the study in the layers
    "ephys2tx.cli",
    "ephys2tx.cli_commands",
    "ephys2tx.workflows",
    "ephys2tx.report",
    # builds the fold tasks; what it passes to a fold (data, estimator, folds, families,
    # permutations, seed, torch threads) is in the key itself
    "ephys2tx.study",
    "ephys2tx.experiments",
    "ephys2tx.mapping",
    "ephys2tx.testing",
    # users' and extracted tables, downloads, layer priors (data reaches a fold as content)
    "ephys2tx.data.extracted",
    "ephys2tx.data.fetch",
    "ephys2tx.data.layers",
    # the mouse lockbox (which cells are scored: data) and choice helpers
    "ephys2tx.evaluation.selection",
    # feature extraction, column maps, alignment, the synthetic rig, canonical names
    "ephys2tx.features.nwb",
    "ephys2tx.features.alignment",
    "ephys2tx.features.column_map",
    "ephys2tx.features.canonical",
    "ephys2tx.features.families",
    "ephys2tx.features.rig_shift",
    # shift handling, calibration and OOD scores of predict and map; thread limits of the CLI
    "ephys2tx.models.shift_adapt",
    "ephys2tx.models.shift_alarm",
    "ephys2tx.models.class_conditional",
    "ephys2tx.models.label_shift",
    "ephys2tx.models.predict_shift",
    "ephys2tx.models.map_models",
    "ephys2tx.models.calibration",
    "ephys2tx.models.ood",
    "ephys2tx.models.threads",
)

#: Data files (paths under the package folder; a folder stands for its files) left out of
#: :func:`source_fingerprint`, each with the module of :data:`NOT_IN_FOLD_FITS` that reads it.
NOT_IN_FOLD_FITS_DATA = {
    "models/shift_defaults.json": "ephys2tx.models.shift_adapt",
    "models/predict_shift_defaults.json": "ephys2tx.models.predict_shift",
    "features/column_maps": "ephys2tx.features.column_map",
}

_SOURCE_SUFFIXES = (".py", ".yaml", ".json")


def _module_name(relative: Path) -> str:
    """``ephys2tx.a.b`` for ``a/b.py``, ``a/b/__init__.py`` or a data file ``a/b.json``."""
    parts = relative.with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("ephys2tx", *parts))


def _excluded(relative: Path) -> bool:
    name = _module_name(relative)
    if any(name == m or name.startswith(m + ".") for m in NOT_IN_FOLD_FITS):
        return True
    if relative.suffix == ".py":
        return False
    path = relative.as_posix()
    return any(path == d or path.startswith(d + "/") for d in NOT_IN_FOLD_FITS_DATA)


def fingerprinted_files(root) -> list[Path]:
    """The files of :func:`source_fingerprint`, sorted, relative to ``root``.

    Every ``.py``, ``.yaml`` and ``.json`` file under ``root`` (the ``ephys2tx``
    package folder, or a copy of it) except those of :data:`NOT_IN_FOLD_FITS` and
    :data:`NOT_IN_FOLD_FITS_DATA`.
    """
    root = Path(root)
    files = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if (path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in relative.parts
                and path.is_file() and not _excluded(relative)):
            files.append(relative)
    return sorted(files, key=lambda p: p.as_posix())


def source_fingerprint(root) -> str:
    """sha256 over the source a fold fit can run: the paths and bytes of :func:`fingerprinted_files`.

    Parameters
    ----------
    root : path
        The ``ephys2tx`` package folder (or a copy of it).

    Returns
    -------
    str
        Hex digest; it changes when an included file is added, removed, renamed or edited, and
        not when a file of :data:`NOT_IN_FOLD_FITS` is.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for relative in fingerprinted_files(root):
        digest.update(relative.as_posix().encode() + b"\0")
        digest.update((root / relative).read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """sha256 over ephys2tx's version, :func:`source_fingerprint` and the numeric libraries' versions."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(f"ephys2tx {ephys2tx.__version__}\n".encode())
    digest.update(source_fingerprint(Path(ephys2tx.__file__).parent).encode() + b"\n")
    for name in _LIBRARIES:
        try:
            digest.update(f"{name} {version(name)}\n".encode())
        except PackageNotFoundError:
            digest.update(f"{name} -\n".encode())
    return digest.hexdigest()


def _feed(digest, obj) -> None:
    """Update ``digest`` with a type-tagged, order-preserving description of ``obj``."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, np.generic)):
        digest.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, pd.DataFrame):
        digest.update(b"DataFrame(")
        _feed(digest, [str(c) for c in obj.columns])
        _feed(digest, [str(t) for t in obj.dtypes])
        _feed(digest, obj.index)
        for col in range(obj.shape[1]):
            _feed(digest, obj.iloc[:, col].to_numpy())
        digest.update(b");")
    elif isinstance(obj, (pd.Series, pd.Index)):
        digest.update(f"{type(obj).__name__}({obj.dtype};{obj.name!r};".encode())
        _feed(digest, obj.to_numpy())
        digest.update(b");")
    elif isinstance(obj, np.ndarray):
        digest.update(f"ndarray({obj.dtype.str};{obj.shape};".encode())
        if obj.dtype.kind == "O":
            for value in obj.ravel():
                _feed(digest, value)
        else:
            digest.update(np.ascontiguousarray(obj).tobytes())
        digest.update(b");")
    elif isinstance(obj, dict):
        digest.update(f"dict{len(obj)}(".encode())
        for key in sorted(obj, key=repr):
            _feed(digest, key)
            _feed(digest, obj[key])
        digest.update(b");")
    elif isinstance(obj, (list, tuple)):
        digest.update(f"{type(obj).__name__}{len(obj)}(".encode())
        for value in obj:
            _feed(digest, value)
        digest.update(b");")
    elif hasattr(obj, "get_params") and not isinstance(obj, type):
        cls = type(obj)
        digest.update(f"estimator {cls.__module__}.{cls.__qualname__}(".encode())
        _feed(digest, obj.get_params(deep=False))
        digest.update(b");")
    elif isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")):
        if "<" in obj.__qualname__:  # a lambda or a local function: not named uniquely
            raise UncacheableError(f"no stable description of {obj.__qualname__}")
        digest.update(f"callable {obj.__module__}.{obj.__qualname__};".encode())
    else:
        text = repr(obj)
        if " at 0x" in text or " object at " in text:
            raise UncacheableError(f"no stable description of {type(obj).__name__}: {text[:80]}")
        digest.update(f"{type(obj).__module__}.{type(obj).__qualname__}:{text};".encode())


def content_hash(*parts) -> str:
    """sha256 of the content of ``parts`` (arrays, frames, estimators, plain data)."""
    digest = hashlib.sha256()
    for part in parts:
        _feed(digest, part)
    return digest.hexdigest()


def _check_entry(meta: dict, pred: np.ndarray, proba, fold, classes) -> None:
    """Raise ValueError if a read entry does not have the layout :meth:`FoldCache._store` writes."""
    n = len(fold.test)
    if pred.shape != (n,):
        raise ValueError(f"pred has shape {pred.shape}, the fold tests {n} cells")
    if classes is not None and not set(pred) <= {str(c) for c in classes}:
        raise ValueError(f"pred holds classes outside {list(classes)}")
    if not isinstance(meta["has_proba"], bool):
        raise ValueError("has_proba is not true or false")
    if proba is not None:
        width = proba.shape[1] if proba.ndim == 2 else None
        if (proba.ndim != 2 or proba.shape[0] != n or not np.isfinite(proba).all()
                or (classes is not None and width != len(classes))):
            raise ValueError(f"proba has shape {proba.shape} or non-finite values, for {n} cells"
                             + ("" if classes is None else f" and {len(classes)} classes"))
    record = meta["record"]
    if not isinstance(record, dict) or (record.get("repeat"), record.get("fold")) != (
            int(fold.repeat), int(fold.fold)):
        raise ValueError("record is not the record of this fold")
    importance = meta["importance"]
    if not isinstance(importance, list) or not all(isinstance(r, dict) for r in importance):
        raise ValueError("importance is not a list of records")


class FoldCache:
    """Fold results stored under ``directory`` by the sha256 of their inputs.

    Parameters
    ----------
    directory : path
        Created on the first write.

    Attributes
    ----------
    hits, misses : int
        Folds read from the cache and folds computed (since creation).
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"FoldCache({str(self.directory)!r})"

    def data_key(self, X, y, fit_params, classes) -> str:
        """The part of the key shared by every fold of one model on one table."""
        return content_hash("data", X, np.asarray(y, dtype=object), fit_params or {}, list(classes))

    def key(self, data_key: str, estimator, fold, *, families, n_permutations: int,
            seed: int, torch_threads: int | None = None) -> str:
        """Key of one fold (raises :class:`UncacheableError` for unstable parameters)."""
        return content_hash(FOLD_CACHE_FORMAT, code_fingerprint(), data_key, estimator,
                            estimator.get_params(deep=True), int(fold.repeat), int(fold.fold),
                            np.asarray(fold.train, dtype=np.int64), np.asarray(fold.test, dtype=np.int64),
                            families or {}, int(n_permutations), int(seed),
                            None if torch_threads is None else int(torch_threads))

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.directory / key[:2]
        return folder / f"{key}.json", folder / f"{key}.npz"

    def load(self, key: str, fold, classes=None) -> dict | None:
        """The stored result of ``fold`` (as :func:`~ephys2tx.evaluation.cv._fold` returns it), or None.

        An entry that cannot be read or does not fit the fold (its shapes, its
        ``classes`` when given, the types of its fields) is None, with a warning.
        """
        meta_path, npz_path = self._paths(key)
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("the JSON is not an object")
            if meta.get("format") != FOLD_CACHE_FORMAT or meta.get("key") != key:
                raise ValueError("format or key differs")
            if sha256_file(npz_path) != meta["npz_sha256"]:
                raise ValueError("the npz does not match its sha256")
            with np.load(npz_path, allow_pickle=False) as arrays:
                pred = arrays["pred"].astype(object)
                proba = arrays["proba"] if meta["has_proba"] else None
                attention = None
                if meta["attention"] is not None:
                    att = meta["attention"]
                    attention = pd.DataFrame(arrays["attention"], columns=att["columns"],
                                             index=pd.Index(att["index"], name=att["index_name"]))
            _check_entry(meta, pred, proba, fold, classes)
            out = {"fold": fold, "pred": pred, "proba": proba, "record": meta["record"],
                   "attention": attention, "importance": meta["importance"]}
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            warnings.warn(f"fold cache entry {meta_path} is unreadable ({type(exc).__name__}: {exc}); "
                          "it is recomputed.", RuntimeWarning, stacklevel=2)
            return None
        self.hits += 1
        return out

    def store(self, key: str, out: dict) -> None:
        """Write one fold's result (npz, then the JSON naming its sha256; both atomic).

        A failed write (disk full, no permission) is a warning: the run goes on.
        """
        self.misses += 1
        try:
            self._store(key, out)
        except OSError as exc:
            warnings.warn(f"cannot write to the fold cache {self.directory} ({exc.strerror or exc}); "
                          "the run goes on without storing this fold.", RuntimeWarning, stacklevel=2)

    def _store(self, key: str, out: dict) -> None:
        meta_path, npz_path = self._paths(key)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"pred": np.asarray([str(p) for p in out["pred"]], dtype=str)}
        if out["proba"] is not None:
            arrays["proba"] = np.asarray(out["proba"], dtype=float)
        attention = out["attention"]
        if attention is not None:
            arrays["attention"] = attention.to_numpy(dtype=float)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_bytes(npz_path, buffer.getvalue())
        meta = {"format": FOLD_CACHE_FORMAT, "key": key, "npz_sha256": sha256_file(npz_path),
                "has_proba": out["proba"] is not None, "record": out["record"],
                "importance": out["importance"],
                "attention": None if attention is None else {
                    "columns": [str(c) for c in attention.columns],
                    "index": attention.index.tolist(), "index_name": attention.index.name}}
        write_json(meta_path, meta, indent=None)

    def size_bytes(self) -> int:
        """Bytes the entries take on disk."""
        if not self.directory.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())
