"""Repeated stratified and donor-grouped folds."""

from __future__ import annotations

import numpy as np
import pytest

from ephys2tx.errors import InputError
from ephys2tx.evaluation.splits import make_splits


def _synthetic(n=300, n_donors=40, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice(["Lamp5", "Pvalb", "Sst", "Vip"], size=n, p=[0.1, 0.4, 0.3, 0.2])
    groups = rng.integers(0, n_donors, size=n).astype(str)
    return y, groups


def _as_tuples(folds):
    return [(f.repeat, f.fold, f.train.tolist(), f.test.tolist()) for f in folds]


@pytest.mark.parametrize("scheme", ["stratified", "donor"])
def test_deterministic_for_a_seed_and_different_for_another(scheme):
    y, groups = _synthetic()
    a = make_splits(y, groups, scheme=scheme, n_splits=5, n_repeats=2, random_state=3)
    b = make_splits(y, groups, scheme=scheme, n_splits=5, n_repeats=2, random_state=3)
    c = make_splits(y, groups, scheme=scheme, n_splits=5, n_repeats=2, random_state=4)
    assert _as_tuples(a) == _as_tuples(b)
    assert _as_tuples(a) != _as_tuples(c)


def test_repeats_reshuffle():
    y, _ = _synthetic()
    folds = make_splits(y, n_splits=5, n_repeats=2, random_state=0)
    first = {tuple(sorted(f.test)) for f in folds if f.repeat == 0}
    second = {tuple(sorted(f.test)) for f in folds if f.repeat == 1}
    assert first != second


@pytest.mark.parametrize("scheme", ["stratified", "donor"])
def test_each_cell_tested_once_per_repeat(scheme):
    y, groups = _synthetic()
    n_splits, n_repeats = 5, 3
    folds = make_splits(y, groups, scheme=scheme, n_splits=n_splits, n_repeats=n_repeats,
                        random_state=0)
    assert len(folds) == n_splits * n_repeats
    for repeat in range(n_repeats):
        mine = [f for f in folds if f.repeat == repeat]
        assert [f.fold for f in mine] == list(range(n_splits))
        tested = np.concatenate([f.test for f in mine])
        np.testing.assert_array_equal(np.sort(tested), np.arange(len(y)))
        for f in mine:
            assert not set(f.train) & set(f.test)
            assert len(f.train) + len(f.test) == len(y)


def test_stratified_folds_keep_class_proportions():
    y, _ = _synthetic(n=1000)
    for f in make_splits(y, n_splits=5, n_repeats=1, random_state=0):
        for cls in np.unique(y):
            expected = np.sum(y == cls) / 5
            assert abs(np.sum(y[f.test] == cls) - expected) <= 1


def test_donor_folds_never_share_a_donor_synthetic():
    y, groups = _synthetic()
    for f in make_splits(y, groups, scheme="donor", n_splits=5, n_repeats=3, random_state=0):
        assert not set(groups[f.train]) & set(groups[f.test])


def test_donor_folds_never_share_a_donor_real(human):
    groups = human.groups.to_numpy()
    folds = make_splits(human.labels.to_numpy(), groups, scheme="donor", n_splits=5,
                        n_repeats=2, random_state=0)
    for f in folds:
        assert not set(groups[f.train]) & set(groups[f.test])
    # Every class is in every test fold (stratification across donors still works).
    for f in folds:
        assert set(human.labels.to_numpy()[f.test]) == set(human.labels)


def test_bad_arguments():
    y, groups = _synthetic()
    with pytest.raises(InputError, match="unknown split scheme"):
        make_splits(y, groups, scheme="random")
    with pytest.raises(InputError, match="donor ids"):
        make_splits(y, None, scheme="donor")
