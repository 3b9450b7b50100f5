"""Save and load fitted models as a directory: ``model.json`` + a weights file.

Directory format (``format_version`` 1)::

    model_dir/
      model.json            # kind, estimator class + params, features, families,
                            # preprocessing arrays, classes, temperature,
                            # package version, training checksums, weights sha256,
                            # free "extra" metadata (e.g. ephys2tx.mapping's calibrator)
      weights.safetensors   # kind "torch": the network's state dict
      model.skops           # kind "sklearn-skops": a scikit-learn estimator (skops.io)
      reference_sample.npz  # optional: a bounded sample of the training cells (float32 features,
                            # class codes) for predict's shift test; plain arrays, no pickle
      .ephys2tx-output.json # ownership marker (ephys2tx.safety): --overwrite replaces only such folders

``kind`` tells the loader how to rebuild the estimator: ``"torch"`` for the
classifiers of :mod:`ephys2tx.models.bilstm` and the mouse -> human
:class:`~ephys2tx.models.transfer.MouseHumanTransferClassifier` (plain JSON +
tensors), ``"sklearn-skops"`` for any other scikit-learn estimator such as a
random forest or the stacking transfer model. What a torch model stores is
decided by the estimator itself: ``_export_state()`` returns its JSON fields
and tensors, the classmethod ``_from_state()`` rebuilds it; this module keeps
only the allow-list of such classes (:data:`STATE_EXPORTERS`) and the file
format.

**A model folder is data, never code.** No file is unpickled: safetensors and
JSON cannot execute code, and ``skops.io`` rebuilds only the object types of
:data:`TRUSTED_TYPES` (beside skops' own default list of scikit-learn and numpy
types); a file naming any other type is refused before it is loaded. Every file
named in ``model.json`` must lie inside the model folder (no absolute path, no
``..``, no symbolic link pointing out). The sha256 in ``model.json`` detects a
corrupted or truncated file, but it is not a security boundary: whoever crafts
a folder can write a matching checksum. A folder of the first format
(``model.joblib``, a pickle) is refused with a line saying how to retrain.

Writes are atomic: everything goes to a temporary sibling directory that is
renamed onto the target only when complete.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import math
import os
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import ephys2tx
from ephys2tx.io import sha256_file
from ephys2tx.errors import InputError

__all__ = ["FORMAT_VERSION", "MODEL_OUTPUT_KIND", "TRUSTED_TYPES", "load_model",
           "load_reference_sample", "read_model_metadata", "save_model", "sha256_file"]

#: Kind of a model folder in its ownership marker (:mod:`ephys2tx.safety`).
MODEL_OUTPUT_KIND = "model"

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
TORCH_WEIGHTS = "weights.safetensors"
SKOPS_FILE = "model.skops"
#: Optional arrays file (``numpy.savez``, read with ``allow_pickle=False``): training-cell sample.
REFERENCE_SAMPLE_FILE = "reference_sample.npz"
#: A reference sample file larger than this is refused unread.
MAX_REFERENCE_SAMPLE_BYTES = 64 * 2**20
#: The pickle file of the first format: refused, never loaded.
LEGACY_PICKLE_FILES = ("model.joblib", "model.pkl", "model.pickle")
#: Types that skops does not trust by default and that ephys2tx models contain; nothing else
#: is rebuilt from a ``model.skops`` file.
TRUSTED_TYPES = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "ephys2tx.models.baselines.CheckedImputer",
    "ephys2tx.models.baselines.QuantileBinner",
    "ephys2tx.models.spca.FamilySparsePCA",
    "ephys2tx.models.transfer.MousePriorClassifier",
    "ephys2tx.models.map_models.SingleThreaded",
    "ephys2tx.models.map_models.SoftVotingClassifier",
    "ephys2tx.models.map_models.RigAugmentedClassifier",
    "ephys2tx.models.selection.InnerCVSelector",
)
#: Estimators stored as JSON + safetensors through their own export methods:
#: ``_export_state()`` returns ``(json fields, tensors)`` and the classmethod
#: ``_from_state(fields, tensors)`` rebuilds the fitted estimator. This is the allow-list of
#: classes the loader may import by the name written in ``model.json`` (a model file is data:
#: it may not name any other class); what is stored is decided by each class.
STATE_EXPORTERS = (
    "ephys2tx.models.bilstm.AttentionBiLSTMClassifier",
    "ephys2tx.models.bilstm.FlatMLPClassifier",
    "ephys2tx.models.transfer.MouseHumanTransferClassifier",
)



@dataclass(frozen=True)
class NumberRange:
    """The values a number of ``model.json`` may take (see :data:`NUMBER_RULES`)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False  # null allowed

    def admits(self, values: np.ndarray) -> np.ndarray:
        """Which of ``values`` (float64) are finite and in range."""
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(values)
            ok &= (values > self.low) if self.low_open else (values >= self.low)
            ok &= (values < self.high) if self.high_open else (values <= self.high)
            if self.integer:
                ok &= values == np.round(values)
        return ok

    def describe(self) -> str:
        """E.g. ``a finite number > 0``, ``an integer >= 1``, ``a number in (0, 1)``."""
        what = "an integer" if self.integer else "a finite number"
        if math.isfinite(self.low) and math.isfinite(self.high):
            return (f"{what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        if math.isfinite(self.low):
            return f"{what} {'>' if self.low_open else '>='} {self.low:g}"
        if math.isfinite(self.high):
            return f"{what} {'<' if self.high_open else '<='} {self.high:g}"
        return what


_POSITIVE = NumberRange(0.0, low_open=True)
_PROBABILITY = NumberRange(0.0, 1.0)
_RATE = NumberRange(0.0, 1.0, low_open=True, high_open=True)
_COUNT = NumberRange(1.0, integer=True)
#: The ranges of the numbers of ``model.json`` that loading and predicting read: (key pattern,
#: range); the first pattern (:func:`fnmatch.fnmatchcase`, list items as ``*``) that matches a
#: key wins. Every other number must be finite, except under :data:`UNCHECKED_KEYS`.
NUMBER_RULES: tuple[tuple[str, NumberRange], ...] = (
    ("n_features_in", NumberRange(1.0, integer=True, optional=True)),
    ("temperature", _POSITIVE),
    ("preprocessing.scale_scale.*", _POSITIVE),
    ("params.arcface_scale", _POSITIVE),
    ("params.dropout", NumberRange(0.0, 1.0, high_open=True)),
    ("params.token_dim", _COUNT), ("params.hidden_size", _COUNT), ("params.embedding_dim", _COUNT),
    ("extra.mapping.ood.false_alarm_rate", _RATE),
    ("extra.mapping.ood.n_neighbors", _COUNT),
    ("extra.mapping.ood.scale.*", _POSITIVE),
    ("extra.mapping.ood.threshold", NumberRange(0.0)),
    ("extra.mapping.ood_norm.distance_mean", NumberRange(0.0)),
    ("extra.mapping.ood_norm.distance_sd", _POSITIVE),
    ("extra.mapping.ood_norm.uncertainty_mean", _PROBABILITY),
    ("extra.mapping.ood_norm.uncertainty_sd", _POSITIVE),
    ("extra.mapping.ood_norm.false_alarm_rate", _RATE),
    ("extra.mapping.calibrator.temperature", _POSITIVE),
    ("extra.mapping.calibrator.thresholds.*", _PROBABILITY),
)
#: Keys whose numbers are not read to predict (a record of the training: an undefined metric,
#: or the median of a feature without values, is NaN there).
UNCHECKED_KEYS = ("extra.mapping.record", "extra.mapping.record.*")
_FINITE = NumberRange()


def _number_rule(pattern_key: str) -> NumberRange | None:
    for pattern, rule in NUMBER_RULES:
        if fnmatch.fnmatchcase(pattern_key, pattern):
            return rule
    return None


def _shown_key(key: tuple) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else k)
                   for i, k in enumerate(key))


