"""Median imputation and standardisation fitted on training rows, stored as plain arrays.

Standardised values are clipped to ``±CLIP_SD`` so that a single wild outlier in a
new table cannot saturate a network or dominate a distance. The parameters are
three float arrays (fill values, means, scales), so a saved model needs no
pickled scikit-learn object for them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLIP_SD", "fit_standardiser", "standardise"]

#: Standardised values are clipped to this many standard deviations.
CLIP_SD = 10.0


def fit_standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median fill values, means and scales of the columns of ``X`` (NaN is missing).

    An all-missing column gets fill 0 (``keep_empty_features``); a constant column scale 1.

    Returns
    -------
    fill, mean, scale : ndarray of float64, shape (n_features,)
    """
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    imputer = SimpleImputer(strategy="median", keep_empty_features=True).fit(X)
    scaler = StandardScaler().fit(imputer.transform(X))
    return (imputer.statistics_.astype(np.float64), scaler.mean_.astype(np.float64),
            scaler.scale_.astype(np.float64))


def standardise(X: np.ndarray, params) -> np.ndarray:
    """Fill, standardise and clip ``X`` with :func:`fit_standardiser`'s ``params``; float32."""
    fill, mean, scale = params
    X = np.where(np.isnan(X), fill, X)
    return np.clip((X - mean) / scale, -CLIP_SD, CLIP_SD).astype(np.float32)
