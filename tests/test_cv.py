"""Cross-validation: in-fold fitting (no test row ever reaches a fit) and determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.metrics import f1_score
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ephys2tx import CLASSES
from ephys2tx.evaluation.cv import cross_validate, summarise_cv
from ephys2tx.evaluation.splits import make_splits
from ephys2tx.models.baselines import make_logreg, make_spca_rf
from ephys2tx.models.registry import family_positions
from ephys2tx.models.spca import FamilySparsePCA

FIT_SPIES = (SimpleImputer, StandardScaler, FamilySparsePCA)


@pytest.fixture(scope="module")
def human_subset(human):
    """A stratified 300-cell subset of the human table (keeps the tests quick)."""
    ids = (human.labels.groupby(human.labels, group_keys=False)
           .apply(lambda s: s.sample(frac=300 / human.n_cells, random_state=0)).index)
    return human.subset(human.features.index.intersection(ids))


@pytest.fixture
def fit_log(monkeypatch):
    """Record the row ids (DataFrame index) every imputer/scaler/sPCA fit sees.

    With ``transform_output="pandas"`` every pipeline step passes a DataFrame
    that keeps the cell ids as index, so each fit's rows are identifiable.
    """
    log: list = []
    for cls in FIT_SPIES:
        original = cls.fit

        def spy(self, X, y=None, _original=original, _cls=cls, **kwargs):
            assert isinstance(X, pd.DataFrame), f"{_cls.__name__}.fit got {type(X)}"
            log.append((_cls.__name__, frozenset(X.index)))
            return _original(self, X, y, **kwargs)

        monkeypatch.setattr(cls, "fit", spy)
    with sklearn.config_context(transform_output="pandas"):
        yield log


def _fits_per_fold(log, folds, run):
    """Run ``run(on_fold)`` and group the fits logged before each fold's end."""
    groups: list[list] = []
    start = 0

    def on_fold(fold, record):
        nonlocal start
        groups.append(log[start:])
        start = len(log)

    run(on_fold)
    assert len(groups) == len(folds)
    return groups


def assert_fits_in_fold(groups, folds, ids, expected_classes=FIT_SPIES):
    """Every fit of a fold saw exactly the fold's training rows, never a test row."""
    for fits, fold in zip(groups, folds):
        assert sorted(name for name, _ in fits) == sorted(c.__name__ for c in expected_classes)
        test_ids, train_ids = set(ids[fold.test]), frozenset(ids[fold.train])
        for name, rows in fits:
            leaked = rows & test_ids
            assert not leaked, f"{name}.fit saw {len(leaked)} test rows (fold {fold.fold})"
            assert rows == train_ids, f"{name}.fit did not see exactly the training rows"


def test_spca_rf_fits_preprocessing_on_training_rows_only(human_subset, fit_log):
    ds = human_subset
    X, y = ds.features, ds.labels.to_numpy()
    folds = make_splits(y, n_splits=3, n_repeats=1, random_state=0)
    model = make_spca_rf(family_positions(ds.families, list(X.columns)), n_estimators=10,
                         random_state=0, n_jobs=1)
    groups = _fits_per_fold(fit_log, folds, lambda cb: cross_validate(
        model, X, y, folds, classes=CLASSES, on_fold=cb))
    assert_fits_in_fold(groups, folds, X.index.to_numpy())


def test_logreg_fits_preprocessing_on_training_rows_only(human_subset, fit_log):
    ds = human_subset
    X, y = ds.features, ds.labels.to_numpy()
    folds = make_splits(y, ds.groups.to_numpy(), scheme="donor", n_splits=3, n_repeats=1,
                        random_state=0)
    groups = _fits_per_fold(fit_log, folds, lambda cb: cross_validate(
        make_logreg(random_state=0), X, y, folds, classes=CLASSES, on_fold=cb))
    assert_fits_in_fold(groups, folds, X.index.to_numpy(), (SimpleImputer, StandardScaler))


def test_leak_detector_catches_preprocessing_fitted_outside_the_folds(human_subset, fit_log):
    """Power check: fitting imputer + scaler on all rows before CV is caught."""
    ds = human_subset
    X, y = ds.features, ds.labels.to_numpy()
    folds = make_splits(y, n_splits=3, n_repeats=1, random_state=0)

    def leaky_run(on_fold):
        front = Pipeline([("impute", SimpleImputer(strategy="median")),
                          ("scale", StandardScaler())]).fit(X)  # sees every row: a leak
        X_ready = front.transform(X)
        spca = FamilySparsePCA(family_positions(ds.families, list(X.columns)), random_state=0)
        model = Pipeline([("spca", spca), ("forest", make_spca_rf(n_estimators=10)[-1])])
        cross_validate(model, X_ready, y, folds, classes=CLASSES, on_fold=on_fold)

    groups = _fits_per_fold(fit_log, folds, leaky_run)
    with pytest.raises(AssertionError, match="test rows"):
        assert_fits_in_fold(groups, folds, X.index.to_numpy())


