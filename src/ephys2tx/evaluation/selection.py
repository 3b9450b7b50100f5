"""Model choices that never see the cells they are scored on: nested selection and a lockbox.

Two ways, one per kind of choice (``docs/transfer.md``, ``docs/bilstm.md``):

* **Nested** (:class:`InnerCVSelector`): an estimator that, inside its own
  ``fit``, picks one of a few candidate estimators by an inner stratified
  k-fold on the rows it is given, then refits the winner on all of them.
  Cross-validation clones and fits it on each outer training set, so the
  choice is remade per outer fold from that fold's training rows only, and
  each outer test row is predicted by a choice it took no part in. The pick
  of every fold is recorded (:func:`selection_of`, ``metrics.json``).
* **Lockbox** (:func:`lockbox_mask`): a fixed share of the mouse animals,
  drawn by a hash of the animal id (independent of labels, row order and
  library versions). Choices too costly to nest (the BiLSTM defaults) are
  made on the lockbox cells only (``scripts/tune_bilstm.py``), and every
  reported mouse score excludes the lockbox animals.

:func:`inner_validation_scores` scores candidates by inner CV within given
training sets; the tuning scripts use it for exploration (with the lockbox as
the only training set for the BiLSTM).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.model_selection import StratifiedKFold
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ephys2tx.evaluation.metrics import macro_f1
from ephys2tx.evaluation.splits import Fold

#: Share of mouse animals in the lockbox, and the salt of the hash that draws them.
MOUSE_LOCKBOX_FRACTION = 0.15
MOUSE_LOCKBOX_SALT = "ephys2tx-mouse-lockbox-v1"


def lockbox_mask(groups, fraction: float = MOUSE_LOCKBOX_FRACTION,
                 salt: str = MOUSE_LOCKBOX_SALT) -> np.ndarray:
    """Whether each cell's group (animal) is in the lockbox.

    A group is in the lockbox when ``sha256(f"{salt}:{group}")``, read as a
    number in [0, 1), is below ``fraction``: the same animals for any row
    order, subset or library version, and never a function of the labels.

    Parameters
    ----------
    groups : array-like of shape (n_cells,)
        Animal (donor) id per cell.
    fraction : float
        Expected share of groups in the lockbox.
    salt : str
        Changes the draw (a new lockbox needs a new salt).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}.")
    values = pd.Series(np.asarray(groups, dtype=object)).astype(str)
    draw = {g: int(hashlib.sha256(f"{salt}:{g}".encode()).hexdigest()[:15], 16) / 16 ** 15
            for g in values.unique()}
    return values.map(draw).to_numpy() < fraction


def selection_of(model) -> dict | None:
    """What a fitted selector picked (``selected``, ``inner_macro_f1``), else None."""
    if not hasattr(model, "selected_"):
        return None
    return {"selected": model.selected_,
            "inner_macro_f1": {k: float(v) for k, v in model.inner_scores_.items()}}


def _inner_predictions(factory: Callable[[], object], X, y: np.ndarray, inner, fit_params) -> np.ndarray:
    """Predictions of each inner-validation part by a model fitted on the rest (pooled)."""
    pred = np.empty(len(y), dtype=object)
    for train, valid in inner:
        model = factory().fit(_rows(X, train), y[train], **fit_params)
        pred[valid] = model.predict(_rows(X, valid))
    return pred


