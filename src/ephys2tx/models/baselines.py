"""The Gouwens et al. 2020 replication and simple baselines, as scikit-learn Pipelines.

Every pipeline starts with a median imputer and a standard scaler, so that
missing values and scaling are learned from the training rows of a fold only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from ephys2tx.models.spca import FamilySparsePCA
from ephys2tx.models.standardise import check_feature_values, check_scaling

#: Defaults of the class-balanced gradient-boosted trees: scikit-learn's own, chosen with no
#: labels. On human cells the study chooses the number of iterations per outer fold by inner
#: cross-validation (:func:`ephys2tx.models.registry.nested_choice`).
BOOSTING_DEFAULTS = {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 31,
                     "l2_regularization": 0.0}

#: Defaults of the class-balanced forest (Gouwens 2020 used a random forest on sPCA scores).
FOREST_DEFAULTS = {"n_estimators": 500, "class_weight": "balanced_subsample",
                   "min_samples_leaf": 1, "max_features": "sqrt"}


class CheckedImputer(SimpleImputer):
    """A :class:`~sklearn.impute.SimpleImputer` that names the column of a value it cannot use.

    ``fit`` refuses inf (scikit-learn's message names no column) and columns whose values are
    too large to standardise (near 1e300: finite, but their squares are not, so the next
    :class:`~sklearn.preprocessing.StandardScaler` of the pipeline gets an infinite scale and
    the column becomes all zeros, silently ignored, or all NaN, refused further on with a
    message about NaN values the table never had). ``transform`` refuses inf by name too.
    """

    def fit(self, X, y=None):
        """Check ``X`` (:func:`~ephys2tx.models.standardise.check_feature_values`, then
        :func:`~ephys2tx.models.standardise.check_scaling`), then learn the fill values."""
        names = [str(c) for c in X.columns] if hasattr(X, "columns") else None
        check_feature_values(X, names)
        super().fit(X, y)
        filled = super().transform(X)
        filled = np.asarray(filled.toarray() if hasattr(filled, "toarray") else filled,  # sparse
                            dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            check_scaling(filled, filled.mean(axis=0), filled.std(axis=0), names)
        return self

    def transform(self, X):
        """Fill missing values; inf is refused naming its column."""
        check_feature_values(X, getattr(self, "feature_names_in_", None))
        return super().transform(X)


def _front():
    return [("impute", CheckedImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler())]


def _names_columns(families) -> bool:
    """Whether a family definition names any column (a string) rather than a position."""
    if isinstance(families, Mapping):
        families = list(families.values())
    if families is None or isinstance(families, (str, bytes)):
        return False
    try:
        return any(isinstance(col, str) for cols in families if not isinstance(cols, (str, bytes))
                   for col in cols)
    except TypeError:  # not a sequence of sequences: FamilySparsePCA says what is wrong
        return False


def make_spca_rf(families=None, *, alpha: float = 1.0, variance_threshold: float = 0.01,
                 n_estimators: int = 500, random_state=None, n_jobs: int | None = -1) -> Pipeline:
    """Standardise -> per-family sparse PCA -> class-balanced random forest.

    ``families`` may name columns (fit on a DataFrame with those columns) or give positions.
    """
    forest = RandomForestClassifier(**{**FOREST_DEFAULTS, "n_estimators": n_estimators},
                                    random_state=random_state, n_jobs=n_jobs)
    front = _front()
    if _names_columns(families):  # the sparse PCA looks the named columns up: keep the names
        front = [(name, step.set_output(transform="pandas")) for name, step in front]
    return Pipeline(front + [
        ("spca", FamilySparsePCA(families=families, alpha=alpha,
                                 variance_threshold=variance_threshold,
                                 random_state=random_state)),
        ("forest", forest),
    ])


def make_rf(*, n_estimators: int = 500, random_state=None, n_jobs: int | None = -1) -> Pipeline:
    """Class-balanced random forest on the plain (imputed) features."""
    forest = RandomForestClassifier(**{**FOREST_DEFAULTS, "n_estimators": n_estimators},
                                    random_state=random_state, n_jobs=n_jobs)
    return Pipeline(_front() + [("forest", forest)])


def make_logreg(*, C: float = 1.0, random_state=None) -> Pipeline:
    """Class-balanced multinomial logistic regression on standardised features."""
    return Pipeline(_front() + [
        ("logreg", LogisticRegression(C=C, class_weight="balanced", max_iter=5000,
                                      random_state=random_state)),
    ])


class QuantileBinner(TransformerMixin, BaseEstimator):
    """Replace each feature by its bin among at most ``max_bins`` training-row quantiles.

    NaN stays NaN. This is the binning that gradient-boosted trees apply
    themselves, done once up front without sample weights: given class
    weights, scikit-learn's ``HistGradientBoostingClassifier`` computes
    weighted percentiles per feature, which costs more than the boosting on
    tables of a few hundred cells; on already-binned input it has nothing to do.

    Parameters
    ----------
    max_bins : int
        At most this many bins per feature (255 is the boosting's own limit).

    Attributes
    ----------
    thresholds_ : list of ndarray
        Per feature, the sorted inner bin edges; ``[nan]`` for a feature with no value in the
        training rows, which is binned as the constant 0 (gradient-boosted trees refuse a
        feature that is missing in every row, and such a feature carries no information).
    """

    def __init__(self, max_bins: int = 255):
        self.max_bins = max_bins

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X, y=None):
        """Learn the bin edges of each feature from the non-missing training values."""
        check_feature_values(X)
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        if int(self.max_bins) < 2:
            raise ValueError(f"max_bins must be at least 2, got {self.max_bins}.")
        levels = np.linspace(0, 1, int(self.max_bins) + 1)[1:-1]
        self.thresholds_ = []
        for column in X.T:
            values = np.unique(column[~np.isnan(column)])
            if len(values) == 0:  # no training value: a constant feature (see thresholds_)
                edges = np.array([np.nan])
            elif len(values) <= int(self.max_bins):
                edges = (values[:-1] + values[1:]) / 2
            else:
                edges = np.unique(np.quantile(values, levels, method="midpoint"))
            self.thresholds_.append(edges)
        return self

    def transform(self, X):
        """Bin index of every value (float; NaN kept)."""
        check_is_fitted(self, "thresholds_")
        check_feature_values(X, getattr(self, "feature_names_in_", None))
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        out = np.empty_like(X)
        for j, edges in enumerate(self.thresholds_):
            out[:, j] = np.searchsorted(edges, X[:, j], side="right")
        out[np.isnan(X)] = np.nan
        empty = [j for j, edges in enumerate(self.thresholds_) if len(edges) and np.isnan(edges[0])]
        out[:, empty] = 0.0  # no value when fitted: one bin, whatever the value now
        return out


def make_hgb(*, random_state=None, **params) -> Pipeline:
    """Class-balanced histogram gradient-boosted trees on the binned features.

    Trees need no scaling and handle missing values natively (NaN goes to
    whichever side of each split fits the training rows best); the only
    preprocessing is :class:`QuantileBinner`, fitted in-fold like every other
    step. ``params`` override :data:`BOOSTING_DEFAULTS`.
    """
    boosting = HistGradientBoostingClassifier(**{**BOOSTING_DEFAULTS, **params},
                                              class_weight="balanced", early_stopping=False,
                                              random_state=random_state)
    return Pipeline([("bin", QuantileBinner()), ("boosting", boosting)])