def test_leak_detector_catches_a_fold_fitted_on_train_plus_test(human_subset, fit_log):
    """Power check: a CV loop that fits the model on train + test rows is caught."""
    ds = human_subset
    X, y = ds.features, ds.labels.to_numpy()
    folds = make_splits(y, n_splits=3, n_repeats=1, random_state=0)

    def leaky_run(on_fold):
        for fold in folds:
            model = make_logreg(random_state=0).fit(X, y)  # every row, not fold.train
            model.predict(X.iloc[fold.test])
            on_fold(fold, {})

    groups = _fits_per_fold(fit_log, folds, leaky_run)
    with pytest.raises(AssertionError, match="test rows"):
        assert_fits_in_fold(groups, folds, X.index.to_numpy(), (SimpleImputer, StandardScaler))


def test_spca_rf_oof_predictions_deterministic(human_subset):
    ds = human_subset
    X, y = ds.features, ds.labels.to_numpy()
    folds = make_splits(y, n_splits=3, n_repeats=1, random_state=0)
    positions = family_positions(ds.families, list(X.columns))

    def run(seed, folds):
        model = make_spca_rf(positions, n_estimators=20, random_state=seed)
        return cross_validate(model, X, y, folds, classes=CLASSES)

    first, second = run(0, folds), run(0, folds)
    np.testing.assert_array_equal(first.oof, second.oof)
    np.testing.assert_array_equal(first.oof_proba, second.oof_proba)
    assert first.macro_f1_per_fold == second.macro_f1_per_fold
    # The seed matters (so the equality above is not vacuous): one fold with another seed.
    other = run(1, folds[:1])
    test = folds[0].test
    assert not np.array_equal(first.oof_proba[0, test], other.oof_proba[0, test])


def test_cv_result_shapes_and_summary(human_subset):
    ds = human_subset
    X, y = ds.features, ds.labels.to_numpy()
    folds = make_splits(y, n_splits=3, n_repeats=2, random_state=0)
    result = cross_validate(make_logreg(random_state=0), X, y, folds, classes=CLASSES,
                            model_name="logreg")
    assert result.oof.shape == (2, len(y))
    assert all(v in CLASSES for v in result.oof.ravel())  # every cell predicted in each repeat
    np.testing.assert_allclose(result.oof_proba.sum(axis=2), 1.0)
    assert len(result.fold_scores) == 6
    summary = summarise_cv(result, y, n_boot=200, random_state=0)
    for metric in ("accuracy", "macro_f1"):
        stats = summary[metric]
        assert stats["mean"] == pytest.approx(np.mean([s[metric] for s in result.fold_scores]))
        # Each estimate sits inside the interval of its own quantity.
        lo, hi = stats["ci95_corrected_t"]
        assert lo < stats["mean"] < hi
        lo, hi = stats["pooled_oof_ci95_cell_bootstrap"]
        assert lo <= stats["pooled_oof"] <= hi
    # The pooled out-of-fold score, recomputed with sklearn.
    pooled = np.mean([f1_score(y, list(row), average="macro") for row in result.oof])
    assert summary["macro_f1"]["pooled_oof"] == pytest.approx(pooled, abs=1e-12)
    assert summary["n_train_mean"] + summary["n_test_mean"] == pytest.approx(len(y))
    assert [s["n_train"] + s["n_test"] for s in result.fold_scores] == [len(y)] * 6
    assert np.sum(summary["confusion_matrix"]) == 2 * len(y)
    assert summary["macro_f1"]["mean"] > 0.5  # far above chance (0.25) on real cells


def test_parallel_folds_give_the_same_results(human_subset):
    """Folds in joblib worker processes (as `ephys2tx run` fits them) change nothing."""
    ds = human_subset
    X, y = ds.features, ds.labels.to_numpy()
    folds = make_splits(y, n_splits=3, n_repeats=1, random_state=0)
    model = make_spca_rf(family_positions(ds.families, list(X.columns)), n_estimators=20,
                         random_state=0)
    serial = cross_validate(model, X, y, folds, classes=CLASSES, n_jobs=1)
    parallel = cross_validate(model, X, y, folds, classes=CLASSES, n_jobs=2)
    np.testing.assert_array_equal(serial.oof, parallel.oof)
    np.testing.assert_array_equal(serial.oof_proba, parallel.oof_proba)
    assert serial.macro_f1_per_fold == parallel.macro_f1_per_fold


