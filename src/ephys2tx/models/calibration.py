"""Probability calibration (temperature or isotonic scaling) and calibration metrics.

Calibrators act on class probabilities of any classifier (a forest's vote
shares, a network's softmax) and are fitted on out-of-fold predictions, never
on the rows the classifier was trained on. They store their parameters as
plain JSON (:meth:`to_dict` / :func:`calibrator_from_dict`) so a saved model
directory needs no pickle for them.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ephys2tx.errors import InputError

__all__ = ["IsotonicCalibrator", "TemperatureScaler", "calibrator_from_dict",
           "cross_fitted_calibration", "expected_calibration_error", "make_calibrator",
           "reliability_curve"]

_EPS = 1e-6


def _check_proba(proba) -> np.ndarray:
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise InputError(f"probabilities must be a 2-D array with >= 2 classes, got shape {proba.shape}.")
    return proba


def _check_codes(y, n_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or y.min(initial=0) < 0 or y.max(initial=0) >= n_classes:
        raise InputError(f"labels must be integer codes in [0, {n_classes}); encode them first.")
    return y


def _check_scored(proba, y) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities in [0, 1] with one integer code per row, for the calibration metrics."""
    proba = _check_proba(proba)
    y = _check_codes(y, proba.shape[1])
    if y.ndim != 1 or len(y) != len(proba):
        raise InputError(f"need one label code per row of probabilities: {len(proba)} rows, labels "
                         f"of shape {y.shape}.")
    outside = ~np.isfinite(proba) | (proba < 0) | (proba > 1 + 1e-6)
    if outside.any():
        row, col = (int(i) for i in np.argwhere(outside)[0])
        raise InputError(f"probabilities must be finite numbers in [0, 1]; row {row}, class {col} is "
                         f"{float(proba[row, col])!r}: drop the cells without a prediction first.")
    return proba, y


def expected_calibration_error(proba, y, *, n_bins: int = 10) -> float:
    """Top-label ECE: confidence-weighted gap between confidence and accuracy over equal-width bins.

    Parameters
    ----------
    proba : array of shape (n, n_classes)
    y : array of int codes, shape (n,)
    n_bins : int
    """
    curve = reliability_curve(proba, y, n_bins=n_bins)
    counts = np.asarray(curve["count"], dtype=float)
    gaps = np.abs(np.asarray(curve["confidence"]) - np.asarray(curve["accuracy"]))
    return float(np.nansum(gaps * counts) / counts.sum())


def reliability_curve(proba, y, *, n_bins: int = 10) -> dict:
    """Per confidence bin: mean confidence, accuracy and count (empty bins are dropped)."""
    proba, y = _check_scored(proba, y)
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    out = {"bin_low": [], "bin_high": [], "confidence": [], "accuracy": [], "count": []}
    for b in range(n_bins):
        mask = which == b
        if not mask.any():
            continue
        out["bin_low"].append(float(edges[b]))
        out["bin_high"].append(float(edges[b + 1]))
        out["confidence"].append(float(conf[mask].mean()))
        out["accuracy"].append(float(correct[mask].mean()))
        out["count"].append(int(mask.sum()))
    return out


