"""Bootstrap CIs and paired comparisons agree with scikit-learn's metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from ephys2tx import CLASSES
from ephys2tx.evaluation.metrics import fold_metrics, macro_f1, summarise
from ephys2tx.evaluation.stats import (
    bootstrap_scores,
    corrected_resampled_t,
    encode,
    holm,
    paired_difference,
    percentile_ci,
    repeat_scores,
)

K = len(CLASSES)


def _predictions(n=400, n_repeats=3, accuracy=0.7, seed=0, y=None):
    """True labels and noisy predictions (n_repeats, n) as class names."""
    rng = np.random.default_rng(seed)
    if y is None:
        y = rng.choice(CLASSES, size=n, p=[0.1, 0.45, 0.3, 0.15])
    preds = np.tile(y, (n_repeats, 1)).astype(object)
    wrong = rng.random(preds.shape) > accuracy
    preds[wrong] = rng.choice(CLASSES, size=int(wrong.sum()))
    return y, preds


def test_encode():
    np.testing.assert_array_equal(encode(["Vip", "Lamp5", "Sncg", "Sst"], CLASSES), [3, 0, -1, 2])


def test_repeat_scores_equal_sklearn():
    y, preds = _predictions()
    f1, acc = repeat_scores(encode(y, CLASSES), np.stack([encode(p, CLASSES) for p in preds]), K)
    for r, p in enumerate(preds):
        assert f1[r] == pytest.approx(f1_score(y, list(p), average="macro"), abs=1e-12)
        assert acc[r] == pytest.approx(accuracy_score(y, list(p)), abs=1e-12)
        assert f1[r] == pytest.approx(macro_f1(y, list(p), CLASSES), abs=1e-12)


def test_repeat_scores_with_absent_class_and_unknown_prediction():
    """Matches sklearn with labels=CLASSES and zero_division=0 (the project's definition)."""
    y = np.array(["Pvalb", "Pvalb", "Sst", "Sst", "Vip"])
    pred = np.array(["Pvalb", "Sncg", "Sst", "Pvalb", "Sst"])
    f1, acc = repeat_scores(encode(y, CLASSES), encode(pred, CLASSES)[None, :], K)
    expected = f1_score(y, pred, labels=list(CLASSES), average="macro", zero_division=0)
    assert f1[0] == pytest.approx(expected, abs=1e-12)
    assert acc[0] == pytest.approx(accuracy_score(y, pred))


def test_bootstrap_resample_equals_sklearn_on_that_resample():
    y, preds = _predictions(n_repeats=2)
    true_codes = encode(y, CLASSES)
    oof = np.stack([encode(p, CLASSES) for p in preds])
    boot = bootstrap_scores(true_codes, oof, K, n_boot=5, random_state=7)
    idx = np.random.default_rng(7).integers(0, len(y), size=(5, len(y)))
    for b in range(5):
        expected = np.mean([f1_score(y[idx[b]], list(p[idx[b]]), labels=list(CLASSES),
                                     average="macro", zero_division=0) for p in preds])
        assert boot["macro_f1"][b] == pytest.approx(expected, abs=1e-12)


def test_ci_contains_point_estimate_and_is_deterministic():
    y, preds = _predictions()
    true_codes = encode(y, CLASSES)
    oof = np.stack([encode(p, CLASSES) for p in preds])
    point = float(np.mean(repeat_scores(true_codes, oof, K)[0]))
    boot = bootstrap_scores(true_codes, oof, K, n_boot=500, random_state=0)
    lo, hi = percentile_ci(boot["macro_f1"])
    assert lo < point < hi
    assert hi - lo < 0.2
    again = bootstrap_scores(true_codes, oof, K, n_boot=500, random_state=0)
    np.testing.assert_array_equal(boot["macro_f1"], again["macro_f1"])
    other = bootstrap_scores(true_codes, oof, K, n_boot=500, random_state=1)
    assert not np.array_equal(boot["macro_f1"], other["macro_f1"])


def test_paired_difference_with_itself_is_zero():
    y, preds = _predictions()
    true_codes = encode(y, CLASSES)
    oof = np.stack([encode(p, CLASSES) for p in preds])
    folds = [0.61, 0.7, 0.65, 0.72, 0.68]
    out = paired_difference(true_codes, oof, oof.copy(), K, folds, list(folds), [320] * 5,
                            [80] * 5, n_boot=200)
    assert out["mean_diff"] == 0.0
    assert out["sd_diff"] == 0.0
    assert out["ci95_corrected_t"] == [0.0, 0.0] and out["p_corrected_t"] == 1.0
    assert out["pooled_oof_diff"] == 0.0
    assert out["pooled_oof_diff_ci95_cell_bootstrap"] == [0.0, 0.0]
    assert out["boot_share_nonpositive"] == 1.0  # every resample has difference 0
    assert out["folds_a_better"] == 0
    assert out["n_folds"] == 5


def test_paired_difference_detects_a_better_model():
    y, worse = _predictions(accuracy=0.55, seed=1)
    _, better = _predictions(accuracy=0.9, seed=2, y=y)
    true_codes = encode(y, CLASSES)
    a = np.stack([encode(p, CLASSES) for p in better])
    b = np.stack([encode(p, CLASSES) for p in worse])
    fold_a, fold_b = [0.9, 0.88, 0.91], [0.5, 0.55, 0.52]
    out = paired_difference(true_codes, a, b, K, fold_a, fold_b, [267] * 3, [133] * 3, n_boot=300)
    assert out["pooled_oof_diff_ci95_cell_bootstrap"][0] > 0
    assert out["boot_share_nonpositive"] == 0.0
    assert out["ci95_corrected_t"][0] > 0 and out["p_corrected_t"] < 0.05
    assert out["mean_diff"] == pytest.approx(np.mean(np.subtract(fold_a, fold_b)))
    # The pooled difference is the difference of the repeat-averaged pooled macro-F1.
    pooled = [np.mean([f1_score(y, list(p), average="macro") for p in preds]) for preds in (better, worse)]
    assert out["pooled_oof_diff"] == pytest.approx(pooled[0] - pooled[1], abs=1e-12)


def test_corrected_resampled_t_equals_a_hand_computation():
    """Nadeau & Bengio: var = (1/J + n_test/n_train) s^2, t with J - 1 df (numbers by hand)."""
    d = [0.02, -0.01, 0.03, 0.00, 0.01]
    # mean 0.01; s^2 = (0.01^2 + 0.02^2 + 0.02^2 + 0.01^2 + 0) / 4 = 0.00025
    # var = (1/5 + 100/400) * 0.00025 = 0.45 * 0.00025 = 1.125e-4; se = 0.0106066
    # t = 0.01 / 0.0106066 = 0.942809; two-sided p with 4 df from the closed form
    # F(t) = 1/2 + 3/4 x (1 - x^2/3), x = t / sqrt(t^2 + 4): p = 2 (1 - F) = 0.399162;
    # t_0.975,4 = 2.776445 (table)
    out = corrected_resampled_t(d, [400] * 5, [100] * 5)
    assert out["mean"] == pytest.approx(0.01)
    assert out["sd"] == pytest.approx(np.sqrt(0.00025))
    assert out["se"] == pytest.approx(0.0106066017, rel=1e-8)
    assert out["t"] == pytest.approx(0.9428090416, rel=1e-8)
    assert out["df"] == 4
    assert out["p"] == pytest.approx(0.399162, abs=1e-6)
    half = 2.7764451052 * 0.0106066017
    assert out["ci"] == pytest.approx([0.01 - half, 0.01 + half], rel=1e-8)
    # The correction widens the naive interval (which treats folds as independent).
    naive_half = 2.7764451052 * np.sqrt(0.00025 / 5)
    assert out["ci"][1] - out["ci"][0] > 2 * naive_half
    # Grouped folds differ in size: the sizes are averaged.
    assert corrected_resampled_t(d, [390, 410, 400, 400, 400], [110, 90, 100, 100, 100])["se"] == \
        pytest.approx(out["se"])


def test_corrected_resampled_t_edge_cases():
    assert np.isnan(corrected_resampled_t([0.1], [10], [5])["p"])
    constant = corrected_resampled_t([0.02, 0.02, 0.02], [10] * 3, [5] * 3)
    assert constant["p"] == 0.0 and constant["ci"] == [0.02, 0.02]
    with pytest.raises(ValueError, match="positive"):
        corrected_resampled_t([0.1, 0.2], [0, 0], [5, 5])


def test_holm_equals_a_hand_computation():
    # sorted p: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.5 (x1 = 0.5)
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    # monotone: a later step never goes below an earlier one; capped at 1; NaN kept aside
    assert holm([0.04, 0.045, float("nan")]) == pytest.approx([0.08, 0.08, float("nan")], nan_ok=True)
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([]) == []


def test_fold_metrics_and_summarise():
    y, preds = _predictions(n_repeats=1)
    m = fold_metrics(y, preds[0], CLASSES)
    assert m["macro_f1"] == pytest.approx(np.mean(list(m["per_class_f1"].values())))
    assert np.sum(m["confusion_matrix"]) == len(y)
    assert np.trace(m["confusion_matrix"]) / len(y) == pytest.approx(m["accuracy"])
    s = summarise([0.5, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert summarise([0.4])["sd"] == 0.0
