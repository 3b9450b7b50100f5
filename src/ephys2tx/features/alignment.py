"""Align a query's feature distributions to a reference before predicting.

* ``quantile``: per feature, each query value is replaced by the reference
  value at the same quantile (rank of the value among the query's values).
  It removes any monotone per-feature distortion (offset, gain, unit drift
  of a rig) but also forces the query's marginals to the reference's, which
  is wrong if the query's class proportions differ a lot from the reference.
* ``moments``: per feature, the query's median and interquartile range are
  matched to the reference's (within-dataset robust standardisation); the
  gentlest marginal alignment, same class-mix assumption.
* ``ot``: optimal transport (POT, exact earth mover's distance) between the
  standardised query and reference cells; each query cell moves to the
  barycentre of the reference cells it is transported to. It can undo
  shifts that mix features, at the same proportions caveat.

Missing values stay missing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from ephys2tx.errors import InputError

__all__ = ["ALIGN_METHODS", "align", "moment_align", "ot_align", "quantile_align"]

ALIGN_METHODS = ("quantile", "ot", "moments")


def _check(query: pd.DataFrame, reference: pd.DataFrame) -> None:
    """Same features, finite values: an inf was treated as missing (``ot``: the cell came back
    NaN), kept as inf (``quantile``) or turned every value of its column into NaN (``moments``),
    without a word."""
    from ephys2tx.data.user_tables import check_finite

    missing = [c for c in query.columns if c not in reference.columns]
    if missing:
        raise InputError(f"cannot align feature {missing[0]!r}: the reference does not have it.")
    check_finite(query, where="the query to align")
    check_finite(reference[list(query.columns)], where="the reference to align to")


def quantile_align(query: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per-feature quantile mapping of ``query`` onto ``reference`` (same column names)."""
    _check(query, reference)
    out = query.astype(float).copy()
    for col in query.columns:
        values = out[col].to_numpy()
        ok = np.isfinite(values)
        ref = reference[col].to_numpy(dtype=float)
        ref = ref[np.isfinite(ref)]
        if ok.sum() < 2 or len(ref) < 2:
            continue
        ranks = pd.Series(values[ok]).rank(method="average").to_numpy()
        q = (ranks - 0.5) / ok.sum()
        values = values.copy()
        values[ok] = np.quantile(ref, q)
        out[col] = values
    return out


def moment_align(query: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per feature, match the query's median and interquartile range to the reference's."""
    _check(query, reference)
    out = query.astype(float).copy()
    for col in query.columns:
        q = out[col].to_numpy()
        r = reference[col].to_numpy(dtype=float)
        if np.isfinite(q).sum() < 5 or np.isfinite(r).sum() < 5:
            continue
        q_med, r_med = np.nanmedian(q), np.nanmedian(r)
        q_iqr = np.subtract(*np.nanpercentile(q, [75, 25]))
        r_iqr = np.subtract(*np.nanpercentile(r, [75, 25]))
        scale = r_iqr / q_iqr if q_iqr > 0 and r_iqr > 0 else 1.0
        out[col] = (q - q_med) * scale + r_med
    return out


def ot_align(query: pd.DataFrame, reference: pd.DataFrame, *, max_reference: int = 3000,
             max_query: int = 3000, random_state=0) -> pd.DataFrame:
    """Barycentric optimal-transport mapping of the query cells onto the reference cells.

    Parameters
    ----------
    query, reference : DataFrame
        Same feature names; NaN is imputed with the reference median for the
        transport and restored afterwards.
    max_reference, max_query : int
        Cells of each side the transport plan is computed on (random subsets
        above these), to bound memory and time (the plan is
        ``max_query x max_reference``). Query cells outside the subset move
        like their nearest subset cell (POT's out-of-sample mapping).
    random_state : int or RandomState
    """
    import ot

    _check(query, reference)
    cols = list(query.columns)
    ref = reference[cols].to_numpy(dtype=float)
    rng = check_random_state(random_state)
    if len(ref) > max_reference:
        ref = ref[rng.choice(len(ref), max_reference, replace=False)]
    med = np.nanmedian(ref, axis=0)
    med = np.where(np.isfinite(med), med, 0.0)
    ref = np.where(np.isnan(ref), med, ref)
    q = query.to_numpy(dtype=float)
    q_missing = ~np.isfinite(q)
    q_filled = np.where(q_missing, med, q)
    mean, sd = ref.mean(axis=0), ref.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    zs, zt = (q_filled - mean) / sd, (ref - mean) / sd
    # centre and scale the query on its own first, so the transport matches shapes, not offsets
    q_sd = zs.std(axis=0)
    zs = (zs - zs.mean(axis=0)) / np.where(q_sd > 0, q_sd, 1.0)
    fit_rows = rng.choice(len(zs), max_query, replace=False) if len(zs) > max_query else slice(None)
    mapping = ot.da.EMDTransport()
    mapping.fit(Xs=zs[fit_rows], Xt=zt)
    moved = mapping.transform(Xs=zs) * sd + mean
    moved = np.where(q_missing, np.nan, moved)
    return pd.DataFrame(moved, index=query.index, columns=cols)


def align(query: pd.DataFrame, reference: pd.DataFrame, method: str, *, random_state=0) -> pd.DataFrame:
    """Dispatch to :func:`quantile_align`, :func:`ot_align` or :func:`moment_align`."""
    if method == "quantile":
        return quantile_align(query, reference)
    if method == "ot":
        return ot_align(query, reference, random_state=random_state)
    if method == "moments":
        return moment_align(query, reference)
    raise InputError(f"unknown alignment {method!r}; use one of {', '.join(ALIGN_METHODS)}.")