class _Calibrator(TransformerMixin, BaseEstimator):
    """Input checks shared by the calibrators: ``X`` holds class probabilities, ``y`` class codes.

    ``X`` has one column per class (values in [0, 1]; negative values are refused) and ``y``
    integer codes into those columns.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.target_tags.required = True
        return tags

    def _fit_input(self, proba, y):
        try:
            proba, y = validate_data(self, proba, y, dtype=np.float64, ensure_min_samples=2)
        except InputError:
            raise
        except ValueError as exc:  # same message, as the package's input error
            raise InputError(str(exc)) from exc
        check_classification_targets(y)
        if y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(int)  # integral float codes
        return self._checked(proba), _check_codes(y, proba.shape[1])

    def _input(self, proba) -> np.ndarray:
        try:
            proba = validate_data(self, proba, reset=False, dtype=np.float64)
        except InputError:
            raise
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        return self._checked(proba)

    @staticmethod
    def _checked(proba: np.ndarray) -> np.ndarray:
        if proba.shape[1] < 2:
            raise InputError(f"probabilities need one column per class (>= 2), got {proba.shape[1]} "
                             "feature(s).")
        if (proba < 0).any():
            raise InputError("Negative values in data passed to the calibrator: probabilities must "
                             "not be negative.")
        return proba


class TemperatureScaler(_Calibrator):
    """Temperature scaling of class probabilities: ``softmax(log(p) / T)``.

    Parameters
    ----------
    bounds : tuple of float, default=(0.05, 20.0)
        Search interval of the temperature.

    Attributes
    ----------
    temperature_ : float
    """

    def __init__(self, bounds=(0.05, 20.0)):
        self.bounds = bounds

    @staticmethod
    def _scaled(proba: np.ndarray, temperature: float) -> np.ndarray:
        z = np.log(np.clip(proba, _EPS, 1.0)) / temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def fit(self, proba, y):
        """Temperature minimising the negative log-likelihood of ``y``."""
        proba, y = self._fit_input(proba, y)
        low, high = (float(b) for b in self.bounds)
        if not 0 < low < high:
            raise InputError(f"bounds must satisfy 0 < low < high, got {self.bounds!r}.")
        rows = np.arange(len(y))

        def nll(log_t: float) -> float:
            p = self._scaled(proba, math.exp(log_t))
            return float(-np.log(np.clip(p[rows, y], 1e-12, 1.0)).mean())

        res = minimize_scalar(nll, bounds=(math.log(low), math.log(high)), method="bounded",
                              options={"xatol": 1e-4})
        self.temperature_ = float(math.exp(res.x))
        return self

    def transform(self, proba) -> np.ndarray:
        """Calibrated probabilities."""
        check_is_fitted(self, "temperature_")
        return self._scaled(self._input(proba), self.temperature_)

    def to_dict(self) -> dict:
        """JSON parameters."""
        check_is_fitted(self, "temperature_")
        return {"method": "temperature", "temperature": self.temperature_}


class IsotonicCalibrator(_Calibrator):
    """One-vs-rest isotonic regression per class, renormalised to sum to one.

    Attributes
    ----------
    thresholds_ : list of (x, y) arrays
        The isotonic step function of each class.
    """

    def fit(self, proba, y):
        """Fit one increasing map per class on ``(p_k, y == k)``."""
        from sklearn.isotonic import IsotonicRegression

        proba, y = self._fit_input(proba, y)
        self.thresholds_ = []
        for k in range(proba.shape[1]):
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(proba[:, k], (y == k).astype(float))
            self.thresholds_.append((iso.X_thresholds_.copy(), iso.y_thresholds_.copy()))
        return self

    def transform(self, proba) -> np.ndarray:
        """Calibrated probabilities (a row whose maps all give 0 falls back to its input)."""
        check_is_fitted(self, "thresholds_")
        proba = self._input(proba)
        if proba.shape[1] != len(self.thresholds_):
            raise InputError(f"expected {len(self.thresholds_)} classes, got {proba.shape[1]}.")
        out = np.column_stack([np.interp(proba[:, k], x, y) for k, (x, y) in enumerate(self.thresholds_)])
        total = out.sum(axis=1, keepdims=True)
        return np.where(total > 0, out / np.where(total > 0, total, 1.0), proba)

    def to_dict(self) -> dict:
        """JSON parameters."""
        check_is_fitted(self, "thresholds_")
        return {"method": "isotonic",
                "thresholds": [[x.tolist(), y.tolist()] for x, y in self.thresholds_]}


def make_calibrator(method: str):
    """An unfitted calibrator: ``"temperature"`` or ``"isotonic"``."""
    if method == "temperature":
        return TemperatureScaler()
    if method == "isotonic":
        return IsotonicCalibrator()
    raise InputError(f"unknown calibration method {method!r}; use 'temperature' or 'isotonic'.")


def calibrator_from_dict(params: dict):
    """Rebuild a fitted calibrator from :meth:`to_dict` output."""
    method = params.get("method")
    if method == "temperature":
        cal = TemperatureScaler()
        cal.temperature_ = float(params["temperature"])
        return cal
    if method == "isotonic":
        cal = IsotonicCalibrator()
        cal.thresholds_ = [(np.asarray(x, float), np.asarray(y, float)) for x, y in params["thresholds"]]
        return cal
    raise InputError(f"model.json has unknown calibration method {method!r}; re-train the model.")


def cross_fitted_calibration(proba, y, fold_ids, method: str = "temperature") -> np.ndarray:
    """Calibrated out-of-fold probabilities, each fold's calibrator fitted on the other folds.

    This measures calibration on rows whose labels the calibrator never saw
    (the ECE "after" figure).
    """
    proba = _check_proba(proba)
    fold_ids, y = np.asarray(fold_ids), np.asarray(y)
    if fold_ids.shape != (len(proba),) or len(y) != len(proba):
        raise InputError(f"need one label and one fold id per row of probabilities: {len(proba)} "
                         f"rows, labels of shape {y.shape}, fold ids of shape {fold_ids.shape}.")
    if len(np.unique(fold_ids)) < 2:
        raise InputError("cross-fitted calibration needs at least 2 folds (each fold's calibrator "
                         "is fitted on the others); got one fold id.")
    out = np.empty_like(proba)
    for fold in np.unique(fold_ids):
        test = fold_ids == fold
        cal = make_calibrator(method).fit(proba[~test], y[~test])
        out[test] = cal.transform(proba[test])
    return out
