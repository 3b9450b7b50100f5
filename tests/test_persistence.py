"""Tests of model save/load (directory format, checksums, versions, atomic writes)."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

import ephys2tx
from ephys2tx.errors import InputError
from ephys2tx.models import persistence
from ephys2tx.models.bilstm import AttentionBiLSTMClassifier, FlatMLPClassifier
from ephys2tx.models.persistence import load_model, read_model_metadata, save_model

FAST = dict(max_epochs=8, patience=4, batch_size=64, token_dim=8, hidden_size=8, embedding_dim=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    y = np.repeat(["Lamp5", "Pvalb", "Sst", "Vip"], [50, 35, 25, 15])
    centres = rng.normal(0, 2, size=(4, 7))
    X = centres[np.searchsorted(["Lamp5", "Pvalb", "Sst", "Vip"], y)] + rng.normal(size=(len(y), 7))
    X[rng.random(X.shape) < 0.03] = np.nan
    return pd.DataFrame(X, columns=[f"c{i}" for i in range(7)]), pd.Series(y)


@pytest.fixture(scope="module")
def fitted(table):
    X, y = table
    families = {"a": ["c0", "c1"], "b": ["c2", "c3", "c4"], "c": ["c5", "c6"]}
    return AttentionBiLSTMClassifier(families, random_state=0, **FAST).fit(X, y)


def test_round_trip_is_exact(fitted, table, tmp_path):
    X, _ = table
    out = save_model(fitted, tmp_path / "model", training_checksums={"x.csv": "ab12"},
                     extra={"dataset": "synthetic"})
    assert sorted(p.name for p in out.iterdir()) == [".ephys2tx-output.json", "model.json", "weights.safetensors"]
    meta = read_model_metadata(out)
    assert meta["kind"] == "torch"
    assert meta["package_version"] == ephys2tx.__version__
    assert meta["training_checksums"] == {"x.csv": "ab12"}
    assert meta["feature_names"] == list(X.columns)
    assert meta["families"] == {"a": [0, 1], "b": [2, 3, 4], "c": [5, 6]}
    loaded = load_model(out)
    assert isinstance(loaded, AttentionBiLSTMClassifier)
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(loaded.explain(X).to_numpy(), fitted.explain(X).to_numpy())
    assert loaded.temperature_ == fitted.temperature_
    assert loaded.get_params() == fitted.get_params()
    with pytest.raises(ValueError):  # feature names are still checked after loading
        loaded.predict(X[X.columns[::-1]])


def test_round_trip_mlp_and_integer_classes(table, tmp_path):
    X, y = table
    y_int = pd.Series(np.searchsorted(["Lamp5", "Pvalb", "Sst", "Vip"], y))
    mlp = FlatMLPClassifier(random_state=1, max_epochs=5).fit(X.to_numpy(), y_int)
    loaded = load_model(save_model(mlp, tmp_path / "mlp"))
    assert loaded.classes_.dtype == mlp.classes_.dtype
    np.testing.assert_array_equal(loaded.predict_proba(X.to_numpy()), mlp.predict_proba(X.to_numpy()))
    np.testing.assert_array_equal(loaded.predict(X.to_numpy()), mlp.predict(X.to_numpy()))


def test_forest_uses_the_same_directory_format(table, tmp_path):
    X, y = table
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X.fillna(0), y)
    out = save_model(forest, tmp_path / "rf")
    assert read_model_metadata(out)["kind"] == "sklearn-skops"
    assert sorted(p.name for p in out.iterdir()) == [".ephys2tx-output.json", "model.json", "model.skops"]
    np.testing.assert_array_equal(load_model(out).predict_proba(X.fillna(0)),
                                  forest.predict_proba(X.fillna(0)))


def test_corrupted_weights_are_refused(fitted, tmp_path):
    out = save_model(fitted, tmp_path / "model")
    weights = out / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupted"):
        load_model(out)


def test_missing_files_are_refused(fitted, tmp_path):
    with pytest.raises(InputError, match="model.json is missing"):
        load_model(tmp_path)
    out = save_model(fitted, tmp_path / "model")
    (out / "weights.safetensors").unlink()
    with pytest.raises(InputError, match="missing"):
        load_model(out)


def test_other_major_version_is_refused(fitted, tmp_path):
    out = save_model(fitted, tmp_path / "model")
    meta = json.loads((out / "model.json").read_text())
    major = int(ephys2tx.__version__.split(".")[0])
    meta["package_version"] = f"{major + 1}.0.0"
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="major version"):
        load_model(out)
    meta["package_version"] = ephys2tx.__version__
    meta["format_version"] = persistence.FORMAT_VERSION + 1
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="format_version"):
        load_model(out)


def test_atomic_write_leaves_nothing_on_failure(fitted, tmp_path, monkeypatch):
    import safetensors.torch

    def broken_save(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(fitted, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp dir remains


def test_existing_directory_needs_overwrite_and_is_replaced_whole(fitted, table, tmp_path, monkeypatch):
    X, _ = table
    target = tmp_path / "model"
    save_model(fitted, target)
    with pytest.raises(InputError, match="already exists"):
        save_model(fitted, target)
    # A failed overwrite keeps the old model intact.
    monkeypatch.setattr(persistence, "sha256_file", lambda path: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        save_model(fitted, target, overwrite=True)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    np.testing.assert_array_equal(load_model(target).predict_proba(X), fitted.predict_proba(X))
    save_model(fitted, target, overwrite=True, extra={"v": 2})
    assert read_model_metadata(target)["extra"] == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_unfitted_model_is_refused(tmp_path):
    with pytest.raises(InputError, match="not fitted"):
        save_model(AttentionBiLSTMClassifier(), tmp_path / "model")


@pytest.mark.parametrize("design", ["harmonised", "adapters"])
def test_transfer_round_trip_is_exact(design, human, mouse_visp, tmp_path):
    """Mouse -> human transfer network: JSON + safetensors, same outputs after loading.

    Design (a) shares one tokenizer between the species (tensors under two keys).
    """
    from ephys2tx.models.transfer import MouseHumanTransferClassifier

    X, Xs = human.features.iloc[::3], mouse_visp.features.iloc[::10]
    model = MouseHumanTransferClassifier(design, random_state=0, max_epochs=2, patience=2,
                                         token_dim=4, hidden_size=4, embedding_dim=4).fit(
        X, human.labels.loc[X.index], X_source=Xs, y_source=mouse_visp.labels.loc[Xs.index])
    out = save_model(model, tmp_path / "transfer")
    assert sorted(p.name for p in out.iterdir()) == [".ephys2tx-output.json", "model.json", "weights.safetensors"]
    loaded = load_model(out)
    assert isinstance(loaded, MouseHumanTransferClassifier)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    np.testing.assert_array_equal(loaded.predict_proba(human.features), model.predict_proba(human.features))
    np.testing.assert_array_equal(loaded.embed(Xs, species="mouse"), model.embed(Xs, species="mouse"))
    pd.testing.assert_frame_equal(loaded.explain(X), model.explain(X))
    import torch

    rng_state = torch.get_rng_state()
    load_model(out)
    assert torch.equal(torch.get_rng_state(), rng_state)  # loading leaves torch's RNG alone


def test_transfer_fitted_on_unnamed_arrays_round_trips(human, mouse_visp, tmp_path):
    """The positional form (unnamed arrays, consecutive families) is exported by the estimator too."""
    from ephys2tx.features.harmonise import HARMONISED_FEATURES, convert_mouse
    from ephys2tx.models.transfer import MouseHumanTransferClassifier

    cols = list(HARMONISED_FEATURES)
    X = human.features.iloc[::3][cols].to_numpy()
    Xs = convert_mouse(mouse_visp.features.iloc[::10])[cols].to_numpy()
    model = MouseHumanTransferClassifier(random_state=0, max_epochs=2, patience=2, token_dim=4,
                                         hidden_size=4, embedding_dim=4).fit(
        X, human.labels.iloc[::3].to_numpy(), X_source=Xs,
        y_source=mouse_visp.labels.iloc[::10].to_numpy())
    assert model.positional_ and not hasattr(model, "feature_names_in_")
    loaded = load_model(save_model(model, tmp_path / "positional"))
    assert loaded.positional_ and list(loaded.families_) == list(model.families_)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.embed(Xs, species="mouse"), model.embed(Xs, species="mouse"))
    with pytest.raises(ValueError, match="features"):
        loaded.predict(X[:, :5])


def test_persistence_has_no_switch_on_estimator_classes():
    """What a torch model stores is decided by the estimator (_export_state/_from_state)."""
    from ephys2tx.models.transfer import MouseHumanTransferClassifier

    for cls in (AttentionBiLSTMClassifier, FlatMLPClassifier, MouseHumanTransferClassifier):
        assert f"{cls.__module__}.{cls.__qualname__}" in persistence.STATE_EXPORTERS
        assert callable(cls._export_state) and callable(cls._from_state)
    source = open(persistence.__file__, encoding="utf-8").read()
    assert "class_path ==" not in source and "_TRANSFER_CLASS" not in source


# ------------------------------------------------------------------ a model folder is data, never code


def _forest_dir(table, tmp_path):
    X, y = table
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X.fillna(0), y)
    return save_model(forest, tmp_path / "rf")


def _rewrite_meta(out, **fields):
    meta = json.loads((out / "model.json").read_text())
    meta.update(fields)
    (out / "model.json").write_text(json.dumps(meta))


def test_untrusted_type_in_a_skops_file_is_refused_before_loading(table, tmp_path):
    """A skops file naming a type outside the allow-list is never rebuilt."""
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    out = _forest_dir(table, tmp_path)
    evil = FunctionTransformer(func=os.system)  # would run a shell command if rebuilt and used
    sio.dump(evil, out / "model.skops")
    _rewrite_meta(out, weights_sha256=persistence.sha256_file(out / "model.skops"))
    with pytest.raises(InputError, match="does not trust"):
        load_model(out)


def test_old_pickle_format_is_refused_with_a_retrain_hint(table, tmp_path):
    import pickle

    out = _forest_dir(table, tmp_path)
    (out / "model.skops").unlink()
    (out / "model.joblib").write_bytes(pickle.dumps({"never": "loaded"}))
    _rewrite_meta(out, kind="sklearn-joblib", weights_file="model.joblib",
                  weights_sha256=persistence.sha256_file(out / "model.joblib"))
    with pytest.raises(InputError, match="old pickle format.*ephys2tx train --out"):
        load_model(out)


@pytest.mark.parametrize("name", ["../outside.skops", "/etc/passwd", "sub/model.skops", "..", ""])
def test_weights_path_must_stay_in_the_folder(name, table, tmp_path):
    out = _forest_dir(table, tmp_path)
    _rewrite_meta(out, weights_file=name)
    with pytest.raises(InputError, match="inside the model folder"):
        load_model(out)


def test_weights_symlink_out_of_the_folder_is_refused(table, tmp_path):
    out = _forest_dir(table, tmp_path)
    outside = tmp_path / "elsewhere.skops"
    (out / "model.skops").rename(outside)
    (out / "model.skops").symlink_to(outside)
    with pytest.raises(InputError, match="symbolic link pointing outside"):
        load_model(out)


def test_model_json_not_utf8_or_not_an_object(table, tmp_path):
    out = _forest_dir(table, tmp_path)
    (out / "model.json").write_bytes("{\"format\": \"caf\xe9\"}".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_model(out)
    (out / "model.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON list"):
        load_model(out)


_SKOPS_ALLOW_LIST = """
import hashlib, sys
{pre}
from ephys2tx.models.persistence import _skops_io
_skops_io()
from skops.io import _utils
from skops.io._trusted_types import (NUMPY_UFUNC_TYPE_NAMES, SCIPY_UFUNC_TYPE_NAMES,
                                     SKLEARN_ESTIMATOR_TYPE_NAMES as names)
