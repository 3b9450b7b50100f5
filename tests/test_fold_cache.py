"""Tests of the content-addressed fold cache (ephys2tx.evaluation.fold_cache)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.preprocessing import FunctionTransformer

from ephys2tx.evaluation.cv import cross_validate
from ephys2tx.evaluation.fold_cache import (FoldCache, UncacheableError, content_hash,
                                            default_fold_cache_dir, open_fold_cache)
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
