"""Tests of the content-addressed fold cache (ephys2tx.evaluation.fold_cache)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.preprocessing import FunctionTransformer

from ephys2tx.evaluation.cv import cross_validate
import ephys2tx
from ephys2tx.evaluation.fold_cache import (NOT_IN_FOLD_FITS, NOT_IN_FOLD_FITS_DATA, FoldCache,
                                            UncacheableError, content_hash, default_fold_cache_dir,
                                            fingerprinted_files, open_fold_cache,
                                            source_fingerprint)
from ephys2tx.evaluation.splits import make_splits
from ephys2tx.errors import InputError


@pytest.fixture(scope="module")
def small(human):
    """300 real human cells, first 10 features, stratified 3-fold."""
    X = human.features.iloc[:300, :10]
    y = human.labels.iloc[:300].to_numpy()
    folds = make_splits(y, None, scheme="stratified", n_splits=3, n_repeats=1, random_state=0)
    return X, y, folds


def _forest(**params):
    from ephys2tx.models.baselines import make_rf

    return make_rf(n_estimators=20, random_state=0, n_jobs=1).set_params(**params)


def _same(a, b):
    np.testing.assert_array_equal(a.oof, b.oof)
    np.testing.assert_array_equal(a.oof_proba, b.oof_proba)
    for sa, sb in zip(a.fold_scores, b.fold_scores):
        assert {k: v for k, v in sa.items() if k != "fit_seconds"} == \
               {k: v for k, v in sb.items() if k != "fit_seconds"}


def test_content_hash_sees_every_value_and_order():
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, np.nan]}, index=["c1", "c2"])
    base = content_hash(frame)
    assert content_hash(frame.copy()) == base
    changed = frame.copy()
    changed.iloc[1, 0] = 2.0000000001
    assert content_hash(changed) != base
    assert content_hash(frame[["b", "a"]]) != base
    assert content_hash(frame.set_axis(["c1", "c3"])) != base
    assert content_hash({"x": 1, "y": 2}) == content_hash({"y": 2, "x": 1})
    assert content_hash([1, 2]) != content_hash((1, 2)) != content_hash([2, 1])
    assert content_hash(RandomForestClassifier(max_depth=3)) != content_hash(RandomForestClassifier())


def test_unstable_parameters_are_uncacheable():
    with pytest.raises(UncacheableError):
        content_hash(FunctionTransformer(func=lambda x: x))
    with pytest.raises(UncacheableError):
        content_hash(object())


def test_cached_folds_equal_computed_ones_and_a_changed_param_misses(small, tmp_path):
    X, y, folds = small
    classes = sorted(set(y))
    cache = FoldCache(tmp_path / "cache")
    first = cross_validate(_forest(), X, y, folds, classes=classes, cache=cache)
    assert (cache.hits, cache.misses) == (0, 3)
    plain = cross_validate(_forest(), X, y, folds, classes=classes)
    _same(first, plain)
    second = cross_validate(_forest(), X, y, folds, classes=classes, cache=cache)
    assert (cache.hits, cache.misses) == (3, 3)
    _same(second, plain)
    cross_validate(_forest(forest__min_samples_leaf=3), X, y, folds, classes=classes, cache=cache)
    assert (cache.hits, cache.misses) == (3, 6)
    y2 = y.copy()
    y2[0] = next(c for c in classes if c != y[0])
    cross_validate(_forest(), X, y2, folds, classes=classes, cache=cache)
    assert (cache.hits, cache.misses) == (3, 9)


def test_a_corrupt_entry_is_recomputed_with_a_warning(small, tmp_path):
    X, y, folds = small
    classes = sorted(set(y))
    cache = FoldCache(tmp_path / "cache")
    plain = cross_validate(_forest(), X, y, folds, classes=classes, cache=cache)
    npz = sorted((tmp_path / "cache").rglob("*.npz"))
    metas = sorted((tmp_path / "cache").rglob("*.json"))
    data = bytearray(npz[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz[0].write_bytes(bytes(data))
    metas[1].write_text("{not json", encoding="utf-8")
    with pytest.warns(RuntimeWarning, match="fold cache entry .* is unreadable"):
        again = cross_validate(_forest(), X, y, folds, classes=classes, cache=cache)
    _same(again, plain)
    assert (cache.hits, cache.misses) == (1, 5)
    with warnings.catch_warnings():  # rewritten: read cleanly now
        warnings.simplefilter("error")
        cross_validate(_forest(), X, y, folds, classes=classes, cache=cache)
    assert cache.hits == 4
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    for meta in metas:
        assert json.loads(meta.read_text())["format"] == 1


def _rewrite_entry(meta_path, npz_path, case):
    """Damage one entry so that it still parses (its npz sha256 updated where it changes)."""
    import hashlib
    import io

    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if case in ("list", "null"):
        meta_path.write_text("[1, 2]" if case == "list" else "null", encoding="utf-8")
        return
    if case == "record":
        meta["record"] = "x"
    elif case == "importance":
        meta["importance"] = "x"
    else:
        with np.load(npz_path) as stored:
            arrays = dict(stored)
        if case == "proba_width":
            arrays["proba"] = arrays["proba"][:, :2]
        elif case == "unknown_class":
            arrays["pred"] = np.full(arrays["pred"].shape, "Zzz")
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        npz_path.write_bytes(buffer.getvalue())
        meta["npz_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    meta_path.write_text(json.dumps(meta), encoding="utf-8")


@pytest.mark.parametrize("case", ["list", "null", "record", "importance", "proba_width",
                                  "unknown_class"])
def test_an_entry_that_parses_but_does_not_fit_is_recomputed(small, tmp_path, case):
    # Before: a JSON that is no object, or a record of another type, crashed the run (internal
    # error); an npz with too few probability columns crashed it too; one with predictions outside
    # the classes was used as it was (silently wrong scores).
    X, y, folds = small
    classes = sorted(set(y))
    cache = FoldCache(tmp_path / "cache")
    plain = cross_validate(_forest(), X, y, folds, classes=classes, cache=cache)
    meta_path = sorted((tmp_path / "cache").rglob("*.json"))[0]
    _rewrite_entry(meta_path, meta_path.with_suffix(".npz"), case)
    with pytest.warns(RuntimeWarning, match="fold cache entry .* is unreadable"):
        again = cross_validate(_forest(), X, y, folds, classes=classes, cache=cache)
    _same(again, plain)
    assert (cache.hits, cache.misses) == (2, 4)


def test_open_fold_cache_default_disable_and_refusals(tmp_path, monkeypatch):
    monkeypatch.setenv("EPHYS2TX_FOLD_CACHE", str(tmp_path / "env"))
    assert default_fold_cache_dir() == tmp_path / "env"
    assert open_fold_cache(None).directory == tmp_path / "env"
    assert open_fold_cache(tmp_path / "c", enabled=False) is None
    with pytest.raises(InputError, match="inside the output folder"):
        open_fold_cache(tmp_path / "out" / "c", out_dir=tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        open_fold_cache(tmp_path / "file" / "c")


def test_a_second_identical_study_run_reuses_every_fold(data_dir, tmp_path):
    """Real data, small configuration: same metrics twice, the second from the cache."""
    from ephys2tx.study import StudyConfig, run_study

    config = StudyConfig.quick_config(data_dir=str(data_dir), species=("human",),
                                      models=("spca_rf", "rf"), n_jobs=1)
    cache = FoldCache(tmp_path / "cache")
    first = run_study(config, cache=cache)
    computed = cache.misses
    assert computed == 2 * 2 * 2 and cache.hits == 0  # 2 models x 2 folds x (stratified, donor)
    second = run_study(config, cache=cache)
    assert cache.hits == computed and cache.misses == computed

    def scores(result):
        return json.dumps([{k: v for k, v in r.items() if k != "fit_seconds_mean"}
                           for r in result.records], sort_keys=True, default=str)

    assert scores(first) == scores(second)
    assert first.table().equals(second.table())
    changed = StudyConfig.quick_config(data_dir=str(data_dir), species=("human",),
                                       models=("rf",), n_jobs=1, seed=1)
    run_study(changed, cache=cache)
    assert cache.hits == computed  # another seed: other folds and forests, all missed


def test_a_changed_torch_thread_count_misses(small, tmp_path):
    """The torch threads are the one fold input the study picks that no other part of the key
    names: the study's own source is not fingerprinted, so they are in the key."""
    X, y, folds = small
    classes = sorted(set(y))
    cache = FoldCache(tmp_path / "cache")
    cross_validate(_forest(), X, y, folds, classes=classes, cache=cache)
    cross_validate(_forest(), X, y, folds, classes=classes, cache=cache, torch_threads=1)
    assert (cache.hits, cache.misses) == (0, 6)
    cross_validate(_forest(), X, y, folds, classes=classes, cache=cache, torch_threads=1)
    assert (cache.hits, cache.misses) == (3, 6)


