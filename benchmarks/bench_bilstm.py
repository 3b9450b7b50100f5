"""Benchmark the attention BiLSTM on the real mouse VISp table.

(a) wall time and macro-F1 of 5-fold stratified CV of the full model, beside a
    class-balanced RandomForest (500 trees) on the same folds;
(b) batch prediction throughput (cells/s) of the BiLSTM and of the forest's
    ``predict_proba`` on the same data, in the same run.

Run::

    .venv/bin/python benchmarks/bench_bilstm.py --data-dir /work/shared/data
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from ephys2tx.models.bilstm import AttentionBiLSTMClassifier

SUBCLASS_MAP = {"Lamp5 interneuron": "Lamp5", "Pvalb interneuron": "Pvalb",
                "Sst interneuron": "Sst", "Vip interneuron": "Vip"}
META_FEATURES = ["AP maximum rate of rise (Upstroke) (mV/ms)", "Latency", "tau"]


def load_mouse_visp(data_dir: str):
    """(features, labels, families) of the mouse VISp table.

    Uses ``ephys2tx.data.datasets.load_dataset`` when it exists, else reads the
    two CSV files directly (numeric ephys columns + 3 meta features; labels
    Lamp5/Pvalb/Sst/Vip only; families from :mod:`ephys2tx.features.families`
    if available, else ``None``).
    """
    try:
        from ephys2tx.data.datasets import load_dataset

        ds = load_dataset("mouse_visp", data_dir=data_dir)
        return ds.features, ds.labels, ds.families
    except ImportError:
        pass
    base = f"{data_dir}/mouse_visp_gouwens2020"
    ephys = pd.read_csv(f"{base}/VISp_Viewer_ephys.csv")
    meta = pd.read_csv(f"{base}/VISp_Viewer_meta.csv")
    ephys["Cell ID"] = ephys["Cell ID"].astype(str)
    meta["Cell ID"] = meta["Cell ID"].astype(str)
    table = ephys.merge(meta[["Cell ID", "T type subclass", *META_FEATURES]], on="Cell ID")
    table = table.set_index("Cell ID")
    labels = table.pop("T type subclass").map(SUBCLASS_MAP)
    keep = labels.notna()
    features = table.loc[keep].select_dtypes("number").astype(float)
    return features, labels[keep].astype(str), None


def rf_model(random_state: int = 0) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=500, class_weight="balanced_subsample",
                                  n_jobs=-1, random_state=random_state)


def rf_pipeline(random_state: int = 0):
    """Forest behind a median imputer (sklearn forests accept NaN, but keep it explicit)."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    return make_pipeline(SimpleImputer(strategy="median"), rf_model(random_state))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/work/shared/data")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest for the small training batches)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    X, y, families = load_mouse_visp(args.data_dir)
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"mouse VISp: {X.shape[0]} cells x {X.shape[1]} features, "
          f"families={'None (12 column chunks, CSV fallback)' if families is None else list(families)}; "
          f"torch threads {torch.get_num_threads()}; "
          f"classes {y.value_counts().to_dict()}")
    cv = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=args.seed)
    folds = list(cv.split(X, y))

    t0, c0 = time.perf_counter(), time.process_time()
    pred_b = np.empty(len(y), dtype=object)
    for k, (tr, te) in enumerate(folds):
        model = AttentionBiLSTMClassifier(families=families, random_state=args.seed + k)
        model.fit(X.iloc[tr], y.iloc[tr])
        pred_b[te] = model.predict(X.iloc[te])
    t_bilstm, c_bilstm = time.perf_counter() - t0, time.process_time() - c0
    fold_f1_b = [f1_score(y.iloc[te], pred_b[te], average="macro") for _, te in folds]

    t0, c0 = time.perf_counter(), time.process_time()
    pred_rf = np.empty(len(y), dtype=object)
    for k, (tr, te) in enumerate(folds):
        forest = rf_pipeline(args.seed + k).fit(X.iloc[tr], y.iloc[tr])
        pred_rf[te] = forest.predict(X.iloc[te])
    t_rf, c_rf = time.perf_counter() - t0, time.process_time() - c0
    fold_f1_rf = [f1_score(y.iloc[te], pred_rf[te], average="macro") for _, te in folds]

    print(f"(a) {args.folds}-fold stratified CV, same folds")
    print(f"    BiLSTM  macro-F1 {np.mean(fold_f1_b):.3f} +- {np.std(fold_f1_b):.3f} "
          f"(per fold {', '.join(f'{v:.3f}' for v in fold_f1_b)}); wall time {t_bilstm:.1f} s (CPU {c_bilstm:.1f} s)")
    print(f"    RF-500  macro-F1 {np.mean(fold_f1_rf):.3f} +- {np.std(fold_f1_rf):.3f} "
          f"(per fold {', '.join(f'{v:.3f}' for v in fold_f1_rf)}); wall time {t_rf:.1f} s (CPU {c_rf:.1f} s)")

    # (b) throughput on the whole table, repeated to ~100k cells.
    model = AttentionBiLSTMClassifier(families=families, random_state=args.seed).fit(X, y)
    forest = rf_pipeline(args.seed).fit(X, y)
    reps = max(1, 100_000 // len(X))
    X_big = pd.concat([X] * reps, ignore_index=True)
    model.predict_proba(X_big.iloc[:1000])  # warm-up
    for name, est in (("BiLSTM", model), ("RF-500", forest)):
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            est.predict_proba(X_big)
            best = min(best, time.perf_counter() - t0)
        print(f"(b) {name:6s} predict_proba on {len(X_big)} cells: {best:.3f} s "
              f"= {len(X_big) / best:,.0f} cells/s (best of 3)")


if __name__ == "__main__":
    main()
