"""Repeated stratified and donor-grouped k-fold splits, deterministic for a seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
