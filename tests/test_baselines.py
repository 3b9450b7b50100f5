"""The three baseline pipelines fit and predict above chance on a small real subset."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from ephys2tx import CLASSES
from ephys2tx.errors import InputError

from ephys2tx.models.baselines import QuantileBinner, make_hgb, make_logreg, make_rf, make_spca_rf
from ephys2tx.models.registry import BASELINE_MODELS, family_positions, make_model

pytestmark = pytest.mark.usefixtures("one_openmp_thread")


@pytest.fixture(scope="module")
def split(mouse_visp):
    """600 training and 400 test mouse cells, stratified, fixed seed."""
    X, y = mouse_visp.features, mouse_visp.labels
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, train_size=600, test_size=400, stratify=y, random_state=0)
    return X_train, X_test, y_train.to_numpy(), y_test.to_numpy()


def _factories(ds):
    positions = family_positions(ds.families, list(ds.features.columns))
    return {
        "spca_rf": lambda: make_spca_rf(positions, n_estimators=50, random_state=0),
        "rf": lambda: make_rf(n_estimators=50, random_state=0),
        "hgb": lambda: make_hgb(max_iter=50, random_state=0),
        "logreg": lambda: make_logreg(random_state=0),
    }


@pytest.mark.parametrize("name", BASELINE_MODELS)
def test_baseline_above_chance(name, mouse_visp, split):
    X_train, X_test, y_train, y_test = split
    model = _factories(mouse_visp)[name]().fit(X_train, y_train)
    pred = model.predict(X_test)
    assert set(pred) <= set(CLASSES)
    assert sorted(model.classes_) == sorted(CLASSES)
    proba = model.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # Chance macro-F1 on four classes is ~0.25; these features separate the classes well.
    assert f1_score(y_test, pred, average="macro") > 0.6
    assert np.mean(pred == y_test) > 0.6


def test_missing_values_are_imputed(mouse_visp, split):
    X_train, X_test, y_train, _ = split
    X_test = X_test.copy()
    X_test.iloc[:10, :5] = np.nan
    pred = make_logreg(random_state=0).fit(X_train, y_train).predict(X_test)
    assert len(pred) == len(X_test)


@pytest.mark.parametrize("name", BASELINE_MODELS)
def test_registry_builds_unfitted_models(name, human):
    model = make_model(name, human.families, list(human.features.columns), random_state=0,
                       quick=True)
    assert not hasattr(model, "classes_")
    params = model.get_params()
    seeds = {v for k, v in params.items() if k.endswith("random_state")}
    assert seeds == {0}
    if "forest__n_estimators" in params:
        assert params["forest__n_estimators"] == 100


def test_registry_unknown_model(human):
    with pytest.raises(InputError, match="unknown model 'nope'"):
        make_model("nope", human.families, list(human.features.columns))


# ----------------------------------------------------------------------------- binning


def test_binner_keeps_order_and_nan_and_caps_the_bins():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 3))
    X[::7, 1] = np.nan
    X[:, 2] = rng.integers(0, 5, size=1000)  # few distinct values: one bin each
    binned = QuantileBinner(max_bins=16).fit(X).transform(X)
    np.testing.assert_array_equal(np.isnan(binned), np.isnan(X))
    for j in range(3):
        ok = ~np.isnan(X[:, j])
        order = np.argsort(X[ok, j], kind="stable")
        assert np.all(np.diff(binned[ok, j][order]) >= 0)  # monotone in the raw value
    assert len(np.unique(binned[:, 0])) == 16
    assert sorted(np.unique(binned[:, 2])) == [0, 1, 2, 3, 4]


def test_binner_edges_come_from_training_rows_only():
    train = np.arange(100, dtype=float)[:, None]
    binner = QuantileBinner(max_bins=4).fit(train)
    # Values beyond the training range fall in the outer bins; they move no edge.
    np.testing.assert_array_equal(binner.transform([[-1e6], [1e6]]).ravel(), [0, 3])
    np.testing.assert_allclose(binner.thresholds_[0], [24.5, 49.5, 74.5])


def _toy(n=60, seed=0):
    import pandas as pd

    rng = np.random.RandomState(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    y = np.resize(np.array(CLASSES), n)
    X.loc[y == "Pvalb", "b"] += 3.0  # something to learn
    return X, y


def test_boosting_on_a_feature_missing_in_every_training_row():
    """An all-NaN feature (a column no cell has) was an internal error deep in scikit-learn's
    binning ('window shape cannot be larger than input array shape'); it is now a constant."""
    X, y = _toy()
    X["a"] = np.nan
    model = make_hgb(max_iter=10, random_state=0).fit(X, y)
    binned = model.named_steps["bin"].transform(X.assign(a=5.0))
    assert (binned[:, 0] == 0).all() and not np.isnan(binned[:, 1:]).any()
    # the feature carries nothing: predictions do not depend on its values at predict time
    np.testing.assert_array_equal(model.predict_proba(X), model.predict_proba(X.assign(a=1e6)))
    assert set(model.predict(X)) <= set(CLASSES)


def test_spca_rf_with_families_named_by_column():
    """Families that name columns work on a DataFrame (the imputer and scaler keep the names);
    before, the sparse PCA saw a bare array and refused the names."""
    X, y = _toy()
    named = make_spca_rf({"ab": ["a", "b"], "cd": ["c", "d"]}, n_estimators=20, random_state=0,
                         n_jobs=1).fit(X, y)
    by_position = make_spca_rf({"ab": [0, 1], "cd": [2, 3]}, n_estimators=20, random_state=0,
                               n_jobs=1).fit(X, y)
    np.testing.assert_array_equal(named.predict_proba(X), by_position.predict_proba(X))
    with pytest.raises(ValueError, match="feature names"):  # reordered columns: refused by name
        named.predict(X[["d", "c", "b", "a"]])
    with pytest.raises(InputError, match="'zz', which is not in the training table"):
        make_spca_rf({"ab": ["a", "zz"], "cd": ["b", "c", "d"]}, n_estimators=5, n_jobs=1).fit(X, y)


def test_registry_says_which_family_column_is_missing():
    """A family naming a column the table lacks was a KeyError; families=None an AttributeError."""
    with pytest.raises(InputError, match=r"feature family 'f' names column 'zz', which is not among "
                                         r"the 2 columns given"):
        make_model("spca_rf", {"f": ["a", "zz"]}, ["a", "b"])
    with pytest.raises(InputError, match="families must be a mapping .*got NoneType"):
        make_model("spca_rf", None, ["a", "b"])
    with pytest.raises(InputError, match="unknown model 'svm'"):
        make_model("svm", None, [])


def _four_columns(seed=0):
    import pandas as pd

    rng = np.random.RandomState(seed)
    X = pd.DataFrame(rng.normal(size=(40, 4)), columns=["a", "b", "c", "d"])
    return X, np.resize(np.array(CLASSES), 40)


@pytest.mark.parametrize("make", [lambda: make_rf(n_estimators=5, random_state=0),
                                  lambda: make_logreg(random_state=0),
                                  lambda: make_spca_rf({"f": ["a", "b"], "g": ["c", "d"]},
                                                       n_estimators=5, random_state=0)],
                         ids=["rf", "logreg", "spca_rf"])
def test_values_too_large_to_standardise_are_refused_by_name(make):
    """A column near 1e300 overflowed the scaler: the forest fitted with the column all zeros
    (silently ignored), logistic regression and the sparse PCA refused NaN values the table
    never had. Now fit names the column, as the other estimators do."""
    X, y = _four_columns()
    X["c"] *= 1e300
    with pytest.raises(InputError, match=r"feature column 'c' has values too large to standardise "
                                         r"\(largest magnitude .*e\+300"):
        make().fit(X, y)


@pytest.mark.parametrize("make", [lambda: make_rf(n_estimators=5, random_state=0),
                                  lambda: make_logreg(random_state=0),
                                  lambda: make_hgb(random_state=0, max_iter=5)],
                         ids=["rf", "logreg", "hgb"])
def test_infinity_is_refused_by_name_in_fit_and_predict(make):
    """scikit-learn's 'Input X contains infinity' named no column."""
    X, y = _four_columns()
    bad = X.copy()
    bad.loc[7, "b"] = -np.inf
    with pytest.raises(InputError, match=r"feature column 'b' has the value -inf \(row 7; 1 such"):
        make().fit(bad, y)
    model = make().fit(X, y)
    with pytest.raises(InputError, match=r"feature column 'b' has the value -inf \(row 7"):
        model.predict(bad)
    with pytest.raises(InputError, match=r"feature column 1 has the value -inf \(row 7, counted"):
        make().fit(bad.to_numpy(), y)


def test_a_table_without_feature_columns_is_refused_in_fit():
    X, y = _four_columns()
    with pytest.raises(InputError, match=r"the table has no feature column"):
        make_rf(n_estimators=5, random_state=0).fit(X[[]], y)