def _is_number(value) -> bool:
    return type(value) in (int, float)


def check_numbers(path: Path, meta: dict) -> None:
    """Every number of ``model.json`` is finite and in its range (:data:`NUMBER_RULES`).

    A hand-edited model (an OOD scale of 0, a NaN threshold, a negative
    temperature) would otherwise predict nonsense without a word.

    Raises
    ------
    InputError
        Naming the file, the key and the range.
    """
    def refuse(key: tuple, value, rule: NumberRange):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise InputError(f"{path} key {_shown_key(key)} is {shown}; it must be {rule.describe()}: "
                         "the model folder is damaged or was edited, re-train it with "
                         "`ephys2tx train`.")

    stack: list[tuple[tuple, object]] = [((), meta)]
    while stack:
        key, value = stack.pop()
        pattern_key = ".".join("*" if isinstance(k, int) else k for k in key)
        if pattern_key in UNCHECKED_KEYS or any(fnmatch.fnmatchcase(pattern_key, p) for p in UNCHECKED_KEYS):
            continue
        if isinstance(value, dict):
            stack.extend(((*key, str(k)), v) for k, v in value.items())
            continue
        if isinstance(value, list) and value and all(_is_number(v) for v in value):
            rule = _number_rule(pattern_key + ".*") or _FINITE
            try:
                bad = np.flatnonzero(~rule.admits(np.asarray(value, dtype=np.float64)))
            except OverflowError:  # an integer beyond any float
                bad = [next(i for i, v in enumerate(value) if abs(v) > 1e308)]
            if len(bad):
                refuse((*key, int(bad[0])), value[int(bad[0])], rule)
            continue
        if isinstance(value, list):
            stack.extend(((*key, i), v) for i, v in enumerate(value))
            continue
        rule = _number_rule(pattern_key)
        if rule is None:
            if type(value) is float and not math.isfinite(value):
                refuse(key, value, _FINITE)
            continue
        if value is None and rule.optional:
            continue
        if not _is_number(value):
            refuse(key, value, rule)
        try:
            admitted = bool(rule.admits(np.asarray([value], dtype=np.float64))[0])
        except OverflowError:
            admitted = False
        if not admitted:
            refuse(key, value, rule)


