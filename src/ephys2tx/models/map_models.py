"""Extra reference classifiers for ``ephys2tx map --model``: boosted trees, an ensemble, rig augmentation.

* ``hgb``: class-balanced histogram gradient-boosted trees (the study's
  :func:`ephys2tx.models.baselines.make_hgb`);
* ``ensemble``: the mean of the forest's and the boosted trees' probabilities
  (soft voting);
* ``forest_aug``: the forest trained on the reference plus one copy of it as
  seen through random synthetic rigs (:mod:`ephys2tx.features.rig_shift`),
  so that it leans less on features a rig moves.

:func:`make_map_estimator` builds them; ``ephys2tx.mapping`` calls it for
every model it does not build itself (and
:func:`ephys2tx.mapping.combine_reference_models` the ``ensemble`` from fitted parts). The shift benchmark decides which one
``map`` uses by default (docs/shift.md).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from ephys2tx.models.standardise import check_feature_values

__all__ = ["MAP_MODELS", "RigAugmentedClassifier", "SingleThreaded", "SoftVotingClassifier",
           "make_map_estimator"]

MAP_MODELS = ("forest", "hgb", "ensemble", "forest_aug", "bilstm")


class _Wrapper(ClassifierMixin, BaseEstimator):
    """Input validation shared by the wrappers (NaN allowed: the wrapped pipelines handle it)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _fit_input(self, X, y):
        check_feature_values(X)
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64)
        return X, y

    def _input(self, X):
        check_is_fitted(self)
        check_feature_values(X, getattr(self, "feature_names_in_", None))
        return validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)


class SingleThreaded(_Wrapper):
    """Fit and predict ``estimator`` with one OpenMP/BLAS thread (threadpoolctl).

    Histogram gradient boosting spreads each tree over OpenMP threads; on a
    machine whose cores are busy, the threads wait for each other: fitting
    ``map``'s boosted-trees reference took 117 s with the default threads and
    29 s with one, on 2 cores shared with other jobs.

    Parameters
    ----------
    estimator : estimator
    """

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y):
        """Fit a clone of ``estimator`` with one thread."""
        from threadpoolctl import threadpool_limits

        X, y = self._fit_input(X, y)
        with threadpool_limits(1):
            self.estimator_ = clone(self.estimator).fit(X, y)
        self.classes_ = self.estimator_.classes_
        return self

    def predict_proba(self, X):
        """Probabilities, with one thread."""
        from threadpoolctl import threadpool_limits

        X = self._input(X)
        with threadpool_limits(1):
            return self.estimator_.predict_proba(X)

    def predict(self, X):
        """Most probable class."""
        check_is_fitted(self)
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class SoftVotingClassifier(_Wrapper):
    """Mean of the class probabilities of several classifiers fitted on the same rows.

    Parameters
    ----------
    estimators : list of estimators
        Unfitted; each is cloned in :meth:`fit`.
    """

    def __init__(self, estimators=()):
        self.estimators = estimators

    def fit(self, X, y):
        """Fit a clone of every estimator on ``X, y``."""
        if not self.estimators:
            raise ValueError("SoftVotingClassifier needs at least one estimator.")
        X, y = self._fit_input(X, y)
        if len(np.unique(y)) < 2:
            raise ValueError("SoftVotingClassifier needs at least 2 classes in the data, got 1 class.")
        self.estimators_ = [clone(e).fit(X, y) for e in self.estimators]
        self.classes_ = self.estimators_[0].classes_
        for est in self.estimators_[1:]:
            if not np.array_equal(est.classes_, self.classes_):
                raise ValueError("the estimators disagree on the classes.")
        return self

    def predict_proba(self, X):
        """Mean of the estimators' probabilities."""
        X = self._input(X)
        return np.mean([e.predict_proba(X) for e in self.estimators_], axis=0)

    def predict(self, X):
        """Most probable class."""
        check_is_fitted(self)
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class RigAugmentedClassifier(_Wrapper):
    """Train ``estimator`` on the rows plus copies distorted by random synthetic rigs.

    Parameters
    ----------
    estimator : estimator
    feature_names : list of str
        Canonical names of the columns (they say what a rig does to each).
    n_copies : int
        Distorted copies of the training rows.
    n_rigs : int
        Each copy splits the rows into this many groups, one random rig each.
    random_state : int or None
    """

    def __init__(self, estimator=None, feature_names=(), n_copies=1, n_rigs=20, random_state=None):
        self.estimator = estimator
        self.feature_names = feature_names
        self.n_copies = n_copies
        self.n_rigs = n_rigs
        self.random_state = random_state

    def fit(self, X, y):
        """Augment, then fit a clone of ``estimator``."""
        import pandas as pd

        from ephys2tx.features.rig_shift import apply_rig_shift, sample_rig_shift

        X, y = self._fit_input(X, y)
        names = list(self.feature_names) or [f"x{j}" for j in range(X.shape[1])]
        if len(names) != X.shape[1]:
            raise ValueError(f"feature_names has {len(names)} names for {X.shape[1]} columns.")
        rng = np.random.default_rng(self.random_state)
        parts, labels = [X], [y]
        for _ in range(int(self.n_copies)):
            group = rng.integers(0, int(self.n_rigs), size=len(X))
            copy = pd.DataFrame(np.array(X, dtype=float), columns=names)
            for g in np.unique(group):
                rows = group == g
                copy.loc[rows] = apply_rig_shift(copy.loc[rows], sample_rig_shift(rng)).to_numpy()
            parts.append(copy.to_numpy())
            labels.append(y)
        self.estimator_ = clone(self.estimator).fit(np.vstack(parts), np.concatenate(labels))
        self.classes_ = self.estimator_.classes_
        return self

    def predict_proba(self, X):
        """Probabilities of the augmented model."""
        X = self._input(X)
        return self.estimator_.predict_proba(X)

    def predict(self, X):
        """Most probable class."""
        check_is_fitted(self)
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def make_map_estimator(model: str, features, *, forest, random_state: int):
    """The estimator behind ``map --model`` for ``hgb``, ``ensemble`` and ``forest_aug``.

    Parameters
    ----------
    model : str
    features : list of str
    forest : estimator
        The unfitted forest of ``map`` (the ensemble's and the augmented model's base).
    random_state : int
    """
    from ephys2tx.models.baselines import make_hgb

    if model == "hgb":
        return SingleThreaded(make_hgb(random_state=random_state))
    if model == "ensemble":
        return SoftVotingClassifier([forest, SingleThreaded(make_hgb(random_state=random_state))])
    if model == "forest_aug":
        return RigAugmentedClassifier(forest, feature_names=list(features), random_state=random_state)
    raise ValueError(f"no extra map model {model!r}")