def _rows(X, index):
    return X.iloc[index] if hasattr(X, "iloc") else np.asarray(X)[index]


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
    unsplit to every fit, never sliced as if they were rows.

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
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X, y, **fit_params):
        """Choose a candidate on inner splits of ``(X, y)``; refit it on all of ``(X, y)``."""
        names = [name for name, _ in self.candidates]
        if not names or len(set(names)) != len(names):
            raise ValueError("candidates must be a non-empty list of (unique name, estimator).")
        if int(self.inner_splits) < 2:
            raise ValueError(f"inner_splits must be at least 2, got {self.inner_splits}.")
        y = np.asarray(y)
        classes, counts = np.unique(y, return_counts=True)
        n_splits = min(int(self.inner_splits), int(counts.min()))
        self.inner_scores_ = {}
        if len(self.candidates) > 1 and n_splits >= 2:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            inner = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed)
                         .split(np.zeros(len(y)), y))
            for name, estimator in self.candidates:
                pred = _inner_predictions(lambda e=estimator: clone(e), X, y, inner, fit_params)
                self.inner_scores_[name] = macro_f1(y, pred, classes)
            self.selected_ = max(names, key=lambda n: (self.inner_scores_[n], -names.index(n)))
        else:
            self.selected_ = names[0]
        chosen = dict(self.candidates)[self.selected_]
        self.best_estimator_ = clone(chosen).fit(X, y, **fit_params)
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


def inner_validation_scores(candidates: Mapping[str, Callable[[], object]], X: pd.DataFrame, y,
                            outer_folds: Sequence[Fold], *, classes, inner_splits: int = 3,
                            fit_params: Mapping[str, dict] | None = None, random_state: int = 0,
                            on_result: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Inner-CV macro-F1 of each candidate on the training rows of each given fold.

    Only the ``train`` rows of each fold are read. Note that a choice made
    from these scores over folds whose training sets cover the scored cells
    has seen those cells' labels: to report scores, nest the choice
    (:class:`InnerCVSelector`) or make it on a lockbox the scores exclude.

    Parameters
    ----------
    candidates : mapping
        Name -> factory returning a fresh, unfitted estimator.
    X : DataFrame of shape (n_cells, n_features)
    y : array-like of shape (n_cells,)
    outer_folds : sequence of Fold
        Training sets to score in (only their ``train`` rows are read).
    classes : sequence of str
    inner_splits : int
        Stratified folds inside each training set.
    fit_params : mapping, optional
        Candidate name -> extra ``fit`` keyword arguments (e.g. the mouse cells
        of a transfer model); candidates not named get none.
    random_state : int
        Seed of the inner splits (fold ``k`` uses ``random_state + k``).
    on_result : callable, optional
        Called with each result row (for progress).

    Returns
    -------
    DataFrame
        One row per fold and candidate: ``outer_fold``, ``candidate``,
        ``inner_macro_f1`` (pooled over the inner folds) and ``seconds``.
    """
    y = np.asarray(y, dtype=object)
    rows = []
    for k, fold in enumerate(outer_folds):
        X_tr, y_tr = X.iloc[fold.train], y[fold.train]
        inner = list(StratifiedKFold(inner_splits, shuffle=True, random_state=random_state + k)
                     .split(np.zeros(len(y_tr)), y_tr))
        for name, factory in candidates.items():
            start = time.perf_counter()
            pred = _inner_predictions(factory, X_tr, y_tr, inner, (fit_params or {}).get(name, {}))
            row = {"outer_fold": k, "candidate": name,
                   "inner_macro_f1": macro_f1(y_tr, pred, list(classes)),
                   "seconds": time.perf_counter() - start}
            rows.append(row)
            if on_result is not None:
                on_result(row)
    return pd.DataFrame(rows)


def selection_summary(scores: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """Mean and sd of the inner macro-F1 per candidate, best first.

    With ``reference``, also the mean paired difference with that candidate
    and the number of outer folds in which the candidate beats it.
    """
    table = scores.pivot(index="outer_fold", columns="candidate", values="inner_macro_f1")
    out = pd.DataFrame({"mean_f1": table.mean(), "sd_f1": table.std(ddof=1),
                        "seconds": scores.groupby("candidate")["seconds"].mean()})
    if reference is not None:
        diff = table.sub(table[reference], axis=0)
        out[f"mean_diff_vs_{reference}"] = diff.mean()
        out[f"folds_better_than_{reference}"] = (diff > 0).sum()
    return out.sort_values("mean_f1", ascending=False)
