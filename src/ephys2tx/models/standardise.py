"""Median imputation and standardisation fitted on training rows, stored as plain arrays.

Standardised values are clipped to ``±CLIP_SD`` so that a single wild outlier in a
new table cannot saturate a network or dominate a distance. The parameters are
three float arrays (fill values, means, scales), so a saved model needs no
pickled scikit-learn object for them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLIP_SD", "check_feature_values", "check_scaling", "fit_standardiser", "standardise"]

#: Standardised values are clipped to this many standard deviations.
CLIP_SD = 10.0


def check_scaling(X: np.ndarray, mean: np.ndarray, scale: np.ndarray, names=None) -> None:
    """Refuse columns whose mean or standard deviation overflowed (values near 1e300).

    Such values are finite, so scikit-learn's checks let them through, but their squares are
    not: the scale becomes inf or NaN and every standardised value 0 or NaN (a model that
    silently ignores the column, or a confusing NaN error further on).

    Raises
    ------
    InputError
        Names the first such column (by name if ``names`` is given, else by position).
    """
    from ephys2tx.errors import InputError

    bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(scale)))
    if len(bad):
        j = int(bad[0])
        with np.errstate(invalid="ignore"):
            largest = float(np.nanmax(np.abs(X[:, j]))) if np.isfinite(X[:, j]).any() else float("nan")
        column = repr(str(names[j])) if names is not None else str(j)
        raise InputError(f"feature column {column} has values too large to standardise (largest "
                         f"magnitude {largest:.3g}; {len(bad)} such column(s)); features must be "
                         "measurements in their usual units (mV, ms, MOhm, pA): check the column's "
                         "unit or scaling.")


def check_feature_values(X, names=None) -> None:
    """Refuse a table without columns, and inf and -inf in ``X`` (2-D; NaN, missing, is allowed).

    scikit-learn refuses them too, but its message names no column ("Input X contains
    infinity"). Values that are no numbers are left to the caller's own checks.

    Raises
    ------
    InputError
        No column; or an infinity, naming the first such column (by name if ``X`` is a
        DataFrame, else by ``names`` if given, else by position), its row and the number of
        such values.
    """
    from ephys2tx.errors import InputError

    if hasattr(X, "columns"):  # a table's own column names first (``names``: of an array)
        names = [str(c) for c in X.columns]
    if hasattr(X, "tocoo"):  # a sparse matrix or array (any format): its stored values
        stored = X.tocoo().data
        if np.issubdtype(stored.dtype, np.number) and np.isinf(stored).any():
            raise InputError("the sparse feature matrix holds inf or -inf; features must be finite "
                             "numbers: fix the values, or leave them missing (NaN).")
        return
    try:
        values = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):  # text, objects: scikit-learn's validation says what
        return
    if values.ndim != 2:
        return
    if values.shape[1] == 0:  # numpy's "at least one array or dtype is required" further on
        # scikit-learn's own wording (its estimator checks match it), then what to do
        raise InputError(f"the table has no feature column: 0 feature(s) (shape={values.shape}) "
                         "while a minimum of 1 is required; pass a table with at least one feature "
                         "column.")
    bad = np.isinf(values)
    if not bad.any():
        return
    rows, cols = np.nonzero(bad)
    first = int(np.argmin(cols))  # the first column holding an infinity, its first row
    j, i = int(cols[first]), int(rows[first])
    column = repr(str(names[j])) if names is not None else str(j)
    row = f"row {X.index[i]!r}" if hasattr(X, "index") else f"row {i}, counted from 0"
    raise InputError(f"feature column {column} has the value {float(values[i, j])!r} ({row}; "
                     f"{int(bad[:, j].sum())} such value(s) in it; {len(np.unique(cols))} such "
                     "column(s)); features must be finite numbers: fix the value, or leave it "
                     "missing (NaN).")


def fit_standardiser(X: np.ndarray, names=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median fill values, means and scales of the columns of ``X`` (NaN is missing).

    An all-missing column gets fill 0 (``keep_empty_features``); a constant column scale 1.
    ``names``: the columns' names, for the message of :func:`check_scaling`.

    Returns
    -------
    fill, mean, scale : ndarray of float64, shape (n_features,)

    Raises
    ------
    InputError
        A column whose values are too large to standardise (:func:`check_scaling`).
    """
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    imputer = SimpleImputer(strategy="median", keep_empty_features=True).fit(X)
    with np.errstate(over="ignore", invalid="ignore"):
        scaler = StandardScaler().fit(imputer.transform(X))
    check_scaling(X, scaler.mean_, scaler.scale_, names)
    return (imputer.statistics_.astype(np.float64), scaler.mean_.astype(np.float64),
            scaler.scale_.astype(np.float64))


def standardise(X: np.ndarray, params) -> np.ndarray:
    """Fill, standardise and clip ``X`` with :func:`fit_standardiser`'s ``params``; float32."""
    fill, mean, scale = params
    X = np.where(np.isnan(X), fill, X)
    return np.clip((X - mean) / scale, -CLIP_SD, CLIP_SD).astype(np.float32)