print("torch" in sys.modules, "dask" in sys.modules, "sklearn.semi_supervised" in sys.modules,
      _utils.whichmodule.__module__ == "skops.io._utils" and "exec_module" not in vars(_utils.__loader__),
      len(names), hashlib.sha256(repr(names).encode()).hexdigest(), len(SCIPY_UFUNC_TYPE_NAMES),
      hashlib.sha256(repr([SCIPY_UFUNC_TYPE_NAMES, NUMPY_UFUNC_TYPE_NAMES]).encode()).hexdigest())
"""


def _skops_allow_list(pre: str) -> list[str]:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _SKOPS_ALLOW_LIST.format(pre=pre)],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_skops_is_imported_without_torch_and_with_the_same_allow_list(tmp_path):
    """Loading a forest imports neither torch nor dask, and skops' default allow-list is, in the
    same order, the one skops builds by itself (importing torch, dask and walking sklearn)."""
    fast = _skops_allow_list("")
    walked = _skops_allow_list("import torch, dask.array, skops.io")
    assert fast[:2] == ["False", "False"] and walked[:3] == ["True", "True", "True"]
    assert fast[3] == "True"  # skops' own whichmodule is back, the import hook gone
    assert int(fast[4]) > 100 and int(fast[6]) > 100  # estimators, scipy ufuncs
    assert fast[4:] == walked[4:]


def test_skops_allow_list_comes_from_the_record_only_for_its_sklearn_version(monkeypatch):
    """With the recorded version the walk is skipped (sklearn.semi_supervised, which no forest
    needs, is not imported); with any other version the record is ignored and skops walks."""
    import sklearn

    from ephys2tx.models import persistence

    record = json.loads((Path(persistence.__file__).parent / persistence.ESTIMATOR_NAMES_FILE)
                        .read_text())
    assert record["sklearn"] == sklearn.__version__, "run scripts/skops_estimator_names.py"
    assert _skops_allow_list("")[2] == "False"
    pairs = persistence._recorded_estimators()
    assert [[n, f"{c.__module__}.{c.__name__}"] for n, c in pairs] == record["estimators"]
    monkeypatch.setattr(sklearn, "__version__", "0.0.0")
    assert persistence._recorded_estimators() is None
    walked = _skops_allow_list("import sklearn; sklearn.__version__ = '0.0.0'")
    assert walked[:4] == ["False", "False", "True", "True"] and walked[4:] == _skops_allow_list("")[4:]


def test_fast_whichmodule_finds_the_module_skops_finds(monkeypatch):
    """skops names an object without ``__module__`` (a scipy ufunc) by the first module of
    ``sys.modules`` holding it; :func:`_fast_whichmodule` (used while skops is imported) gives the
    same answer for every public object of numpy and scipy.special, and for modules built to tell
    a ``__dict__`` read from ``getattr``: a module ``__getattr__``, a ModuleType subclass, another
    object under the same name, in every order."""
    import itertools
    import types

    import scipy.special

    from ephys2tx.models.persistence import _fast_whichmodule, _skops_io

    _skops_io()
    from skops.io import _utils

    original = _utils.whichmodule
    assert original.__module__ == "skops.io._utils"
    fast = _fast_whichmodule(original)
    checked = 0
    for module in (np, scipy.special):
        for attr in dir(module):
            obj = getattr(module, attr)
            name = getattr(obj, "__name__", None)
            if isinstance(name, str):
                assert fast(obj, name) == original(obj, name), attr
                checked += getattr(obj, "__module__", None) is None
    assert checked > 100  # the scipy ufuncs, which have no __module__

    probe = np.frompyfunc(lambda x: x, 1, 1)  # in no module, and without __module__
    assert getattr(probe, "__module__", None) is None

    def lookup(name):
        if name == "probe":
            return probe
        raise AttributeError(name)

    class Lazy(types.ModuleType):
        def __getattr__(self, name):
            return lookup(name)

    with_getattr = types.ModuleType("_probe_getattr")
    with_getattr.__getattr__ = lookup
    other = types.ModuleType("_probe_other")
    other.probe = object()
    holding = types.ModuleType("_probe_holding")
    holding.probe = probe
    modules = {"_probe_getattr": with_getattr, "_probe_lazy": Lazy("_probe_lazy"),
               "_probe_other": other, "_probe_holding": holding, "_probe_none": None}
    answers = set()
    for order in itertools.permutations(modules):
        with monkeypatch.context() as patch:
            for name in order:
                patch.setitem(sys.modules, name, modules[name])
            expected = original(probe, "probe")
            assert fast(probe, "probe") == expected, order
            assert fast(probe, "absent") == original(probe, "absent") == "__main__"
            answers.add(expected)
    assert answers == {"_probe_getattr", "_probe_lazy", "_probe_holding"}


def test_torch_imports_normally_after_a_forest_is_loaded(table, tmp_path):
    import subprocess
    import sys

    X, y = table
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X.fillna(0), y)
    out = save_model(forest, tmp_path / "rf")
    code = (f"import sys\nfrom ephys2tx.models.persistence import load_model\n"
            f"load_model({str(out)!r})\nassert 'torch' not in sys.modules\n"
            "import torch\nprint(float(torch.ones(2).sum()))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "2.0"


# ----------------------------------------------------------------------------- reference sample


def _sample_dir(table, tmp_path, **arrays):
    X, y = table
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X.fillna(0), y)
    sample = arrays or {"X": X.to_numpy(np.float32), "y": np.arange(len(y)) % 4,
                        "features": np.asarray(X.columns, dtype=str)}
    return save_model(forest, tmp_path / "rf", reference_sample=sample), sample


def test_reference_sample_round_trips_and_is_optional(table, tmp_path):
    from ephys2tx.models.persistence import load_reference_sample

    out, sample = _sample_dir(table, tmp_path)
    meta = read_model_metadata(out)
    assert meta["reference_sample_file"] == "reference_sample.npz" and len(meta["reference_sample_sha256"]) == 64
    loaded = load_reference_sample(out)
    assert set(loaded) == {"X", "y", "features"} and loaded["X"].dtype == np.float32
    for key in sample:
        np.testing.assert_array_equal(loaded[key], sample[key])
    assert load_reference_sample(_forest_dir(table, tmp_path / "plain")) is None  # written without one


def test_reference_sample_is_checked_like_the_weights(table, tmp_path):
    from ephys2tx.models.persistence import load_reference_sample

    out, _ = _sample_dir(table, tmp_path)
    path = out / "reference_sample.npz"
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupted"):
        load_reference_sample(out)
    path.unlink()
    with pytest.raises(InputError, match="missing"):
        load_reference_sample(out)
    for name in ("../outside.npz", "/etc/passwd", "sub/x.npz"):
        _rewrite_meta(out, reference_sample_file=name)
        with pytest.raises(InputError, match="inside the model folder"):
            load_reference_sample(out)


def test_reference_sample_never_unpickles(table, tmp_path):
    """An npz holding an object array (a pickle) with a matching sha256 is refused, not loaded."""
    from ephys2tx.models.persistence import load_reference_sample, sha256_file

    out, _ = _sample_dir(table, tmp_path)
    path = out / "reference_sample.npz"
    np.savez(path, X=np.array([{"a": 1}], dtype=object))
    _rewrite_meta(out, reference_sample_sha256=sha256_file(path))
    with pytest.raises(InputError, match="not a readable arrays file"):
        load_reference_sample(out)
    with pytest.raises(TypeError, match="object dtype"):
        save_model(RandomForestClassifier(n_estimators=2).fit([[0], [1]], [0, 1]), tmp_path / "o",
                   reference_sample={"X": np.array([None], dtype=object)})


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, (8).to_bytes(8, "little") + b'{"a": 1}'])
def test_weights_that_are_no_safetensors_file_are_refused(content, fitted, tmp_path):
    """Weights replaced with other bytes (sha256 updated to match) were an internal SafetensorError."""
    from ephys2tx.io import sha256_file

    out = save_model(fitted, tmp_path / "model")
    (out / "weights.safetensors").write_bytes(content)
    meta = json.loads((out / "model.json").read_text())
    meta["weights_sha256"] = sha256_file(out / "weights.safetensors")
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"weights\.safetensors is not a readable safetensors file "
                                         r"\(.*\); the model directory is damaged"):
        load_model(out)


def test_check_numbers_refuses_non_finite_and_out_of_range_numbers_naming_the_key(tmp_path):
    """s8: model.json numbers were used unchecked (an OOD scale of 0, a NaN threshold)."""
    from ephys2tx.models.persistence import check_numbers

    path = tmp_path / "model.json"
    good = {"n_features_in": 3, "temperature": 1.5, "params": {"dropout": 0.3},
            "extra": {"mapping": {"ood": {"scale": [1.0, 2.0, 0.5], "threshold": 3.0},
                                  "record": {"cv": {"accuracy": float("nan")}}}}}  # a record: not read
    check_numbers(path, good)
    for edit, key, rule in [
        (lambda m: m["extra"]["mapping"]["ood"]["scale"].__setitem__(1, 0.0), r"extra\.mapping\.ood\.scale\[1\] is 0\.0",
         "a finite number > 0"),
        (lambda m: m["extra"]["mapping"]["ood"].__setitem__("threshold", float("nan")), r"ood\.threshold is nan", ">= 0"),
        (lambda m: m.__setitem__("temperature", -1), r"temperature is -1", "> 0"),
        (lambda m: m["params"].__setitem__("dropout", float("inf")), r"params\.dropout is inf", r"in \[0, 1\)"),
        (lambda m: m.__setitem__("n_features_in", 2.5), r"n_features_in is 2\.5", "an integer >= 1"),
        (lambda m: m.__setitem__("other", [1.0, float("-inf")]), r"other\[1\] is -inf", "a finite number"),
    ]:
        meta = copy.deepcopy(good)
        edit(meta)
        with pytest.raises(InputError, match=rf"model\.json key .*{key}; it must be .*{rule}"):
            check_numbers(path, meta)
