"""Classification metrics over a fixed class order."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def macro_f1(y_true, y_pred, classes) -> float:
    """Macro-averaged F1 over ``classes`` (a class absent from both counts as F1 = 0)."""
    return float(f1_score(y_true, y_pred, labels=list(classes), average="macro", zero_division=0))


def fold_metrics(y_true, y_pred, classes) -> dict:
    """Accuracy, macro-F1, per-class F1 and confusion matrix of one prediction set."""
    classes = list(classes)
    per_class = f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": macro_f1(y_true, y_pred, classes),
        "per_class_f1": {c: float(v) for c, v in zip(classes, per_class)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }


def summarise(values) -> dict:
    """Mean and sample standard deviation of per-fold values."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}
