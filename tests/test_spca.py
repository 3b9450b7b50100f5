"""FamilySparsePCA: scikit-learn contract, family specification, variance threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from ephys2tx.errors import InputError
from ephys2tx.models.spca import FamilySparsePCA, adjusted_variance
from ephys2tx.schemas import resolve_families


def _correlated_table(n=200, seed=0):
    """Three families: two correlated blocks and a single feature."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    block_a = latent[:, [0]] @ np.ones((1, 4)) + 0.3 * rng.normal(size=(n, 4))
    block_b = latent[:, [1]] @ rng.normal(size=(1, 3)) + 0.5 * rng.normal(size=(n, 3))
    single = rng.normal(size=(n, 1))
    data = np.hstack([block_a, block_b, single])
    data = (data - data.mean(0)) / data.std(0)
    columns = [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(3)] + ["solo"]
    families = {"A": [f"a{i}" for i in range(4)], "B": [f"b{i}" for i in range(3)],
                "S": ["solo"]}
    return pd.DataFrame(data, columns=columns), families


def test_names_and_positions_give_the_same_result():
    X, families = _correlated_table()
    by_name = FamilySparsePCA(families, random_state=0).fit(X)
    positions = {fam: [X.columns.get_loc(c) for c in cols] for fam, cols in families.items()}
    by_position = FamilySparsePCA(positions, random_state=0).fit(X.to_numpy())
    as_list = FamilySparsePCA(list(positions.values()), random_state=0).fit(X.to_numpy())
    np.testing.assert_allclose(by_name.transform(X), by_position.transform(X.to_numpy()))
    np.testing.assert_allclose(by_name.transform(X), as_list.transform(X.to_numpy()))
    assert list(by_name.families_) == ["A", "B", "S"]
    assert list(by_name.get_feature_names_out())[-1] == "S__pc0"


def test_kept_components_reach_the_threshold():
    X, families = _correlated_table()
    threshold = 0.05
    model = FamilySparsePCA(families, variance_threshold=threshold, random_state=0).fit(X)
    for fam, ratios in model.explained_variance_ratio_.items():
        assert len(ratios) == len(model.components_[fam]) >= 1
        assert np.all(ratios >= threshold), (fam, ratios)
        assert ratios.sum() <= 1 + 1e-9
    # The threshold bites: the 4-feature block driven by one latent keeps fewer than 4.
    assert len(model.components_["A"]) < 4
    Z = model.transform(X)
    assert Z.shape == (len(X), sum(len(c) for c in model.components_.values()))


def test_ratios_recomputed_from_transform():
    """The stored ratios are the adjusted variance of the transformed scores / family variance."""
    X, families = _correlated_table()
    model = FamilySparsePCA(families, random_state=0).fit(X)
    Z = model.transform(X)
    start = 0
    for fam, cols in families.items():
        k = len(model.components_[fam])
        total = X[cols].var(ddof=1).sum()
        recomputed = adjusted_variance(Z[:, start:start + k]) / total
        np.testing.assert_allclose(recomputed, model.explained_variance_ratio_[fam], rtol=1e-6)
        start += k


def test_single_feature_families_pass_through():
    X, families = _correlated_table()
    model = FamilySparsePCA(families, random_state=0).fit(X)
    names = list(model.get_feature_names_out())
    solo = model.transform(X)[:, names.index("S__pc0")]
    np.testing.assert_allclose(solo, X["solo"] - X["solo"].mean())
    # families=None: every feature is its own family, output = centred input.
    identity = FamilySparsePCA().fit(X)
    np.testing.assert_allclose(identity.transform(X), X - X.mean())


def test_real_human_table(human):
    """On the standardised human table every family keeps >= 1 component above 1%."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    X = human.features.iloc[:300]
    Xs = StandardScaler().fit_transform(SimpleImputer(strategy="median").fit_transform(X))
    Xs = pd.DataFrame(Xs, columns=X.columns)
    model = FamilySparsePCA(human.families, random_state=0).fit(Xs)
    assert list(model.components_) == list(human.families)
    for fam, ratios in model.explained_variance_ratio_.items():
        assert np.all(ratios >= 0.01), fam
        assert model.components_[fam].shape[1] == len(human.families[fam])
    assert model.transform(Xs).shape[1] < X.shape[1]


def test_deterministic_for_a_seed():
    X, families = _correlated_table()
    a = FamilySparsePCA(families, random_state=3).fit(X).transform(X)
    b = clone(FamilySparsePCA(families, random_state=3)).fit(X).transform(X)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("families", "match"),
    [({"A": ["a0", "a1", "a2", "a3"], "B": ["b0", "b1", "b2"]}, "column 'solo' is in no feature family"),
     ({"A": ["a0", "a1", "a2", "a3", "b0"], "B": ["b0", "b1", "b2"], "S": ["solo"]}, "two feature families"),
     ({"A": ["a0", "zzz"], "B": ["a1", "a2", "a3", "b0", "b1", "b2", "solo"]}, "'zzz', which is not in the training table"),
     ({"A": [0, 1, 2, 3], "B": [4, 5, 6, 99]}, "column index 99")],
    ids=["lost", "duplicated", "unknown", "out-of-range"],
)
def test_bad_families(families, match):
    X, _ = _correlated_table()
    with pytest.raises(InputError, match=match):
        FamilySparsePCA(families).fit(X)


def test_names_need_feature_names():
    with pytest.raises(InputError, match="no column names"):
        resolve_families({"A": ["a0"]}, 1, None)


@pytest.mark.parametrize("params", [{"max_components": 0}, {"variance_threshold": 1.0}])
def test_bad_params_raise_in_fit(params):
    X, families = _correlated_table()
    model = FamilySparsePCA(families, **params)  # __init__ does not validate
    with pytest.raises(ValueError):
        model.fit(X)
