"""Nested selection reads only training rows; the lockbox is fixed, label-free and never scored."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

from ephys2tx import CLASSES
from ephys2tx.evaluation.cv import cross_validate, summarise_cv
from ephys2tx.evaluation.selection import lockbox_mask
from ephys2tx.evaluation.splits import make_splits
from ephys2tx.models.registry import nested_choice
from ephys2tx.models.selection import InnerCVSelector, selection_of

POISON = "POISON"


class Spy(ClassifierMixin, BaseEstimator):
    """A classifier that logs the cell ids and labels of every fit and predict (class-level log)."""

    log: list = []

    def __init__(self, depth=3):
        self.depth = depth

    def fit(self, X, y):
        Spy.log.append(("fit", set(X.index), set(np.asarray(y))))
        self.model_ = DecisionTreeClassifier(max_depth=self.depth, random_state=0).fit(X.fillna(0), y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        Spy.log.append(("predict", set(X.index), set()))
        return self.model_.predict(X.fillna(0))


@pytest.fixture(scope="module")
def small(human):
    """A few human cells and features, for quick fits."""
    ids = human.features.index[::3]
    return human.features.loc[ids].iloc[:, :12], human.labels.loc[ids].to_numpy()


def test_selector_fits_and_scores_only_training_rows(small):
    """Inside cross-validation every fit and every selection-time prediction stays in the fold's
    training rows; the test rows are predicted once, after the choice is made."""
    X, y = small
    folds = make_splits(y, n_splits=3, n_repeats=1, random_state=0)
    selector = InnerCVSelector([("depth=3", Spy(3)), ("depth=1", Spy(1))], random_state=0)
    seen: list[dict] = []

    def check(fold, record):
        train, test = set(X.index[fold.train]), set(X.index[fold.test])
        calls = list(Spy.log)
        Spy.log.clear()
        last_fit = max(i for i, (kind, *_rest) in enumerate(calls) if kind == "fit")
        for i, (kind, rows, labels) in enumerate(calls):
            if kind == "fit":
                assert rows <= train and POISON not in labels
            if i < last_fit:
                assert rows <= train, "a test row was read while choosing"
        assert calls[-1] == ("predict", test, set())
        seen.append(record["selection"])

    Spy.log.clear()
    result = cross_validate(selector, X, y, folds, classes=CLASSES, on_fold=check)
    assert len(seen) == 3 and all(set(s["inner_macro_f1"]) == {"depth=3", "depth=1"} for s in seen)
    assert summarise_cv(result, y, n_boot=20)["selection"] == {
        name: sum(s["selected"] == name for s in seen) for name in {s["selected"] for s in seen}}


def test_poisoned_test_labels_change_nothing_but_the_score(human):
    """The nested `hgb` of the study, handed an outer fold whose test labels are all wrong (each
    replaced by another class): the same choice, inner scores and predictions as with the true
    labels; only the score of the fold changes."""
    ids = human.features.index[::3]
    X, y = human.features.loc[ids], human.labels.loc[ids].to_numpy()
    fold = make_splits(y, n_splits=3, n_repeats=1, random_state=0)[:1]
    rotate = dict(zip(CLASSES, CLASSES[1:] + CLASSES[:1]))
    poisoned = y.astype(object).copy()
    poisoned[fold[0].test] = [rotate[c] for c in y[fold[0].test]]
    model = nested_choice("hgb", random_state=0)
    with threadpool_limits(limits=1, user_api="openmp"):  # boosting spin-waits on a busy machine
        clean = cross_validate(model, X, y, fold, classes=CLASSES)
        dirty = cross_validate(model, X, poisoned, fold, classes=CLASSES)
    assert clean.fold_scores[0]["selection"] == dirty.fold_scores[0]["selection"]
    np.testing.assert_array_equal(clean.oof, dirty.oof)
    np.testing.assert_array_equal(clean.oof_proba, dirty.oof_proba)
    assert dirty.fold_scores[0]["macro_f1"] < 0.3 < clean.fold_scores[0]["macro_f1"]


def test_selector_picks_the_better_candidate_and_refits_on_all_rows(small):
    X, y = small
    selector = InnerCVSelector([("chance", DummyClassifier(strategy="stratified", random_state=0)),
                                ("tree", Spy(3))], random_state=0)
    Spy.log.clear()
    selector.fit(X, y)
    assert selector.selected_ == "tree"
    assert selector.inner_scores_["tree"] > selector.inner_scores_["chance"] + 0.1
    assert Spy.log[-1] == ("fit", set(X.index), set(y))  # the refit sees every row given
    assert selection_of(selector)["selected"] == "tree"
    assert selection_of(LogisticRegression()) is None
    np.testing.assert_array_equal(selector.predict(X), selector.best_estimator_.predict(X))
    assert list(selector.classes_) == sorted(set(y))


def test_selector_ties_and_degenerate_inputs(small):
    X, y = small
    same = InnerCVSelector([("first", Spy(3)), ("second", Spy(3))], random_state=0).fit(X, y)
    assert same.selected_ == "first"  # a tie keeps the default
    tiny_y = y.copy()
    tiny_y[0] = "Rare"  # a class with one cell: no stratified inner split, the default is used
    tiny = InnerCVSelector([("a", Spy(3)), ("b", Spy(1))], random_state=0).fit(X, tiny_y)
    assert tiny.selected_ == "a" and tiny.inner_scores_ == {}
    with pytest.raises(ValueError, match="unique name"):
        InnerCVSelector([("a", Spy()), ("a", Spy())]).fit(X, y)
    with pytest.raises(ValueError, match="inner_splits"):
        InnerCVSelector([("a", Spy())], inner_splits=1).fit(X, y)


def test_fit_params_reach_every_candidate_unsplit(human, mouse_visp):
    """Design (d) needs all mouse cells in every inner fit: they are not rows of X."""
    ids = human.features.index[::4]
    X, y = human.features.loc[ids], human.labels.loc[ids].to_numpy()
    model = nested_choice("transfer_d", random_state=0, quick=True)
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(X, y, X_source=mouse_visp.features, y_source=mouse_visp.labels.to_numpy())
    assert set(model.inner_scores_) == {"alignment=zscore", "alignment=quantile"}
    best = model.best_estimator_
    assert model.selected_ == f"alignment={best.alignment}"
    assert best.base_model_[-1].max_iter == best.max_iter == 50  # quick: fixed iterations
    full = nested_choice("transfer_d", random_state=0)  # the full run also chooses iterations
    assert [name for name, _ in full.candidates] == [
        f"alignment={a}, max_iter={n}" for a in ("zscore", "quantile") for n in (100, 300)]
    assert nested_choice("hgb", quick=True) is None and nested_choice("rf") is None
    assert best.source_model_.n_features_in_ == 21  # trained on mouse cells
    assert model.predict(X.iloc[:5]).shape == (5,)


class Recorder(ClassifierMixin, BaseEstimator):
    """Records the fit parameters it receives (requests ``mouse`` when routing asks it to)."""

    seen: list = []

    def __init__(self, depth=2):
        self.depth = depth

    def fit(self, X, y, mouse=None):
        Recorder.seen.append(None if mouse is None else len(mouse))
        self.model_ = DecisionTreeClassifier(max_depth=self.depth, random_state=0).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)


def test_metadata_routing_gives_each_candidate_what_it_requests():
    """With routing on, only candidates that request a fit parameter get it, always whole."""
    import sklearn

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), np.repeat([0, 1, 2], 20)
    mouse = rng.normal(size=(7, 3))
    with sklearn.config_context(enable_metadata_routing=True):
        wants = Recorder(depth=1).set_fit_request(mouse=True)
        ignores = Recorder(depth=2).set_fit_request(mouse=False)
        Recorder.seen = []
        InnerCVSelector([("a", wants), ("b", ignores)], random_state=0).fit(X, y, mouse=mouse)
        # 3 inner fits per candidate + the refit of the chosen one: 7 rows whenever requested
        assert Recorder.seen[:3] == [7, 7, 7] and Recorder.seen[3:6] == [None] * 3
        assert len(Recorder.seen) == 7
        # an unrequested parameter is an error, not silently dropped
        Recorder.seen = []
        with pytest.raises(Exception, match="mouse"):
            InnerCVSelector([("a", Recorder()), ("b", Recorder())]).fit(X, y, mouse=mouse)
    # without routing every candidate receives every fit parameter (the study's calls)
    Recorder.seen = []
    InnerCVSelector([("a", Recorder(depth=1)), ("b", Recorder(depth=2))], random_state=0).fit(
        X, y, mouse=mouse)
    assert Recorder.seen == [7] * 7


def test_the_transfer_models_request_the_mouse_cells_by_default(human, mouse_visp):
    """The mouse cells are training data of every fit: requested without set_fit_request."""
    import sklearn

    from ephys2tx.models.transfer import MouseHumanTransferClassifier, MousePriorClassifier

    for est in (MousePriorClassifier(), MouseHumanTransferClassifier()):
        requests = est.get_metadata_routing().fit.requests
        assert requests == {"X_source": True, "y_source": True}
    ids = human.features.index[::4]
    X, y = human.features.loc[ids], human.labels.loc[ids].to_numpy()
    with sklearn.config_context(enable_metadata_routing=True), threadpool_limits(limits=1, user_api="openmp"):
        model = nested_choice("transfer_d", random_state=0, quick=True)
        model.fit(X, y, X_source=mouse_visp.features, y_source=mouse_visp.labels.to_numpy())
    with threadpool_limits(limits=1, user_api="openmp"):
        plain = nested_choice("transfer_d", random_state=0, quick=True).fit(
            X, y, X_source=mouse_visp.features, y_source=mouse_visp.labels.to_numpy())
    assert model.selected_ == plain.selected_
    np.testing.assert_array_equal(model.predict_proba(X), plain.predict_proba(X))


# --------------------------------------------------------------------------- lockbox


def test_lockbox_is_a_fixed_label_free_draw_of_animals(mouse_visp):
    groups = mouse_visp.groups.to_numpy()
    box = lockbox_mask(groups)
    # Whole animals: an animal is in or out with all its cells.
    by_animal = pd.Series(box).groupby(groups).nunique()
    assert (by_animal == 1).all()
    share = pd.Series(box).groupby(groups).first().mean()
    assert 0.12 < share < 0.19  # about 15% of the animals
    # Independent of row order and of any subset (a hash of the id, not a split).
    order = np.random.default_rng(0).permutation(len(groups))
    np.testing.assert_array_equal(lockbox_mask(groups[order]), box[order])
    np.testing.assert_array_equal(lockbox_mask(groups[:100]), box[:100])
    # The published draw (a change of salt or fraction changes the reported cells).
    assert (int(box.sum()), len(set(groups[box]))) == (658, 159)
    assert not lockbox_mask(groups, fraction=0.0).any()
    with pytest.raises(ValueError):
        lockbox_mask(groups, fraction=1.0)


def test_lockbox_cells_are_never_scored(human, mouse_visp):
    """Every mouse record of the study excludes the lockbox animals, in every fold."""
    from ephys2tx.study import StudyConfig, run_study

    config = StudyConfig.quick_config(models=("logreg",), n_splits=2, n_boot=20, transfer=False,
                                      species=("mouse", "mouse_5class"))
    result = run_study(config, datasets={"mouse": mouse_visp, "human": human})
    box = set(mouse_visp.groups[lockbox_mask(mouse_visp.groups.to_numpy())])
    assert {r["species"] for r in result.records} == {"mouse", "mouse_5class"}
    for sp, res in result.species.items():
        scored = res.dataset
        assert not set(scored.groups) & box
        for cv in res.cv.values():
            for fold in cv.folds:
                cells = scored.features.index[np.concatenate([fold.train, fold.test])]
                assert not set(mouse_visp.groups.reindex(cells).dropna()) & box
    record = next(r for r in result.records if r["species"] == "mouse")
    assert record["lockbox_excluded"]["n_cells"] == 658
    assert record["n_cells"] == mouse_visp.n_cells - 658
    five = next(r for r in result.records if r["species"] == "mouse_5class")
    assert five["classes"] == ["Lamp5", "Pvalb", "Sst", "Vip", "Sncg"]
    assert five["n_cells"] + five["lockbox_excluded"]["n_cells"] == mouse_visp.n_cells + 276