PACKAGE = Path(ephys2tx.__file__).parent


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the ephys2tx source tree (no bytecode), to edit."""
    return Path(shutil.copytree(PACKAGE, tmp_path / "ephys2tx",
                                ignore=shutil.ignore_patterns("__pycache__")))


def _touch(path: Path, text: str = "\n") -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def test_editing_code_no_fold_fit_runs_keeps_the_fingerprint(package_copy):
    base = source_fingerprint(package_copy)
    assert source_fingerprint(package_copy) == base  # deterministic
    assert source_fingerprint(PACKAGE) == base  # the copy is the package
    for relative in ("report/writer.py", "cli.py", "cli_commands/map.py", "workflows.py",
                     "study.py", "mapping/query.py", "experiments/shift_benchmark.py",
                     "features/nwb/extract.py", "features/column_map.py",
                     "models/shift_adapt.py", "models/predict_shift.py", "testing/nwb_fixtures.py"):
        _touch(package_copy / relative, "\n# edited\n")
    for data in ("models/shift_defaults.json", "models/predict_shift_defaults.json",
                 "features/column_maps/ipfx.yaml"):
        _touch(package_copy / data, " ")
    (package_copy / "report" / "new_section.py").write_text("X = 1\n", encoding="utf-8")
    assert source_fingerprint(package_copy) == base


@pytest.mark.parametrize("relative", ["models/baselines.py", "evaluation/cv.py",
                                      "models/nn/networks.py", "models/transfer.py",
                                      "data/datasets.py", "schemas.py", "__init__.py",
                                      "models/skops_estimator_names.json"])
def test_editing_code_a_fold_fit_runs_changes_the_fingerprint(package_copy, relative):
    base = source_fingerprint(package_copy)
    _touch(package_copy / relative, " ")
    assert source_fingerprint(package_copy) != base


def test_a_new_module_or_a_renamed_one_changes_the_fingerprint(package_copy):
    base = source_fingerprint(package_copy)
    (package_copy / "models" / "new_model.py").write_text("X = 1\n", encoding="utf-8")
    with_new = source_fingerprint(package_copy)
    assert with_new != base
    (package_copy / "models" / "new_model.py").rename(package_copy / "models" / "other.py")
    assert source_fingerprint(package_copy) not in (base, with_new)


def test_the_excluded_modules_and_data_exist_and_only_excluded_modules_read_the_data():
    modules = {".".join(("ephys2tx", *p.relative_to(PACKAGE).with_suffix("").parts))
               .removesuffix(".__init__") for p in PACKAGE.rglob("*.py")}
    for name in NOT_IN_FOLD_FITS:
        assert name in modules, f"NOT_IN_FOLD_FITS names {name}, which is no module"
    files = {p.as_posix() for p in fingerprinted_files(PACKAGE)}
    assert "models/baselines.py" in files and "models/nn/training.py" in files
    assert not any(f.startswith(("report/", "cli_commands/", "features/nwb/")) for f in files)
    included_sources = {f: (PACKAGE / f).read_text(encoding="utf-8") for f in files
                        if f.endswith(".py") and f != "evaluation/fold_cache.py"}  # (the list)
    for data, reader in NOT_IN_FOLD_FITS_DATA.items():
        path = PACKAGE / data
        assert path.exists(), data
        assert reader in NOT_IN_FOLD_FITS
        name = path.name
        reader_file = PACKAGE.joinpath(*reader.split(".")[1:]).with_suffix(".py")
        assert name in reader_file.read_text(encoding="utf-8")
        assert not any(f.startswith(data) for f in files)
        readers = [f for f, text in included_sources.items()
                   if re.search(rf"\b{re.escape(name)}\b", text)]
        assert not readers, f"{data} is left out of the fingerprint but {readers} name it"


_FOLD_FITS = """
import sys
import numpy as np
from threadpoolctl import threadpool_limits
from ephys2tx.data.datasets import load_dataset
from ephys2tx.evaluation.cv import cross_validate
from ephys2tx.evaluation.splits import make_splits
from ephys2tx.models.registry import BASELINE_MODELS, BILSTM_MODELS, TRANSFER_MODELS, make_model

