"""Out-of-distribution scores: distance of a cell to the reference, in standardised feature space.

Two detectors, both storing plain JSON parameters:

* :class:`MahalanobisOOD` (default): the smallest Mahalanobis distance to a
  class mean, with one shared, Ledoit-Wolf shrunk within-class covariance.
* :class:`KNNDistanceOOD`: mean Euclidean distance to the ``k`` nearest
  reference cells (stores the standardised reference rows).

Missing values are imputed with the reference medians, then features are
standardised and clipped to ±10 SD. The flag threshold is a quantile of
*out-of-fold* reference scores (:meth:`set_threshold`), so that the false-alarm
rate on new in-distribution cells is the stated one (5% by default).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_consistent_length, column_or_1d
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ephys2tx.errors import InputError
from ephys2tx.models.standardise import CLIP_SD, check_feature_values, check_scaling

__all__ = ["KNNDistanceOOD", "MahalanobisOOD", "make_ood", "ood_from_dict"]

class _StandardisedOOD(BaseEstimator):
    """Imputation + standardisation shared by the detectors (NaN allowed: imputed)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _fit_scaling(self, X) -> np.ndarray:
        check_feature_values(X)
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64,
                          ensure_min_samples=3)
        with np.errstate(all="ignore"):
            med = np.nanmedian(X, axis=0)
        self.impute_values_ = np.where(np.isfinite(med), med, 0.0)
        Z = np.where(np.isnan(X), self.impute_values_, X)
        with np.errstate(over="ignore", invalid="ignore"):
            self.mean_ = Z.mean(axis=0)
            scale = Z.std(axis=0)
        check_scaling(Z, self.mean_, scale, getattr(self, "feature_names_in_", None))
        self.scale_ = np.where(scale > 0, scale, 1.0)
        return self._standardise(X)

    def _standardise(self, X) -> np.ndarray:
        shape = getattr(X, "shape", ())
        if len(shape) == 2 and shape[1] != self.n_features_in_:
            raise InputError(f"X has {shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input: the OOD detector expects "
                             f"{self.n_features_in_} features, got shape {tuple(shape)}.")
        check_feature_values(X, getattr(self, "feature_names_in_", None))
        # a float64 copy, modified in place below
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64,
                          copy=True)
        missing = np.isnan(X)
        if missing.any():
            X[missing] = np.take(self.impute_values_, np.nonzero(missing)[1])
        X -= self.mean_
        X /= self.scale_
        return np.clip(X, -CLIP_SD, CLIP_SD, out=X)

    def set_threshold(self, reference_scores, false_alarm_rate: float | None = None):
        """Flag threshold = the ``1 - false_alarm_rate`` quantile of in-distribution scores."""
        rate = self.false_alarm_rate if false_alarm_rate is None else false_alarm_rate
        if not 0 < rate < 1:
            raise InputError(f"false_alarm_rate must be in (0, 1), got {rate!r}.")
        scores = np.asarray(reference_scores, dtype=float)
        self.threshold_ = float(np.quantile(scores[np.isfinite(scores)], 1.0 - rate))
        return self

    def predict(self, X) -> np.ndarray:
        """True where the cell is out of distribution (score above the threshold)."""
        check_is_fitted(self, "threshold_")
        return self.score_samples(X) > self.threshold_

    def _base_dict(self) -> dict:
        return {"impute_values": self.impute_values_.tolist(), "mean": self.mean_.tolist(),
                "scale": self.scale_.tolist(), "threshold": self.threshold_,
                "false_alarm_rate": self.false_alarm_rate}

    def _load_base(self, params: dict) -> None:
        self.impute_values_ = np.asarray(params["impute_values"], float)
        self.mean_ = np.asarray(params["mean"], float)
        self.scale_ = np.asarray(params["scale"], float)
        self.threshold_ = float(params["threshold"])
        self.n_features_in_ = len(self.mean_)