def test_models_sharing_the_workers_give_their_own_results(human_subset):
    """cross_validate_many (all folds of several models in one pool) = one cross_validate each."""
    from ephys2tx.evaluation.cv import CVTask, cross_validate_many

    ds = human_subset
    X, y = ds.features, ds.labels.to_numpy()
    folds = make_splits(y, n_splits=3, n_repeats=1, random_state=0)
    models = {"spca_rf": make_spca_rf(family_positions(ds.families, list(X.columns)),
                                      n_estimators=20, random_state=0),
              "logreg": make_logreg(random_state=0)}
    import threading

    seen = {name: [] for name in models}
    lock = threading.Lock()  # callbacks that cannot be pickled (e.g. a progress bar) stay home

    def on_fold(fold, record, name):
        with lock:
            seen[name].append(fold.fold)

    tasks = [CVTask(model, X, y, folds, classes=CLASSES, model_name=name,
                    on_fold=lambda fold, record, name=name: on_fold(fold, record, name))
             for name, model in models.items()]
    together = cross_validate_many(tasks, n_jobs=2)
    for (name, model), result in zip(models.items(), together):
        alone = cross_validate(model, X, y, folds, classes=CLASSES, n_jobs=1)
        assert result.model == name and sorted(seen[name]) == [0, 1, 2]
        np.testing.assert_array_equal(result.oof, alone.oof)
        np.testing.assert_array_equal(result.oof_proba, alone.oof_proba)
        assert [s["fold"] for s in result.fold_scores] == [0, 1, 2]
        assert result.macro_f1_per_fold == alone.macro_f1_per_fold


@pytest.mark.parametrize("cores, expected", [(8, [3]), (2, [2]), (1, [])])
def test_the_pool_has_no_more_workers_than_folds_and_cores(human_subset, monkeypatch, cores,
                                                           expected):
    # Before: joblib started all n_jobs workers at once (`run --jobs 256`: 256 processes, each
    # with its own copy of the libraries, for a handful of folds).
    import joblib

    from ephys2tx.evaluation import cv

    sizes = []

    class RecordingParallel(joblib.Parallel):
        def __init__(self, n_jobs=None, **kwargs):
            sizes.append(n_jobs)
            super().__init__(n_jobs=n_jobs, **kwargs)

    monkeypatch.setattr(joblib, "Parallel", RecordingParallel)
    monkeypatch.setattr(cv, "usable_cores", lambda: cores, raising=False)
    ds = human_subset
    X, y = ds.features, ds.labels.to_numpy()
    folds = make_splits(y, n_splits=3, n_repeats=1, random_state=0)
    result = cross_validate(make_logreg(random_state=0), X, y, folds, classes=CLASSES, n_jobs=256)
    assert sizes == expected
    alone = cross_validate(make_logreg(random_state=0), X, y, folds, classes=CLASSES, n_jobs=1)
    np.testing.assert_array_equal(result.oof, alone.oof)


def _warning_data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 5)), columns=list("abcde"))
    y = np.array(["A", "B", "C"] * 20)
    return X, y, make_splits(y, None, scheme="stratified", n_splits=3, n_repeats=1, random_state=0)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_library_warnings_of_the_folds_are_counted_not_printed(n_jobs, capfd):
    """s8: `ephys2tx run` printed scikit-learn's ConvergenceWarning of every fold on the terminal.
    They are counted per fold and per model; the predictions are those of the same fits."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    X, y, folds = _warning_data()
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        res = cross_validate(LogisticRegression(max_iter=1), X, y, folds, classes=["A", "B", "C"],
                             n_jobs=n_jobs)
    assert escaped == []
    assert "Warning" not in capfd.readouterr().err  # nor from the worker processes
    assert [s["warnings"]["ConvergenceWarning"]["count"] for s in res.fold_scores] == [1, 1, 1]
    summary = summarise_cv(res, y, n_boot=10)["library_warnings"]
    assert summary["ConvergenceWarning"]["count"] == 3
    assert summary["ConvergenceWarning"]["example"].startswith("lbfgs failed to converge")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = cross_validate(LogisticRegression(max_iter=1), X, y, folds, classes=["A", "B", "C"])
    np.testing.assert_array_equal(res.oof, plain.oof)
    quiet = cross_validate(LogisticRegression(max_iter=1000), X, y, folds, classes=["A", "B", "C"])
    assert "library_warnings" not in summarise_cv(quiet, y, n_boot=10)
    assert not any("warnings" in s for s in quiet.fold_scores)


def test_library_warnings_reissues_the_warnings_of_ephys2tx_itself():
    """ephys2tx's own warnings (e.g. an unreadable fold cache entry) still reach the user."""
    import warnings

    from ephys2tx.evaluation.cv import library_warnings, merge_warning_counts
    from ephys2tx.evaluation.fold_cache import content_hash

    counts: dict = {}
    with pytest.warns(RuntimeWarning, match="own"):
        with library_warnings(counts):
            warnings.warn("a library's", UserWarning)  # issued here, in tests/: not ephys2tx
            warnings.warn_explicit("own", RuntimeWarning, content_hash.__code__.co_filename, 1)
    assert counts == {"UserWarning": {"count": 1, "example": "a library's"}}
    assert merge_warning_counts([counts, None, counts]) == {"UserWarning": {"count": 2, "example": "a library's"}}
