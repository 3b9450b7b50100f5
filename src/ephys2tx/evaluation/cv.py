"""Cross-validation on fixed folds, with every preprocessing step fitted in-fold.

Models are scikit-learn estimators or Pipelines whose preprocessing (imputer,
scaler, sparse PCA, SMOTE) lives inside the estimator, so cloning and fitting
on the training rows of each fold is all it takes to keep test rows unseen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone

from ephys2tx.evaluation.metrics import fold_metrics, macro_f1, summarise
from ephys2tx.evaluation.splits import Fold
from ephys2tx.evaluation.stats import bootstrap_scores, encode, percentile_ci


@dataclass
class CVResult:
    """Out-of-fold predictions and per-fold scores of one model on one split scheme.

    Attributes
    ----------
    model : str
        Short model name.
    classes : list of str
        Class order.
    folds : list of Fold
        The folds used (shared across the models compared).
    fold_scores : list of dict
        Per fold: repeat, fold, n_test, accuracy, macro_f1, per_class_f1, fit_seconds.
    oof : ndarray of shape (n_repeats, n_cells), dtype object
        Out-of-fold predicted class of each cell in each repeat.
    oof_proba : ndarray of shape (n_repeats, n_cells, n_classes) or None
    params : dict
        Estimator parameters.
    oof_attention : DataFrame or None
        First repeat: per-cell attention over families from the model that
        did not see the cell (models with ``explain``).
    family_importance : DataFrame or None
        First repeat: per fold and family, the drop in macro-F1 when the
        family's features are permuted together in the test rows.
    """

    model: str
    classes: list[str]
    folds: list[Fold]
    fold_scores: list[dict]
    oof: np.ndarray
    oof_proba: np.ndarray | None
    params: dict = field(default_factory=dict)
    oof_attention: pd.DataFrame | None = None
    family_importance: pd.DataFrame | None = None

    @property
    def macro_f1_per_fold(self) -> list[float]:
        """Macro-F1 of each fold, in fold order."""
        return [s["macro_f1"] for s in self.fold_scores]


def cross_validate(estimator, X: pd.DataFrame, y, folds: Sequence[Fold], *, classes,
                   model_name: str = "model",
                   on_fold: Callable[[Fold, dict], None] | None = None,
                   families: dict[str, list[str]] | None = None, n_permutations: int = 0,
                   random_state: int = 0) -> CVResult:
    """Fit a fresh clone of ``estimator`` on each fold's training rows and predict its test rows.

    Parameters
    ----------
    estimator : scikit-learn estimator
        Must hold all preprocessing itself (see module docstring).
    X : DataFrame of shape (n_cells, n_features)
    y : array-like of shape (n_cells,)
    folds : sequence of Fold
    classes : sequence of str
    model_name : str
    on_fold : callable, optional
        Called after each fold with the fold and its scores (for progress).
    families : dict, optional
        Family -> columns of ``X``; with ``n_permutations > 0`` the permutation
        importance of each family is measured on the test rows of repeat 0.
    n_permutations : int
        Permutations per family and fold (0: no importance).
    random_state : int
        Seed of the permutations.
    """
    y = np.asarray(y, dtype=object)
    classes = list(classes)
    n_repeats = max(f.repeat for f in folds) + 1
    oof = np.full((n_repeats, len(y)), None, dtype=object)
    oof_proba = np.full((n_repeats, len(y), len(classes)), np.nan)
    has_proba = True
    scores: list[dict] = []
    attention_parts: list[pd.DataFrame] = []
    importance_rows: list[dict] = []
    rng = np.random.default_rng(random_state)
    for fold in folds:
        model = clone(estimator)
        start = time.perf_counter()
        model.fit(X.iloc[fold.train], y[fold.train])
        fit_seconds = time.perf_counter() - start
        X_test = X.iloc[fold.test]
        pred = np.asarray(model.predict(X_test), dtype=object)
        oof[fold.repeat, fold.test] = pred
        if has_proba and hasattr(model, "predict_proba"):
            proba = model.predict_proba(X_test)
            order = [list(model.classes_).index(c) if c in model.classes_ else None for c in classes]
            oof_proba[fold.repeat, fold.test] = np.column_stack(
                [proba[:, j] if j is not None else np.zeros(len(fold.test)) for j in order])
        else:
            has_proba = False
        record = {"repeat": fold.repeat, "fold": fold.fold, "n_test": int(len(fold.test)),
                  "fit_seconds": fit_seconds}
        record.update(fold_metrics(y[fold.test], pred, classes))
        record.pop("confusion_matrix")
        scores.append(record)
        if fold.repeat == 0 and hasattr(model, "explain"):
            attention_parts.append(pd.DataFrame(model.explain(X_test)).set_axis(X_test.index))
        if fold.repeat == 0 and families and n_permutations > 0:
            base = record["macro_f1"]
            for fam, cols in families.items():
                drops = []
                for _ in range(n_permutations):
                    shuffled = X_test.copy()
                    order = rng.permutation(len(shuffled))
                    shuffled[cols] = shuffled[cols].to_numpy()[order]
                    drops.append(base - macro_f1(y[fold.test], model.predict(shuffled), classes))
                importance_rows.append({"fold": fold.fold, "family": fam,
                                        "drop_macro_f1": float(np.mean(drops))})
        if on_fold is not None:
            on_fold(fold, record)
    return CVResult(model=model_name, classes=classes, folds=list(folds), fold_scores=scores,
                    oof=oof, oof_proba=oof_proba if has_proba else None,
                    params={k: repr(v) for k, v in estimator.get_params(deep=False).items()},
                    oof_attention=pd.concat(attention_parts) if attention_parts else None,
                    family_importance=pd.DataFrame(importance_rows) if importance_rows else None)


def summarise_cv(result: CVResult, y, *, n_boot: int = 1000, random_state: int = 0) -> dict:
    """The metrics record of one model: mean, sd and bootstrap 95% CI, per-class F1, confusion.

    ``mean`` and ``sd`` are over folds (all repeats). ``ci95`` is a percentile
    bootstrap over cells of the repeat-averaged out-of-fold score. The
    confusion matrix pools the out-of-fold predictions of all repeats (each
    cell counted once per repeat); rows are true classes, columns predicted.
    """
    classes = result.classes
    y = np.asarray(y, dtype=object)
    true_codes = encode(y, classes)
    oof_codes = np.stack([encode(row, classes) for row in result.oof])
    boot = bootstrap_scores(true_codes, oof_codes, len(classes), n_boot=n_boot,
                            random_state=random_state)
    record = {}
    for metric in ("accuracy", "macro_f1"):
        stats = summarise([s[metric] for s in result.fold_scores])
        stats["ci95"] = percentile_ci(boot[metric])
        record[metric] = stats
    record["per_class_f1"] = {
        c: summarise([s["per_class_f1"][c] for s in result.fold_scores]) for c in classes}
    pooled = fold_metrics(np.tile(y, result.oof.shape[0]), result.oof.ravel(), classes)
    record["confusion_matrix"] = pooled["confusion_matrix"]
    record["n_folds"] = len(result.fold_scores)
    record["n_repeats"] = int(result.oof.shape[0])
    record["fit_seconds_mean"] = float(np.mean([s["fit_seconds"] for s in result.fold_scores]))
    return record
