"""Bootstrap CIs and paired comparisons agree with scikit-learn's metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from ephys2tx import CLASSES
from ephys2tx.evaluation.metrics import fold_metrics, macro_f1, summarise
from ephys2tx.evaluation.stats import (
    bootstrap_scores,
    encode,
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
    out = paired_difference(true_codes, oof, oof.copy(), K, folds, list(folds), n_boot=200)
    assert out["mean_diff"] == 0.0
    assert out["sd_diff"] == 0.0
    assert out["ci95"] == [0.0, 0.0]
    assert out["folds_a_better"] == 0
    assert out["n_folds"] == 5


def test_paired_difference_detects_a_better_model():
    y, worse = _predictions(accuracy=0.55, seed=1)
    _, better = _predictions(accuracy=0.9, seed=2, y=y)
    true_codes = encode(y, CLASSES)
    a = np.stack([encode(p, CLASSES) for p in better])
    b = np.stack([encode(p, CLASSES) for p in worse])
    out = paired_difference(true_codes, a, b, K, [0.9, 0.88], [0.5, 0.55], n_boot=300)
    assert out["ci95"][0] > 0
    assert out["p_boot"] == 0.0
    assert out["mean_diff"] == pytest.approx(((0.9 - 0.5) + (0.88 - 0.55)) / 2)


def test_fold_metrics_and_summarise():
    y, preds = _predictions(n_repeats=1)
    m = fold_metrics(y, preds[0], CLASSES)
    assert m["macro_f1"] == pytest.approx(np.mean(list(m["per_class_f1"].values())))
    assert np.sum(m["confusion_matrix"]) == len(y)
    assert np.trace(m["confusion_matrix"]) / len(y) == pytest.approx(m["accuracy"])
    s = summarise([0.5, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert summarise([0.4])["sd"] == 0.0