def _class_path(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _jsonable(value):
    """Plain JSON value for params and metadata (numpy scalars/arrays, mappings)."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError as exc:
        raise InputError(f"model.json has an unreadable package_version {version!r}.") from exc


def _floats(values) -> list[float]:
    return [float(v) for v in values]


def estimator_fields(estimator) -> dict:
    """JSON fields every exported classifier stores: params, input columns, classes, temperature.

    The torch estimators' ``_export_state`` methods start from these (see
    :data:`STATE_EXPORTERS`); :func:`restore_estimator_fields` reverses them.
    """
    params = estimator.get_params(deep=False)
    if not isinstance(params.get("random_state"), (int, np.integer, type(None))):
        params["random_state"] = None  # a RandomState object cannot be stored; it is not needed to predict
    names = getattr(estimator, "feature_names_in_", None)
    return {
        "params": _jsonable(params),
        "n_features_in": int(estimator.n_features_in_),
        "feature_names": None if names is None else [str(n) for n in names],
        "classes": _jsonable(estimator.classes_.tolist()),
        "classes_dtype": estimator.classes_.dtype.str if estimator.classes_.dtype != object else "object",
        "temperature": float(estimator.temperature_),
    }


def restore_estimator_fields(cls, fields: dict):
    """An instance of ``cls`` with the params and fitted fields of :func:`estimator_fields`."""
    est = cls(**dict(fields["params"]))
    est.n_features_in_ = int(fields["n_features_in"])
    if fields.get("feature_names") is not None:
        est.feature_names_in_ = np.asarray(fields["feature_names"], dtype=object)
    dtype = object if fields["classes_dtype"] == "object" else np.dtype(fields["classes_dtype"])
    est.classes_ = np.asarray(fields["classes"], dtype=dtype)
    est.temperature_ = float(fields["temperature"])
    return est


def preprocessing_fields(impute_values, scale_mean, scale_scale) -> dict:
    """JSON form of a median-imputation + standardisation step."""
    return {"impute_values": _floats(impute_values), "scale_mean": _floats(scale_mean),
            "scale_scale": _floats(scale_scale)}


def preprocessing_arrays(prep: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(impute_values, scale_mean, scale_scale)`` from :func:`preprocessing_fields` output."""
    return tuple(np.asarray(prep[k], dtype=np.float64)
                 for k in ("impute_values", "scale_mean", "scale_scale"))


