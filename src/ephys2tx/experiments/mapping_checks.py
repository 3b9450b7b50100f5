"""Checks of the reference models behind ``map``: calibration, OOD detection, an artificial shift.

Computation only (results as tables and dicts); ``scripts/mapping_figures.py``
draws and prints them for ``docs/mapping.md``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from ephys2tx.mapping.reference import (FOREST_TREES, Reference, make_reference_estimator,
                                        reference_data)

__all__ = ["ood_evaluation", "shift_experiment", "summarise_shift"]


def ood_evaluation(model, held_out_features: pd.DataFrame, held_out_labels: pd.Series,
                   reference_oof_scores: np.ndarray) -> dict:
    """AUROC and flag rates of the OOD score: held-out subclasses vs in-distribution OOF cells."""
    from sklearn.metrics import roc_auc_score

    out = model.predict_frame(held_out_features)
    scores = out["ood_score"].to_numpy()
    ok = np.isfinite(scores)
    result = {"auroc": float(roc_auc_score(np.r_[np.zeros(len(reference_oof_scores)), np.ones(ok.sum())],
                                           np.r_[reference_oof_scores, scores[ok]])),
              "flag_rate_in_distribution": float(np.mean(reference_oof_scores > model.ood_norm["threshold"])),
              "flag_rate_held_out": float(np.mean(scores[ok] > model.ood_norm["threshold"]))}
    for cls in sorted(held_out_labels.unique()):
        mask = (held_out_labels.to_numpy() == cls) & ok
        result[f"flag_rate_{cls}"] = float(np.mean(scores[mask] > model.ood_norm["threshold"]))
        result[f"auroc_{cls}"] = float(roc_auc_score(
            np.r_[np.zeros(len(reference_oof_scores)), np.ones(mask.sum())],
            np.r_[reference_oof_scores, scores[mask]]))
    return result


def shift_experiment(species: str = "mouse", data_dir=None, *, test_size: float = 0.3,
                     gain: float = 1.4, offset_sd: float = 0.8, n_estimators: int = FOREST_TREES,
                     seeds=(0,), skewed_keep: float = 0.2, verify: bool = True,
                     reference: Reference | None = None) -> pd.DataFrame:
    """Does alignment help on an artificially shifted held-out split of the reference?

    Per seed, a stratified ``test_size`` share of the reference is held out and
    a forest is trained on the rest. The held-out cells are distorted per
    feature (``x -> mean + gain * (x - mean) + s_j * offset_sd * sd``, random
    sign ``s_j``), as a different rig or analysis pipeline might, then
    predicted without alignment and with each alignment method. Two queries
    are drawn from the held-out cells:

    * ``reference mix``: all of them (the reference's class proportions);
    * ``skewed mix``: every cell of the rarest class and ``skewed_keep`` of the
      others, so the query's class proportions differ from the reference's:
      the case in which aligning marginal distributions can mislead.

    Parameters
    ----------
    species : {"mouse", "human"}
    data_dir : path, optional
    test_size : float
    gain, offset_sd : float
        The distortion.
    n_estimators : int
        Trees of the forest.
    seeds : sequence of int
        One split, distortion and forest per seed.
    skewed_keep : float
        Share of the other classes kept in the skewed query.
    verify : bool
    reference : Reference, optional
        Already loaded reference data (else read from ``data_dir``).

    Returns
    -------
    DataFrame
        One row per seed, query and condition: ``seed``, ``query``,
        ``condition``, ``n_cells``, ``accuracy``, ``macro_f1``.
    """
    from sklearn.model_selection import train_test_split

    from ephys2tx.features.alignment import align as align_features

    ref = reference if reference is not None else reference_data(species, data_dir, verify=verify)
    X, y = ref.features, ref.labels
    rows = []
    for seed in seeds:
        train_ids, test_ids = train_test_split(X.index, test_size=test_size, stratify=y,
                                               random_state=seed)
        est = make_reference_estimator("forest", list(X.columns), random_state=seed,
                              n_estimators=n_estimators, max_epochs=None)
        est.fit(X.loc[train_ids].to_numpy(float), y.loc[train_ids].to_numpy())
        rng = np.random.RandomState(seed)
        mean, sd = X.loc[train_ids].mean(), X.loc[train_ids].std()
        signs = pd.Series(rng.choice([-1.0, 1.0], size=X.shape[1]), index=X.columns)
        rarest = y.loc[test_ids].value_counts().idxmin()
        keep = (y.loc[test_ids] == rarest) | (rng.random_sample(len(test_ids)) < skewed_keep)
        queries = {"reference mix": test_ids, "skewed mix": test_ids[keep.to_numpy()]}
        for query, ids in queries.items():
            test = X.loc[ids]
            shifted = mean + gain * (test - mean) + signs * offset_sd * sd
            conditions = {"no shift": test, "shifted, no alignment": shifted}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                conditions["shifted + quantile alignment"] = align_features(
                    shifted, X.loc[train_ids], "quantile")
                conditions["shifted + OT alignment"] = align_features(
                    shifted, X.loc[train_ids], "ot", random_state=seed)
            truth = y.loc[ids].to_numpy()
            label = query if query == "reference mix" else \
                f"skewed mix ({rarest} {np.mean(truth == rarest):.0%})"
            for name, frame in conditions.items():
                pred = est.predict(frame.to_numpy(float))
                rows.append({"seed": seed, "query": label, "condition": name, "n_cells": len(ids),
                             "accuracy": float(accuracy_score(truth, pred)),
                             "macro_f1": float(f1_score(truth, pred, average="macro"))})
    return pd.DataFrame(rows)


def summarise_shift(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD over seeds of :func:`shift_experiment`, per query and condition."""
    kind = table["query"].str.split(" \\(").str[0]
    grouped = table.assign(query=kind).groupby(["query", "condition"], sort=False)
    out = grouped[["accuracy", "macro_f1"]].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    return out.assign(n_seeds=grouped.size()).reset_index()