class MahalanobisOOD(_StandardisedOOD):
    """Minimum class-conditional Mahalanobis distance with a shared shrunk covariance.

    Parameters
    ----------
    false_alarm_rate : float, default=0.05
        Share of in-distribution cells flagged (sets the threshold).
    class_conditional : bool, default=True
        One mean per class (else one global mean).

    Attributes
    ----------
    means_ : ndarray (n_groups, n_features)
    precision_ : ndarray (n_features, n_features)
    threshold_ : float
        Set in ``fit`` from the training scores; :meth:`set_threshold` with
        out-of-fold scores replaces it.
    """

    def __init__(self, false_alarm_rate=0.05, class_conditional=True):
        self.false_alarm_rate = false_alarm_rate
        self.class_conditional = class_conditional

    def fit(self, X, y=None):
        """Fit imputation, scaling, class means and the shared covariance."""
        from sklearn.covariance import LedoitWolf

        Z = self._fit_scaling(X)
        if self.class_conditional:
            if y is None:
                raise InputError("class_conditional=True needs the class labels y.")
            y = column_or_1d(y, warn=True)
            check_consistent_length(Z, y)
            check_classification_targets(y)
            groups = [y == c for c in np.unique(y)]
        else:
            groups = [np.ones(len(Z), bool)]
        if all(g.sum() < 2 for g in groups):
            raise InputError(f"MahalanobisOOD needs a class with at least 2 cells to estimate the "
                             f"within-class spread; every one of the {len(groups)} class(es) has 1 "
                             "cell: add cells, or use class_conditional=False.")
        self.means_ = np.vstack([Z[g].mean(axis=0) for g in groups])
        centred = np.vstack([Z[g] - Z[g].mean(axis=0) for g in groups])
        self.precision_ = LedoitWolf(assume_centered=True).fit(centred).precision_
        self.set_threshold(self._score_z(Z))
        return self

    def score_samples(self, X) -> np.ndarray:
        """OOD score: smallest Mahalanobis distance to a class mean (higher = more unusual)."""
        check_is_fitted(self, "precision_")
        return self._score_z(self._standardise(X))

    def _score_z(self, Z: np.ndarray) -> np.ndarray:
        # precision = W W^T, so d^T P d = |W^T d|^2: two matrix products for all classes at once
        W = np.linalg.cholesky(self.precision_)
        ZW, MW = Z @ W, self.means_ @ W
        d2 = (ZW ** 2).sum(axis=1)[:, None] - 2.0 * ZW @ MW.T + (MW ** 2).sum(axis=1)[None, :]
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0))

    def to_dict(self) -> dict:
        """JSON parameters."""
        check_is_fitted(self, "threshold_")
        return {"method": "mahalanobis", "class_conditional": bool(self.class_conditional),
                "means": self.means_.tolist(), "precision": self.precision_.tolist(),
                **self._base_dict()}


class KNNDistanceOOD(_StandardisedOOD):
    """Mean distance to the ``n_neighbors`` nearest reference cells (standardised features).

    Parameters
    ----------
    n_neighbors : int, default=10
    false_alarm_rate : float, default=0.05
    """

    def __init__(self, n_neighbors=10, false_alarm_rate=0.05):
        self.n_neighbors = n_neighbors
        self.false_alarm_rate = false_alarm_rate

    def fit(self, X, y=None):
        """Store the standardised reference; threshold from leave-one-out training scores."""
        self.reference_ = self._fit_scaling(X).astype(np.float32)
        self.set_threshold(self._score_z(self.reference_, exclude_self=True))
        return self

    def _score_z(self, Z: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        from sklearn.neighbors import NearestNeighbors

        k = int(self.n_neighbors) + int(exclude_self)
        k = min(k, len(self.reference_))
        nn = NearestNeighbors(n_neighbors=k).fit(self.reference_)
        dist, _ = nn.kneighbors(Z.astype(np.float32))
        return dist[:, int(exclude_self):].mean(axis=1)

    def score_samples(self, X) -> np.ndarray:
        """OOD score: mean distance to the nearest reference cells."""
        check_is_fitted(self, "reference_")
        return self._score_z(self._standardise(X))

    def to_dict(self) -> dict:
        """JSON parameters (includes the standardised reference rows)."""
        check_is_fitted(self, "threshold_")
        return {"method": "knn", "n_neighbors": int(self.n_neighbors),
                "reference": np.round(self.reference_, 5).tolist(), **self._base_dict()}


def make_ood(method: str = "mahalanobis", *, false_alarm_rate: float = 0.05):
    """An unfitted detector: ``"mahalanobis"`` or ``"knn"``."""
    if method == "mahalanobis":
        return MahalanobisOOD(false_alarm_rate=false_alarm_rate)
    if method == "knn":
        return KNNDistanceOOD(false_alarm_rate=false_alarm_rate)
    raise InputError(f"unknown OOD method {method!r}; use 'mahalanobis' or 'knn'.")


def ood_from_dict(params: dict):
    """Rebuild a fitted detector from its :meth:`to_dict` output."""
    method = params.get("method")
    if method == "mahalanobis":
        det = MahalanobisOOD(false_alarm_rate=params["false_alarm_rate"],
                             class_conditional=params["class_conditional"])
        det.means_ = np.asarray(params["means"], float)
        det.precision_ = np.asarray(params["precision"], float)
    elif method == "knn":
        det = KNNDistanceOOD(n_neighbors=params["n_neighbors"],
                             false_alarm_rate=params["false_alarm_rate"])
        det.reference_ = np.asarray(params["reference"], np.float32)
    else:
        raise InputError(f"model.json has unknown OOD method {method!r}; re-train the model.")
    det._load_base(params)
    return det
