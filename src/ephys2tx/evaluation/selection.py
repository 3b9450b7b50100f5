"""Model selection on inner validation splits: choices are made without the test folds.

For each outer fold of the evaluation protocol only that fold's *training* rows
are used. They are split again by a stratified k-fold; every candidate is
fitted on the inner-train parts and scored on the inner-validation parts. The
outer test rows are never touched, so defaults chosen here can be evaluated on
the outer folds without optimism.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from ephys2tx.evaluation.metrics import macro_f1
from ephys2tx.evaluation.splits import Fold


def inner_validation_scores(candidates: Mapping[str, Callable[[], object]], X: pd.DataFrame, y,
                            outer_folds: Sequence[Fold], *, classes, inner_splits: int = 3,
                            fit_params: Mapping[str, dict] | None = None, random_state: int = 0,
                            on_result: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Inner-CV macro-F1 of each candidate on the training rows of each outer fold.

    Parameters
    ----------
    candidates : mapping
        Name -> factory returning a fresh, unfitted estimator.
    X : DataFrame of shape (n_cells, n_features)
    y : array-like of shape (n_cells,)
    outer_folds : sequence of Fold
        The evaluation folds; only their ``train`` rows are read.
    classes : sequence of str
    inner_splits : int
        Stratified folds inside each outer training set.
    fit_params : mapping, optional
        Candidate name -> extra ``fit`` keyword arguments (e.g. the mouse cells
        of a transfer model); candidates not named get none.
    random_state : int
        Seed of the inner splits (outer fold ``k`` uses ``random_state + k``).
    on_result : callable, optional
        Called with each result row (for progress).

    Returns
    -------
    DataFrame
        One row per outer fold and candidate: ``outer_fold``, ``candidate``,
        ``inner_macro_f1`` (pooled over the inner folds) and ``seconds``.
    """
    y = np.asarray(y, dtype=object)
    rows = []
    for k, fold in enumerate(outer_folds):
        X_tr, y_tr = X.iloc[fold.train], y[fold.train]
        inner = list(StratifiedKFold(inner_splits, shuffle=True, random_state=random_state + k)
                     .split(np.zeros(len(y_tr)), y_tr))
        for name, factory in candidates.items():
            start = time.perf_counter()
            pred = np.empty(len(y_tr), dtype=object)
            for train, valid in inner:
                model = factory().fit(X_tr.iloc[train], y_tr[train],
                                      **(fit_params or {}).get(name, {}))
                pred[valid] = model.predict(X_tr.iloc[valid])
            row = {"outer_fold": k, "candidate": name,
                   "inner_macro_f1": macro_f1(y_tr, pred, list(classes)),
                   "seconds": time.perf_counter() - start}
            rows.append(row)
            if on_result is not None:
                on_result(row)
    return pd.DataFrame(rows)


def selection_summary(scores: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """Mean and sd of the inner macro-F1 per candidate, best first.

    With ``reference``, also the mean paired difference with that candidate
    and the number of outer folds in which the candidate beats it.
    """
    table = scores.pivot(index="outer_fold", columns="candidate", values="inner_macro_f1")
    out = pd.DataFrame({"mean_f1": table.mean(), "sd_f1": table.std(ddof=1),
                        "seconds": scores.groupby("candidate")["seconds"].mean()})
    if reference is not None:
        diff = table.sub(table[reference], axis=0)
        out[f"mean_diff_vs_{reference}"] = diff.mean()
        out[f"folds_better_than_{reference}"] = (diff > 0).sum()
    return out.sort_values("mean_f1", ascending=False)
