"""Repeated stratified and donor-grouped k-fold splits, deterministic for a seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ephys2tx.errors import InputError

SCHEMES = ("stratified", "donor")


@dataclass(frozen=True)
class Fold:
    """One train/test split of a repeated k-fold scheme (positions into the data)."""

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray


def check_foldable(y, groups=None, *, scheme: str = "stratified", n_splits: int = 5,
                   where: str = "the training set", folds_option: str | None = "--n-splits") -> None:
    """Refuse, before any fit, labels that the k-fold scheme cannot split into ``n_splits`` folds.

    ``folds_option`` is the option that sets the folds (None: the command has none).

    Raises
    ------
    InputError
        Fewer than two classes, a class with fewer cells than folds, or (for
        ``scheme="donor"``) fewer donors than folds.
    """
    labels = pd.Series(np.asarray(y, dtype=object)).dropna()
    counts = labels.value_counts()
    if len(counts) < 2:
        found = f"only class {counts.index[0]!r}" if len(counts) else "no labelled cell"
        raise InputError(f"{where} has {found}; a classifier needs at least two classes with "
                         "labelled cells: add cells of another class.")
    if int(n_splits) < 2:
        raise InputError(f"--n-splits must be at least 2, got {n_splits}.")
    smallest, fewest = counts.idxmin(), int(counts.min())
    if fewest < n_splits:
        lower = (f"lower {folds_option} to at most {fewest}, or " if folds_option and fewest >= 2
                 else "")
        raise InputError(f"{where} has {fewest} cell(s) of class {smallest!r}, fewer than the "
                         f"{n_splits} cross-validation folds; {lower}add cells of that class or "
                         "drop it.")
    if scheme == "donor" and groups is not None:
        n_groups = pd.Series(np.asarray(groups, dtype=object)).nunique()
        if n_groups < n_splits:
            lower = f"lower {folds_option} to at most {n_groups}, or " if folds_option else ""
            raise InputError(f"{where} has {n_groups} donor(s), fewer than the {n_splits} "
                             f"donor-grouped folds; {lower}add cells of other donors.")


def make_splits(y, groups=None, *, scheme: str = "stratified", n_splits: int = 5,
                n_repeats: int = 3, random_state: int = 0) -> list[Fold]:
    """Folds of a repeated k-fold scheme.

    Parameters
    ----------
    y : array-like of shape (n_cells,)
        Class labels (used to stratify).
    groups : array-like of shape (n_cells,), optional
        Donor per cell; required for ``scheme="donor"``. No donor is ever in
        both the training and the test part of a fold.
    scheme : {"stratified", "donor"}
        ``stratified``: :class:`~sklearn.model_selection.StratifiedKFold`;
        ``donor``: :class:`~sklearn.model_selection.StratifiedGroupKFold`.
    n_splits, n_repeats : int
        Folds per repeat and number of repeats (each repeat reshuffles).
    random_state : int
        Seed; repeat ``r`` uses seed ``random_state + r``.

    Returns
    -------
    list of Fold
    """
    y = np.asarray(y)
    if scheme not in SCHEMES:
        raise InputError(f"unknown split scheme {scheme!r}; choose from {', '.join(SCHEMES)}.")
    if scheme == "donor" and groups is None:
        raise InputError("the donor-grouped split needs donor ids; this dataset has none.")
    check_foldable(y, groups, scheme=scheme, n_splits=n_splits)
    folds: list[Fold] = []
    placeholder = np.zeros((len(y), 1))
    for repeat in range(n_repeats):
        seed = int(random_state) + repeat
        if scheme == "stratified":
            splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            parts = splitter.split(placeholder, y)
        else:
            splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            parts = splitter.split(placeholder, y, np.asarray(groups))
        for fold, (train, test) in enumerate(parts):
            folds.append(Fold(repeat, fold, np.asarray(train), np.asarray(test)))
    return folds
