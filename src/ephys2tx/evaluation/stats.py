"""Bootstrap confidence intervals and paired model comparisons.

All statistics work on integer-coded out-of-fold predictions so that a
thousand bootstrap resamples of a few thousand cells take milliseconds.
"""

from __future__ import annotations

import numpy as np


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


def paired_difference(true_codes: np.ndarray, oof_a: np.ndarray, oof_b: np.ndarray,
                      n_classes: int, fold_scores_a, fold_scores_b, *, n_boot: int = 1000,
                      random_state: int = 0) -> dict:
    """Compare model A with model B evaluated on the same folds.

    Parameters
    ----------
    true_codes : (n_cells,) int array
    oof_a, oof_b : (n_repeats, n_cells) int arrays
        Out-of-fold predictions of each model, same folds.
    fold_scores_a, fold_scores_b : sequence of float
        Per-fold macro-F1 of each model, same fold order.

    Returns
    -------
    dict
        ``mean_diff`` and ``sd_diff`` (A - B over folds), ``ci95`` (bootstrap
        over cells of the repeat-averaged macro-F1 difference, the same
        resamples for both models), ``p_boot`` (fraction of resamples with
        difference <= 0) and ``folds_a_better``.
    """
    diffs = np.asarray(fold_scores_a, float) - np.asarray(fold_scores_b, float)
    boot_a = bootstrap_scores(true_codes, oof_a, n_classes, n_boot=n_boot, random_state=random_state)
    boot_b = bootstrap_scores(true_codes, oof_b, n_classes, n_boot=n_boot, random_state=random_state)
    boot_diff = boot_a["macro_f1"] - boot_b["macro_f1"]
    return {
        "mean_diff": float(diffs.mean()),
        "sd_diff": float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0,
        "ci95": percentile_ci(boot_diff),
        "p_boot": float(np.mean(boot_diff <= 0)),
        "folds_a_better": int(np.sum(diffs > 0)),
        "n_folds": int(diffs.size),
    }