def state_tensors(module) -> dict:
    """The state dict of ``module`` as contiguous CPU tensors that share no memory."""
    # clone: a tokenizer shared by both species (transfer design a) appears under two keys,
    # and safetensors refuses tensors that share memory
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def load_state(module, tensors: dict, what: str):
    """Load ``tensors`` into ``module`` (strict); a mismatch is an :class:`InputError`."""
    try:
        module.load_state_dict(tensors, strict=True)
    except (RuntimeError, KeyError) as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{what} does not fit the network described in model.json ({first}).") from exc
    return module


def save_model(estimator, directory, *, training_checksums=None, extra=None, overwrite=False,
               reference_sample: dict | None = None) -> Path:
    """Write a fitted estimator to ``directory`` (atomically).

    Parameters
    ----------
    estimator : fitted estimator
        An :mod:`ephys2tx.models.bilstm` classifier (stored as JSON +
        safetensors) or a fitted scikit-learn estimator made of trusted types
        (stored with ``skops.io``).
    directory : path
        Target directory; its parent is created if needed.
    training_checksums : dict, optional
        ``file -> sha256`` of the training data (e.g. ``dataset.checksums``).
    extra : dict, optional
        Free JSON-serialisable metadata (e.g. dataset name, CV figures).
    overwrite : bool, default=False
        Replace an existing directory, if it is a model folder written by ephys2tx.
    reference_sample : dict of str -> ndarray, optional
        Plain numeric/string arrays (no object dtype) written to
        :data:`REFERENCE_SAMPLE_FILE`, sha256-recorded in ``model.json``
        (read back by :func:`load_reference_sample`).

    Returns
    -------
    Path
        The directory written.
    """
    from sklearn.utils.validation import check_is_fitted

    target = Path(directory)
    try:
        check_is_fitted(estimator)
    except Exception as exc:  # NotFittedError or a non-estimator
        raise InputError(f"cannot save {type(estimator).__name__} to {target}: it is not fitted; "
                         "call fit first.") from exc
    from ephys2tx.safety import check_output_dir, staged_output_dir

    check_output_dir(target, kind=MODEL_OUTPUT_KIND, overwrite=overwrite, option="model directory")
    class_path = _class_path(estimator)
    meta = {
        "format": "ephys2tx-model",
        "format_version": FORMAT_VERSION,
        "estimator_class": class_path,
        "package_version": ephys2tx.__version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "training_checksums": _jsonable(dict(training_checksums or {})),
        "extra": _jsonable(dict(extra or {})),
    }
    with staged_output_dir(target, MODEL_OUTPUT_KIND, overwrite=overwrite,
                           option="model directory") as tmp:
        if class_path in STATE_EXPORTERS:
            from safetensors.torch import save_file

            fields, state = estimator._export_state()
            save_file(state, str(tmp / TORCH_WEIGHTS))
            meta.update(kind="torch", weights_file=TORCH_WEIGHTS,
                        weights_sha256=sha256_file(tmp / TORCH_WEIGHTS), **fields)
        else:
            _dump_skops(estimator, tmp / SKOPS_FILE)
            names = getattr(estimator, "feature_names_in_", None)
            classes = getattr(estimator, "classes_", None)
            meta.update(
                kind="sklearn-skops", weights_file=SKOPS_FILE,
                weights_sha256=sha256_file(tmp / SKOPS_FILE),
                params=_jsonable(estimator.get_params(deep=False)),
                n_features_in=_jsonable(getattr(estimator, "n_features_in_", None)),
                feature_names=None if names is None else [str(n) for n in names],
                classes=None if classes is None else _jsonable(np.asarray(classes).tolist()),
            )
        if reference_sample is not None:
            arrays = {str(k): np.asarray(v) for k, v in reference_sample.items()}
            if any(a.dtype == object for a in arrays.values()):
                raise TypeError("reference_sample arrays must not have object dtype (no pickle).")
            np.savez(tmp / REFERENCE_SAMPLE_FILE, **arrays)
            meta.update(reference_sample_file=REFERENCE_SAMPLE_FILE,
                        reference_sample_sha256=sha256_file(tmp / REFERENCE_SAMPLE_FILE))
        with open(tmp / MODEL_JSON, "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
    return target


#: Packages that scikit-learn's ``all_estimators()`` walk imports only through
#: ``sklearn.externals.array_api_compat`` (its torch and dask wrappers), whose modules the walk
#: then skips: ``externals`` hold no estimator.
WALK_ONLY_IMPORTS = ("torch", "dask")


class _RefusedImports:
    """Meta-path finder refusing :data:`WALK_ONLY_IMPORTS` to the thread that installed it
    (see :func:`_skops_io`)."""

    def __init__(self, names):
        self.thread = threading.get_ident()
        self.names = tuple(names)

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in self.names and threading.get_ident() == self.thread:
            raise ImportError(f"{top} is not imported while skops.io is imported")
        return None


#: The scikit-learn estimators that skops trusts by default (``all_estimators()``, whose walk
#: imports every sub-package of sklearn: about a third of a second, a tenth of a 300,000-cell
#: ``predict``), recorded for one scikit-learn version by ``scripts/skops_estimator_names.py``.
ESTIMATOR_NAMES_FILE = "skops_estimator_names.json"


def _recorded_estimators() -> list | None:
    """``all_estimators()`` as recorded for the installed scikit-learn: (name, stand-in class)
    pairs whose ``__module__`` and ``__name__`` are those of the real class (all skops reads
    of them), or None when the record is for another version (the walk runs then)."""
    import importlib.resources

    import sklearn

    try:
        text = (importlib.resources.files("ephys2tx.models") / ESTIMATOR_NAMES_FILE).read_text("utf-8")
        record = json.loads(text)
    except (OSError, ValueError):
        return None
    if record.get("sklearn") != sklearn.__version__:
        return None
    pairs = []
    for name, path in record["estimators"]:
        module, _, cls = path.rpartition(".")
        pairs.append((name, type(cls, (), {"__module__": module})))
    return pairs


def sklearn_estimator_names() -> dict:
    """What :data:`ESTIMATOR_NAMES_FILE` records: the scikit-learn version and ``all_estimators()``
    as (name, ``module.Class``) pairs (the walk, without torch and dask, see :func:`_skops_io`)."""
    import sklearn
    from sklearn.utils import all_estimators

    refused = [n for n in WALK_ONLY_IMPORTS if n not in sys.modules]
    blocker = _RefusedImports(refused)
    sys.meta_path.insert(0, blocker)
    try:
        pairs = all_estimators()
    finally:
        sys.meta_path.remove(blocker)
    return {"sklearn": sklearn.__version__,
            "estimators": [[name, f"{cls.__module__}.{cls.__name__}"] for name, cls in pairs]}


def _fast_whichmodule(original):
    """skops' ``whichmodule`` (``skops.io._utils``) with the same answers, found faster.

    For an object without ``__module__`` (a scipy ufunc), skops returns the first
    module of ``sys.modules``, in import order, whose attribute ``name`` is the
    object, reading ``getattr(module, name, None)`` on each. At the import of
    skops this runs for each of the about 230 scipy ufuncs over more than a
    thousand modules, where a missing attribute raises and swallows an
    AttributeError: about half a second of every ``predict``. This version
    reads the ``__dict__`` of plain modules (type ``ModuleType`` without a
    module ``__getattr__``), for which ``getattr`` returns exactly that entry or
    nothing, and calls ``getattr`` on every other module as skops does, in the
    same order; dotted names and names that ``ModuleType`` itself defines go to
    ``original``. tests/test_persistence.py compares both on every public object
    of numpy and scipy.special and on modules built to tell them apart.
    """
    import types
    import warnings

    module_type = types.ModuleType
    own_names = frozenset(dir(module_type))

    def whichmodule(obj, name: str) -> str:
        module_name = getattr(obj, "__module__", None)
        if module_name is not None:
            return module_name
        if "." in name or name in own_names:
            return original(obj, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # as skops: numpy.core shims
            for module_name, module in sys.modules.copy().items():
                if module_name in ("__main__", "__mp_main__") or module is None:
                    continue
                if type(module) is module_type and "__getattr__" not in module.__dict__:
                    found = module.__dict__.get(name)
                else:
                    try:
                        found = getattr(module, name, None)
                    except (AttributeError, ImportError):
                        continue
                if found is obj:
                    return module_name
        return "__main__"

    whichmodule.original = original
    return whichmodule


class _PatchAfterExec:
    """Meta-path finder that calls ``patch(module)`` right after the module ``name`` has run
    (and before any module importing it continues), in the thread that installed it."""

    def __init__(self, name: str, patch):
        self.name, self.patch, self.thread = name, patch, threading.get_ident()
        self.loader = None

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or threading.get_ident() != self.thread or self.loader:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return None
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            self.patch(module)

        self.loader = spec.loader
        spec.loader.exec_module = exec_module  # this loader object only; removed by undo()
        return spec

    def undo(self) -> None:
        """Remove the wrapper from the loader (the module keeps whatever ``patch`` did)."""
        if self.loader is not None:
            vars(self.loader).pop("exec_module", None)


def _skops_io():
    """``skops.io``, imported without importing torch or dask, nor walking scikit-learn.

    skops' default allow-list is built at its import from ``all_estimators()``.
    For the scikit-learn version recorded in :data:`ESTIMATOR_NAMES_FILE`, that
    call returns the recorded list during the import (only in this thread), so the
    allow-list is the same without importing every sklearn module
    (tests/test_persistence.py compares it with the walk's). For another version
    the walk runs, as follows.

    At import, skops builds its default allow-list with scikit-learn's
    ``all_estimators()``, which walks every sub-package of sklearn, among them
    ``sklearn.externals.array_api_compat.torch`` and ``.dask``: they import
    torch (about a second and a thousand modules) and dask.array (about half a
    second) only for the walk to skip them (``externals`` hold no estimator).
    Refusing those imports during that import leaves the list unchanged
    (tests/test_persistence.py compares it with and without them) and keeps
    loading a forest free of torch and dask. Once skops is imported, they
    import normally.

    During the import, skops' ``whichmodule`` (how it names the scipy ufuncs of
    its allow-list) is :func:`_fast_whichmodule`: the same names, without half
    a second of failed attribute look-ups; skops' own is put back afterwards.
    """
    if "skops.io" not in sys.modules:
        def faster(module):
            if callable(getattr(module, "whichmodule", None)):
                module.whichmodule = _fast_whichmodule(module.whichmodule)

        hook = _PatchAfterExec("skops.io._utils", faster)
        sys.meta_path.insert(0, hook)
        try:
            _import_skops_io()
        finally:
            sys.meta_path.remove(hook)
            hook.undo()
            utils = sys.modules.get("skops.io._utils")
            original = getattr(getattr(utils, "whichmodule", None), "original", None)
            if original is not None:
                utils.whichmodule = original
    import skops.io as sio

    return sio


def _import_skops_io() -> None:
    """Import ``skops.io`` with the recorded estimator list, else refusing torch and dask
    (see :func:`_skops_io`)."""
    refused = [n for n in WALK_ONLY_IMPORTS if n not in sys.modules]
    recorded = _recorded_estimators()
    if recorded is not None:
        import sklearn.utils

        walk, thread = sklearn.utils.all_estimators, threading.get_ident()

        def all_estimators(*args, **kwargs):
            if args or kwargs or threading.get_ident() != thread:
                return walk(*args, **kwargs)
            return list(recorded)

        sklearn.utils.all_estimators = all_estimators
        try:
            import skops.io  # noqa: F401
        finally:
            sklearn.utils.all_estimators = walk
    elif refused:
        blocker = _RefusedImports(refused)
        sys.meta_path.insert(0, blocker)
        try:
            import skops.io  # noqa: F401
        finally:
            sys.meta_path.remove(blocker)
    else:
        import skops.io  # noqa: F401


def _dump_skops(estimator, path: Path) -> None:
    """Write ``estimator`` with skops; refuse types outside :data:`TRUSTED_TYPES` (a bug, not input)."""
    sio = _skops_io()
    sio.dump(estimator, path)
    unknown = sorted(set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
    if unknown:
        path.unlink()
        raise TypeError(f"{type(estimator).__name__} contains types outside TRUSTED_TYPES "
                        f"({', '.join(unknown)}); add them to ephys2tx.models.persistence.TRUSTED_TYPES "
                        "only if they cannot run code when rebuilt.")


def _load_skops(path: Path):
    """Rebuild an estimator from a skops file, refusing any type outside :data:`TRUSTED_TYPES`.

    ``skops.io.load`` audits the file's types before it rebuilds anything, so
    one pass reads and checks the file; the failures are then diagnosed
    (unreadable file, untrusted type, or a file that cannot be rebuilt).
    """
    sio = _skops_io()
    try:
        return sio.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as exc:  # noqa: BLE001 - diagnosed below
        failure = exc
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001 - a damaged zip/JSON of any kind
        raise InputError(f"{path} is not a readable skops file ({type(exc).__name__}); the model "
                         "directory is damaged: train the model again.") from exc
    unknown = [t for t in untrusted if t not in TRUSTED_TYPES]
    if unknown:
        raise InputError(f"{path} contains the type {unknown[0]!r}, which ephys2tx does not trust "
                         "(a model file is data, never code); use a model folder written by "
                         "`ephys2tx train`.")
    raise InputError(f"cannot rebuild the estimator of {path} ({type(failure).__name__}); the model "
                     "directory is damaged or from another version: train the model again."
                     ) from failure


def _retrain_hint(directory: Path) -> str:
    return (f"retrain it with `ephys2tx train --out NEW_DIR` (same --species/--model as before), "
            f"then use NEW_DIR instead of {directory}")


def _confined(directory: Path, name, field: str) -> Path:
    """``directory / name`` if ``name`` is a plain file name that stays inside ``directory``."""
    if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name \
            or Path(name).is_absolute() or "\\" in name:
        raise InputError(f"{directory / MODEL_JSON} field {field!r} is {name!r}; it must be the name "
                         "of a file inside the model folder (no path, no '..'): use a model folder "
                         "written by `ephys2tx train`.")
    path = directory / name
    if path.is_symlink() and not _inside(path.resolve(), directory.resolve()):
        raise InputError(f"{path} is a symbolic link pointing outside the model folder; model files "
                         "must lie inside it: use a model folder written by `ephys2tx train`.")
    return path


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _read_meta(directory: Path) -> dict:
    path = directory / MODEL_JSON
    if not path.is_file():
        legacy = [n for n in LEGACY_PICKLE_FILES if (directory / n).exists()]
        if legacy:
            raise InputError(f"{directory} is a model in an old pickle format ({legacy[0]}), which "
                             f"ephys2tx no longer loads (a pickle can run code); {_retrain_hint(directory)}.")
        raise InputError(f"{directory} is not a saved model: {MODEL_JSON} is missing; "
                         "point to a directory written by `ephys2tx train`.")
    try:
        if path.stat().st_size > 256 * 2**20:
            raise InputError(f"{path} is larger than 256 MiB; it is not a model file of ephys2tx.")
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start}); it is not a model file of "
                         "ephys2tx: use a model folder written by `ephys2tx train`.") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, a 5000-digit number, [[[[...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path} is not valid JSON ({first}); the model directory is corrupted, "
                         "train the model again.") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc}); check the model folder.") from exc
    if not isinstance(meta, dict):
        raise InputError(f"{path} holds a JSON {type(meta).__name__}, not a model description; use a "
                         "model folder written by `ephys2tx train`.")
    if meta.get("kind") == "sklearn-joblib" or str(meta.get("weights_file", "")).endswith(
            (".joblib", ".pkl", ".pickle")):
        raise InputError(f"{directory} is a model in the old pickle format ({meta.get('weights_file')}), "
                         f"which ephys2tx no longer loads (a pickle can run code); "
                         f"{_retrain_hint(directory)}.")
    if meta.get("format") != "ephys2tx-model":
        raise InputError(f"{path} is not an ephys2tx model file (format={meta.get('format')!r}).")
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path} has format_version {meta.get('format_version')!r}, this ephys2tx "
                         f"reads version {FORMAT_VERSION}; re-train or use a matching ephys2tx.")
    saved, current = meta.get("package_version", "?"), ephys2tx.__version__
    if _major(saved) != _major(current):
        raise InputError(f"{path} was saved by ephys2tx {saved}, incompatible with the installed "
                         f"{current} (major version differs); re-train the model or install "
                         f"ephys2tx {_major(saved)}.x.")
    check_numbers(path, meta)
    return meta


