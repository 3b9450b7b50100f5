"""Confidence intervals and paired model comparisons.

Two kinds of uncertainty, each attached to the quantity it belongs to:

* **mean of per-fold scores** (what ``macro_f1.mean`` reports): a corrected
  resampled t interval over the folds (Nadeau & Bengio 2003; Bouckaert &
  Frank 2004 for repeated k-fold). Its variance ``(1/J + n_test/n_train) s^2``
  includes the training-set variance that overlapping training sets hide
  from the plain fold standard error.
* **pooled out-of-fold score** (the score of every cell's out-of-fold
  prediction, averaged over repeats): a percentile bootstrap over cells. It
  treats the fitted models as fixed, so it ignores training variance.

The cell bootstrap works on integer-coded predictions so that a thousand
resamples of a few thousand cells take milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as _scipy_stats


def encode(labels, classes) -> np.ndarray:
    """Integer codes of ``labels`` in ``classes`` order (-1 for anything else)."""
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(v, -1) for v in np.asarray(labels, dtype=object)], dtype=np.int64)


def _batched_scores(true_codes: np.ndarray, pred_codes: np.ndarray, n_classes: int):
    """Macro-F1 and accuracy for each row of (n_batches, n_cells) code matrices."""
    n_batches = true_codes.shape[0]
    k = n_classes
    valid_pred = np.where(pred_codes < 0, k, pred_codes)  # unknown predictions: extra column
    offsets = (np.arange(n_batches)[:, None] * k * (k + 1))
    flat = offsets + true_codes * (k + 1) + valid_pred
    counts = np.bincount(flat.ravel(), minlength=n_batches * k * (k + 1)).reshape(n_batches, k, k + 1)
    tp = counts[:, np.arange(k), np.arange(k)].astype(float)
    support = counts.sum(axis=2).astype(float)
    predicted = counts[:, :, :k].sum(axis=1).astype(float)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    accuracy = tp.sum(axis=1) / true_codes.shape[1]
    return f1.mean(axis=1), accuracy


def repeat_scores(true_codes: np.ndarray, oof_codes: np.ndarray, n_classes: int):
    """Macro-F1 and accuracy of each repeat's out-of-fold predictions.

    Parameters
    ----------
    true_codes : (n_cells,) int array
    oof_codes : (n_repeats, n_cells) int array
    """
    tiled = np.broadcast_to(true_codes, oof_codes.shape)
    return _batched_scores(np.ascontiguousarray(tiled), oof_codes, n_classes)


def bootstrap_scores(true_codes: np.ndarray, oof_codes: np.ndarray, n_classes: int, *,
                     n_boot: int = 1000, random_state: int = 0) -> dict[str, np.ndarray]:
    """Bootstrap distribution of macro-F1 and accuracy over cells.

    Each resample draws cells with replacement; its score is the mean over
    repeats of the score of that repeat's out-of-fold predictions on the
    resampled cells. The same resamples are used for every repeat.

    Returns
    -------
    dict
        ``macro_f1`` and ``accuracy``: arrays of shape (n_boot,).
    """
    rng = np.random.default_rng(random_state)
    n_cells = true_codes.shape[0]
    idx = rng.integers(0, n_cells, size=(n_boot, n_cells))
    f1 = np.zeros(n_boot)
    acc = np.zeros(n_boot)
    for codes in np.atleast_2d(oof_codes):
        f, a = _batched_scores(true_codes[idx], codes[idx], n_classes)
        f1 += f
        acc += a
    n_rep = np.atleast_2d(oof_codes).shape[0]
    return {"macro_f1": f1 / n_rep, "accuracy": acc / n_rep}


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> list[float]:
    """Two-sided percentile interval."""
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def corrected_resampled_t(values, n_train, n_test, *, level: float = 0.95) -> dict:
    """Corrected resampled t statistics of the mean of per-fold values.

    For ``J`` folds with values ``d_j`` (a score, or a paired difference of
    scores), the variance of the mean is estimated as
    ``(1/J + n_test/n_train) * s^2`` with ``s^2`` the sample variance of the
    ``d_j`` (Nadeau & Bengio 2003, *Inference for the generalization error*;
    the same correction for repeated k-fold in Bouckaert & Frank 2004). The
    ``n_test/n_train`` term accounts for the overlap of the training sets,
    which makes fold scores positively correlated. The test and interval use
    a t distribution with ``J - 1`` degrees of freedom.

    Parameters
    ----------
    values : sequence of float
        One value per fold (all repeats).
    n_train, n_test : float or sequence of float
        Training and test sizes of the folds (sequences are averaged: grouped
        folds differ a little in size).
    level : float
        Confidence level of the interval.

    Returns
    -------
    dict
        ``mean``, ``sd`` (sample sd of the values), ``se`` (corrected standard
        error), ``t``, ``df``, ``p`` (two-sided, H0: expected value 0),
        ``ci`` (the interval, ``[lo, hi]``), ``n_folds``, ``n_train``,
        ``n_test`` (the sizes used). With fewer than 2 folds everything but
        the mean is NaN.
    """
    d = np.asarray(values, dtype=float)
    n_train = float(np.mean(n_train))
    n_test = float(np.mean(n_test))
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"fold sizes must be positive, got n_train={n_train}, n_test={n_test}.")
    J = d.size
    out = {"mean": float(d.mean()) if J else float("nan"), "n_folds": int(J),
           "n_train": n_train, "n_test": n_test}
    if J < 2:
        nan = float("nan")
        return {**out, "sd": nan, "se": nan, "t": nan, "df": nan, "p": nan, "ci": [nan, nan]}
    sd = float(d.std(ddof=1))
    se = float(np.sqrt((1.0 / J + n_test / n_train) * sd ** 2))
    df = J - 1
    mean = out["mean"]
    if se == 0.0:
        t, p = (0.0, 1.0) if mean == 0.0 else (float(np.sign(mean) * np.inf), 0.0)
        ci = [mean, mean]
    else:
        t = mean / se
        p = float(2 * _scipy_stats.t.sf(abs(t), df))
        half = float(_scipy_stats.t.ppf(0.5 + level / 2, df)) * se
        ci = [mean - half, mean + half]
    return {**out, "sd": sd, "se": se, "t": float(t), "df": int(df), "p": float(p),
            "ci": [float(ci[0]), float(ci[1])]}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm (1979) step-down adjusted p-values (family-wise error), in the input order.

    NaN p-values are left NaN and do not count towards the family size.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out.tolist()
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def paired_difference(true_codes: np.ndarray, oof_a: np.ndarray, oof_b: np.ndarray,
                      n_classes: int, fold_scores_a, fold_scores_b, n_train, n_test, *,
                      n_boot: int = 1000, random_state: int = 0) -> dict:
    """Compare model A with model B evaluated on the same folds (A - B).

    Parameters
    ----------
    true_codes : (n_cells,) int array
    oof_a, oof_b : (n_repeats, n_cells) int arrays
        Out-of-fold predictions of each model, same folds.
    fold_scores_a, fold_scores_b : sequence of float
        Per-fold macro-F1 of each model, same fold order.
    n_train, n_test : sequence of int
        Training and test sizes of those folds.

    Returns
    -------
    dict
        Mean of per-fold differences with its corrected resampled t interval
        and test (``mean_diff``, ``sd_diff``, ``ci95_corrected_t``,
        ``p_corrected_t``, ``t``, ``df``, ``n_train_mean``, ``n_test_mean``);
        the difference of pooled out-of-fold macro-F1 (repeat-averaged) with
        its cell-bootstrap interval (``pooled_oof_diff``,
        ``pooled_oof_diff_ci95_cell_bootstrap``, the same resamples for both
        models) and ``boot_share_nonpositive`` (share of those resamples with
        a difference <= 0: a description of the bootstrap distribution, not a
        p-value); ``folds_a_better`` and ``n_folds``.
    """
    diffs = np.asarray(fold_scores_a, float) - np.asarray(fold_scores_b, float)
    t_stats = corrected_resampled_t(diffs, n_train, n_test)
    point_a = repeat_scores(true_codes, np.atleast_2d(oof_a), n_classes)[0].mean()
    point_b = repeat_scores(true_codes, np.atleast_2d(oof_b), n_classes)[0].mean()
    boot_a = bootstrap_scores(true_codes, oof_a, n_classes, n_boot=n_boot, random_state=random_state)
    boot_b = bootstrap_scores(true_codes, oof_b, n_classes, n_boot=n_boot, random_state=random_state)
    boot_diff = boot_a["macro_f1"] - boot_b["macro_f1"]
    return {
        "mean_diff": t_stats["mean"],
        "sd_diff": float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0,
        "ci95_corrected_t": t_stats["ci"],
        "p_corrected_t": t_stats["p"],
        "t": t_stats["t"],
        "df": t_stats["df"],
        "n_train_mean": t_stats["n_train"],
        "n_test_mean": t_stats["n_test"],
        "pooled_oof_diff": float(point_a - point_b),
        "pooled_oof_diff_ci95_cell_bootstrap": percentile_ci(boot_diff),
        "boot_share_nonpositive": float(np.mean(boot_diff <= 0)),
        "folds_a_better": int(np.sum(diffs > 0)),
        "n_folds": int(diffs.size),
    }
