"""Model choices that never see the cells they are scored on: nested selection and a lockbox.

Two ways, one per kind of choice (``docs/transfer.md``, ``docs/bilstm.md``):

* **Nested** (:class:`~ephys2tx.models.selection.InnerCVSelector`): an estimator that, inside its own
  ``fit``, picks one of a few candidate estimators by an inner stratified
  k-fold on the rows it is given, then refits the winner on all of them.
  Cross-validation clones and fits it on each outer training set, so the
  choice is remade per outer fold from that fold's training rows only, and
  each outer test row is predicted by a choice it took no part in. The pick
  of every fold is recorded (:func:`selection_of`, ``metrics.json``).
* **Lockbox** (:func:`lockbox_mask`): a fixed share of the mouse animals,
  drawn by a hash of the animal id (independent of labels, row order and
  library versions). Choices too costly to nest (the BiLSTM defaults) are
  made on the lockbox cells only (``scripts/tune_bilstm.py``), and every
  reported mouse score excludes the lockbox animals.

:func:`inner_validation_scores` scores candidates by inner CV within given
training sets; the tuning scripts use it for exploration (with the lockbox as
the only training set for the BiLSTM).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from ephys2tx.evaluation.metrics import macro_f1
from ephys2tx.evaluation.splits import Fold
from ephys2tx.models.selection import inner_predictions

#: Share of mouse animals in the lockbox, and the salt of the hash that draws them.
MOUSE_LOCKBOX_FRACTION = 0.15
MOUSE_LOCKBOX_SALT = "ephys2tx-mouse-lockbox-v1"


def lockbox_mask(groups, fraction: float = MOUSE_LOCKBOX_FRACTION,
                 salt: str = MOUSE_LOCKBOX_SALT) -> np.ndarray:
    """Whether each cell's group (animal) is in the lockbox.

    A group is in the lockbox when ``sha256(f"{salt}:{group}")``, read as a
    number in [0, 1), is below ``fraction``: the same animals for any row
    order, subset or library version, and never a function of the labels.

    Parameters
    ----------
    groups : array-like of shape (n_cells,)
        Animal (donor) id per cell.
    fraction : float
        Expected share of groups in the lockbox.
    salt : str
        Changes the draw (a new lockbox needs a new salt).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}.")
    values = pd.Series(np.asarray(groups, dtype=object)).astype(str)
    draw = {g: int(hashlib.sha256(f"{salt}:{g}".encode()).hexdigest()[:15], 16) / 16 ** 15
            for g in values.unique()}
    return values.map(draw).to_numpy() < fraction


def inner_validation_scores(candidates: Mapping[str, Callable[[], object]], X: pd.DataFrame, y,
                            outer_folds: Sequence[Fold], *, classes, inner_splits: int = 3,
                            fit_params: Mapping[str, dict] | None = None, random_state: int = 0,
                            on_result: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Inner-CV macro-F1 of each candidate on the training rows of each given fold.

    Only the ``train`` rows of each fold are read. Note that a choice made
    from these scores over folds whose training sets cover the scored cells
    has seen those cells' labels: to report scores, nest the choice
    (:class:`InnerCVSelector`) or make it on a lockbox the scores exclude.

    Parameters
    ----------
    candidates : mapping
        Name -> factory returning a fresh, unfitted estimator.
    X : DataFrame of shape (n_cells, n_features)
    y : array-like of shape (n_cells,)
    outer_folds : sequence of Fold
        Training sets to score in (only their ``train`` rows are read).
    classes : sequence of str
    inner_splits : int
        Stratified folds inside each training set.
    fit_params : mapping, optional
        Candidate name -> extra ``fit`` keyword arguments (e.g. the mouse cells
        of a transfer model); candidates not named get none.
    random_state : int
        Seed of the inner splits (fold ``k`` uses ``random_state + k``).
    on_result : callable, optional
        Called with each result row (for progress).

    Returns
    -------
    DataFrame
        One row per fold and candidate: ``outer_fold``, ``candidate``,
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
            pred = inner_predictions(factory, X_tr, y_tr, inner, (fit_params or {}).get(name, {}))
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