human, mouse = load_dataset("human", DATA), load_dataset("mouse_visp", DATA)
rng = np.random.default_rng(0)
h = np.sort(rng.choice(human.n_cells, 150, replace=False))
m = np.sort(rng.choice(mouse.n_cells, 150, replace=False))
X, y = human.features.iloc[h], human.labels.iloc[h].to_numpy()
folds = make_splits(y, None, scheme="stratified", n_splits=2, n_repeats=1, random_state=0)[:1]
for name in BASELINE_MODELS + BILSTM_MODELS + TRANSFER_MODELS:
    est = make_model(name, human.families, list(X.columns), random_state=0, quick=True,
                     species="human")
    fit_params = ({"X_source": mouse.features.iloc[m], "y_source": mouse.labels.iloc[m].to_numpy()}
                  if name in TRANSFER_MODELS else None)
    family = name in BILSTM_MODELS and name != "mlp"
    with threadpool_limits(1):
        cross_validate(est, X, y, folds, classes=sorted(set(y)), torch_threads=1,
                       families=human.families if family else None,
                       n_permutations=1 if family else 0, fit_params=fit_params)
print("LOADED", " ".join(sorted(k for k in sys.modules if k.split(".")[0] == "ephys2tx")))
"""


@pytest.mark.slow
def test_fold_fits_of_every_model_load_no_excluded_module(data_dir):
    """A fold of every model of the registry, as the study runs it (families, permutations,
    the mouse cells of a transfer model), in a fresh process: none of the modules left out of
    the fingerprint is loaded (this sees what import-linter cannot: modules loaded by name, such
    as the torch blocks behind ``models.nn.lazy``, and the packages above each module)."""
    code = _FOLD_FITS.replace("DATA", repr(str(data_dir)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = set(out.stdout.split("LOADED", 1)[1].split())
    assert {"ephys2tx.models.nn.networks", "ephys2tx.models.nn.training",
            "ephys2tx.models.transfer", "ephys2tx.models.spca"} <= loaded
    reached = sorted(m for m in loaded for ex in NOT_IN_FOLD_FITS
                     if m == ex or m.startswith(ex + "."))
    assert not reached, f"fold fits loaded {reached}, which NOT_IN_FOLD_FITS leaves out"