def _check_weights(directory: Path, meta: dict) -> Path:
    return _checked_file(directory, meta, "weights")


def _checked_file(directory: Path, meta: dict, what: str) -> Path:
    """The file named by ``<what>_file`` in ``model.json``: inside the folder, present, sha256 as recorded."""
    path = _confined(directory, meta.get(f"{what}_file"), f"{what}_file")
    if not path.is_file():
        raise InputError(f"{path} is missing; the model directory is incomplete, save it again.")
    actual = sha256_file(path)
    if actual != meta.get(f"{what}_sha256"):
        raise InputError(f"{path} is corrupted: sha256 {actual} does not match "
                         f"{meta.get(f'{what}_sha256')} recorded in {MODEL_JSON}; save the model again.")
    return path


def load_reference_sample(directory) -> dict | None:
    """The arrays of the model folder's reference sample, or None for a folder written without one.

    The file must lie inside the folder and match the sha256 of ``model.json``;
    it is read with ``allow_pickle=False`` (arrays only, no code).

    Raises
    ------
    InputError
        A sample named in ``model.json`` that is missing, corrupted, too large
        or not a plain arrays file.
    """
    import zipfile

    directory = Path(directory)
    meta = _read_meta(directory)
    if meta.get("reference_sample_file") is None:
        return None
    path = _checked_file(directory, meta, "reference_sample")
    if path.stat().st_size > MAX_REFERENCE_SAMPLE_BYTES:
        raise InputError(f"{path} is larger than {MAX_REFERENCE_SAMPLE_BYTES >> 20} MiB; it is not a "
                         "reference sample written by `ephys2tx train`: train the model again.")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path} is not a readable arrays file ({type(exc).__name__}); the model "
                         "directory is damaged: train the model again.") from exc


