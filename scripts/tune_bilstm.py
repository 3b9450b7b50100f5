"""Small hyperparameter search for the attention BiLSTM on INNER validation splits.

Never touches a test fold: for each outer fold of the benchmark's 5-fold
stratified CV (same seed as ``benchmarks/bench_bilstm.py``), only that fold's
training rows are used; they are split again (stratified, 20 %) into
inner-train and inner-validation, each candidate is fitted on inner-train and
scored (macro-F1) on inner-validation. The winner per outer fold and the mean
inner score across outer folds are printed; the package defaults are the
candidate with the best mean inner score.

Run::

    .venv/bin/python scripts/tune_bilstm.py --data-dir ../shared/data \
        --round 1 --out results/tune_bilstm_round1.csv
    .venv/bin/python scripts/tune_bilstm.py --round 2 --out results/tune_bilstm_round2.csv
    .venv/bin/python scripts/tune_bilstm.py --round 3 --out results/tune_bilstm_round3.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from ephys2tx.data.datasets import load_dataset
from ephys2tx.models.bilstm import AttentionBiLSTMClassifier

BASE = dict(token_dim=16, hidden_size=32, embedding_dim=32, dropout=0.1, arcface_margin=0.2,
            arcface_scale=16.0, learning_rate=3e-3, batch_size=128, weight_decay=1e-4,
            patience=15)
ROUND1 = {
    "base": {},
    "lr1e-2_bs256": dict(learning_rate=1e-2, batch_size=256),
    "hidden64": dict(hidden_size=64, embedding_dim=64),
    "dropout0.3": dict(dropout=0.3),
    "margin0.35": dict(arcface_margin=0.35),
    "scale32": dict(arcface_scale=32.0),
    "scale8": dict(arcface_scale=8.0),
    "wd1e-3_patience10": dict(weight_decay=1e-3, patience=10),
}
# Round 2 combines the round-1 leaders (all within noise of each other) around scale 8.
ROUND2 = {
    "scale8": dict(arcface_scale=8.0),
    "scale8_dropout0.3": dict(arcface_scale=8.0, dropout=0.3),
    "scale8_dropout0.3_lr1e-2_bs256": dict(arcface_scale=8.0, dropout=0.3, learning_rate=1e-2,
                                           batch_size=256),
}
# Round 3: a narrower LSTM, for prediction throughput (the LSTM dominates inference time).
ROUND3 = {
    "scale8": dict(arcface_scale=8.0),
    "scale8_hidden16": dict(arcface_scale=8.0, hidden_size=16),
}
ROUNDS = {1: ROUND1, 2: ROUND2, 3: ROUND3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outer-folds", type=int, default=5)
    parser.add_argument("--use-outer", type=int, default=5,
                        help="how many outer folds' training parts to tune on")
    parser.add_argument("--round", type=int, default=1, choices=sorted(ROUNDS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="CSV of all inner scores")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    candidates = ROUNDS[args.round]

    ds = load_dataset("mouse_visp", args.data_dir)
    X, y, families = ds.features, ds.labels, ds.families
    print(f"data: {X.shape[0]} cells x {X.shape[1]} features; families: {list(families)}",
          flush=True)
    outer = StratifiedKFold(n_splits=args.outer_folds, shuffle=True, random_state=args.seed)
    rows = []
    for k, (train_rows, _test_rows_never_used) in enumerate(outer.split(X, y)):
        if k >= args.use_outer:
            break
        X_tr, y_tr = X.iloc[train_rows], y.iloc[train_rows]
        in_tr, in_va = train_test_split(np.arange(len(y_tr)), test_size=0.2, stratify=y_tr,
                                        random_state=args.seed + k)
        for name, change in candidates.items():
            params = {**BASE, **change}
            t0 = time.perf_counter()
            model = AttentionBiLSTMClassifier(families=families, random_state=args.seed + k, **params)
            model.fit(X_tr.iloc[in_tr], y_tr.iloc[in_tr])
            f1 = f1_score(y_tr.iloc[in_va], model.predict(X_tr.iloc[in_va]), average="macro")
            rows.append(dict(outer_fold=k, candidate=name, inner_macro_f1=f1,
                             epochs=len(model.history_["train_loss"]),
                             seconds=time.perf_counter() - t0))
            print(f"outer {k} {name:18s} inner macro-F1 {f1:.4f} "
                  f"({rows[-1]['epochs']} epochs, {rows[-1]['seconds']:.1f} s)", flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    summary = table.groupby("candidate").agg(mean_f1=("inner_macro_f1", "mean"),
                                             sd_f1=("inner_macro_f1", "std"),
                                             mean_s=("seconds", "mean"))
    summary = summary.sort_values("mean_f1", ascending=False)
    winners = table.loc[table.groupby("outer_fold")["inner_macro_f1"].idxmax(), ["outer_fold", "candidate"]]
    print("\nmean inner-validation macro-F1 across outer folds:")
    print(summary.round(4).to_string())
    print("\nwinner per outer fold:", dict(zip(winners.outer_fold, winners.candidate)))
    print("selected:", {**BASE, **candidates[summary.index[0]]})


if __name__ == "__main__":
    main()
