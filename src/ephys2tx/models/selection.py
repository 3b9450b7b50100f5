"""Nested model choice as an estimator: :class:`InnerCVSelector`.

It lives with the models (a meta-estimator, like scikit-learn's
``GridSearchCV``) so that the model registry can build it without importing
the evaluation layer; :mod:`ephys2tx.evaluation.selection` holds the lockbox
and the exploration helpers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.utils import _safe_indexing, check_random_state, get_tags
from sklearn.utils._metadata_requests import MetadataRouter, MethodMapping, process_routing
from sklearn.utils.metadata_routing import _routing_enabled
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

__all__ = ["InnerCVSelector", "inner_predictions", "selection_of"]


def macro_f1(y_true, y_pred, classes) -> float:
    """Macro-F1 over ``classes`` (as :func:`ephys2tx.evaluation.metrics.macro_f1`)."""
    return float(f1_score(y_true, y_pred, labels=list(classes), average="macro", zero_division=0))


def selection_of(model) -> dict | None:
    """What a fitted selector picked (``selected``, ``inner_macro_f1``), else None."""
    if not hasattr(model, "selected_"):
        return None
    return {"selected": model.selected_,
            "inner_macro_f1": {k: float(v) for k, v in model.inner_scores_.items()}}


def inner_predictions(factory: Callable[[], object], X, y: np.ndarray, inner, fit_params) -> np.ndarray:
    """Predictions of each inner-validation part by a model fitted on the rest (pooled)."""
    pred = np.empty(len(y), dtype=y.dtype)  # object for string labels, as the labels
    for train, valid in inner:
        model = factory().fit(_rows(X, train), y[train], **fit_params)
        pred[valid] = model.predict(_rows(X, valid))
    return pred


def _rows(X, index):
    if hasattr(X, "iloc") or issparse(X) or isinstance(X, np.ndarray):
        return _safe_indexing(X, index)  # DataFrame, array or (CSR) sparse rows
    return np.asarray(X)[index]


def _chosen_has(attr: str):
    """Whether the chosen candidate (before fitting: every candidate) has method ``attr``."""
    def check(self) -> bool:
        if hasattr(self, "best_estimator_"):
            return hasattr(self.best_estimator_, attr)
        return all(hasattr(est, attr) for _, est in self.candidates)
    return check


class InnerCVSelector(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Pick one of a few candidates by inner cross-validation, then refit it on all rows.

    ``fit(X, y)`` splits ``(X, y)`` by a stratified k-fold, fits every
    candidate on each inner-training part, scores the pooled inner-validation
    predictions by macro-F1, keeps the best (ties go to the earlier
    candidate) and refits it on all of ``(X, y)``. Used inside an outer
    cross-validation it is nested model selection: only the outer training
    rows are ever given to it.

    Unlike :class:`~sklearn.model_selection.GridSearchCV`, the candidates are
    named estimators of any kind, and extra ``fit`` keyword arguments (e.g.
    the mouse cells of a transfer model, which are not rows of ``X``) go
    unsplit to every fit, never sliced as if they were rows. With scikit-learn's
    metadata routing enabled, each candidate receives the fit parameters it
    requests (``set_fit_request``; the transfer models request the mouse cells
    by default); without it, every candidate receives all of them.

    Parameters
    ----------
    candidates : list of (str, estimator)
        Named candidates, the default first.
    inner_splits : int
        Stratified inner folds (lowered to the smallest class count; with
        fewer than 2 cells in some class the first candidate is taken).
    random_state : int, RandomState or None
        Seed of the inner splits.

    Attributes
    ----------
    selected_ : str
        Name of the chosen candidate.
    inner_scores_ : dict
        Candidate -> pooled inner-validation macro-F1 (empty if no inner CV ran).
    best_estimator_ : estimator
        The chosen candidate, refitted on all rows.
    classes_ : ndarray
    """

    def __init__(self, candidates, *, inner_splits: int = 3, random_state=None):
        self.candidates = candidates
        self.inner_splits = inner_splits
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            candidates = [get_tags(est) for _, est in self.candidates]
        except (TypeError, ValueError):  # not a list of (name, estimator): fit says so
            return tags
        tags.input_tags.allow_nan = bool(candidates) and all(t.input_tags.allow_nan for t in candidates)
        tags.input_tags.sparse = bool(candidates) and all(t.input_tags.sparse for t in candidates)
        return tags

    def get_metadata_routing(self):
        """Routing of ``fit`` parameters: each candidate's ``fit`` gets what it requests."""
        router = MetadataRouter(owner=self)
        for name, estimator in self.candidates:
            router.add(**{name: estimator}, method_mapping=MethodMapping().add(caller="fit", callee="fit"))
        return router

    def fit(self, X, y, **fit_params):
        """Choose a candidate on inner splits of ``(X, y)``; refit it on all of ``(X, y)``."""
        names = [name for name, _ in self.candidates]
        if not names or len(set(names)) != len(names):
            raise ValueError("candidates must be a non-empty list of (unique name, estimator).")
        if int(self.inner_splits) < 2:
            raise ValueError(f"inner_splits must be at least 2, got {self.inner_splits}.")
        y = column_or_1d(y, warn=True)
        if issparse(X):
            X = X.tocsr()  # row-indexable for the inner splits
        check_classification_targets(y)
        if _routing_enabled():
            routed = process_routing(self, "fit", **fit_params)
            params_of = {name: dict(routed[name].fit) for name in names}
        else:
            params_of = {name: fit_params for name in names}
        classes, counts = np.unique(y, return_counts=True)
        n_splits = min(int(self.inner_splits), int(counts.min()))
        self.inner_scores_ = {}
        if len(self.candidates) > 1 and n_splits >= 2:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            inner = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed)
                         .split(np.zeros(len(y)), y))
            for name, estimator in self.candidates:
                pred = inner_predictions(lambda e=estimator: clone(e), X, y, inner, params_of[name])
                self.inner_scores_[name] = macro_f1(y, pred, classes)
            self.selected_ = max(names, key=lambda n: (self.inner_scores_[n], -names.index(n)))
        else:
            self.selected_ = names[0]
        chosen = dict(self.candidates)[self.selected_]
        self.best_estimator_ = clone(chosen).fit(X, y, **params_of[self.selected_])
        self.classes_ = self.best_estimator_.classes_
        for attr in ("n_features_in_", "feature_names_in_"):
            if hasattr(self.best_estimator_, attr):
                setattr(self, attr, getattr(self.best_estimator_, attr))
        return self

    def predict(self, X):
        """Predictions of the chosen candidate."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X)

    @available_if(_chosen_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities of the chosen candidate."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict_proba(X)