def _load_exported(meta: dict, weights: Path):
    from safetensors.torch import load_file

    class_path = meta["estimator_class"]
    if class_path not in STATE_EXPORTERS:
        raise InputError(f"model.json names estimator class {class_path!r}, which is not a known "
                         f"torch model ({sorted(STATE_EXPORTERS)}).")
    module_name, class_name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - safetensors' SafetensorError: not a safetensors file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{weights} is not a readable safetensors file ({first}); the model "
                         "directory is damaged: train the model again.") from exc
    return cls._from_state(meta, tensors, source=weights)


def load_model(directory):
    """Rebuild an estimator saved by :func:`save_model`.

    Raises
    ------
    InputError
        Missing or unreadable files, a weights file whose sha256 does not match
        ``model.json``, or a model saved by an ephys2tx of another major version.
    """
    directory = Path(directory)
    meta = _read_meta(directory)
    kind = meta.get("kind")
    if kind not in ("torch", "sklearn-skops"):
        raise InputError(f"{directory / MODEL_JSON} has unknown kind {kind!r}; expected 'torch' or "
                         "'sklearn-skops': use a model folder written by `ephys2tx train`.")
    weights = _check_weights(directory, meta)
    if kind == "sklearn-skops":
        return _load_skops(weights)
    try:
        return _load_exported(meta, weights)
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise InputError(f"{directory / MODEL_JSON} lacks or has a bad field ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); use a model folder "
                         "written by `ephys2tx train`.") from exc


def read_model_metadata(directory) -> dict:
    """The checked ``model.json`` of a saved model (no weights loaded)."""
    return _read_meta(Path(directory))
