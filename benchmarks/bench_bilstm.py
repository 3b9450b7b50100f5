"""Benchmark the attention BiLSTM on the real mouse VISp table, beside the forests.

Prints, in one run on the same machine:

(a) wall time and macro-F1 of 5-fold stratified CV of the full model
    (``bilstm``), folds fitted two at a time with one torch thread each (as
    ``ephys2tx run`` does), beside the class-balanced forests on the same folds;
(b) batch prediction throughput (cells/s) of ``predict_proba`` on ~100,000
    cells (the table repeated) for the BiLSTM and the forest.

Run::

    .venv/bin/python benchmarks/bench_bilstm.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import torch

from ephys2tx import CLASSES
from ephys2tx.data.datasets import load_dataset
from ephys2tx.evaluation.cv import cross_validate
from ephys2tx.evaluation.splits import make_splits
from ephys2tx.models.registry import make_model


def throughput(estimator, X: pd.DataFrame, repeats: int = 3) -> float:
    """Best-of-``repeats`` cells per second of ``predict_proba`` on ``X``."""
    estimator.predict_proba(X.iloc[:1000])  # warm-up
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        estimator.predict_proba(X)
        best = min(best, time.perf_counter() - start)
    return len(X) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="folds fitted at once")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    ds = load_dataset("mouse_visp", args.data_dir)
    X, y, columns = ds.features, ds.labels.to_numpy(), list(ds.features.columns)
    print(f"load average (1, 5 min) at start: {os.getloadavg()[0]:.2f}, {os.getloadavg()[1]:.2f} "
          f"on {os.cpu_count()} CPUs; torch {torch.__version__}")
    print(f"mouse VISp: {X.shape[0]} cells x {X.shape[1]} features in {len(ds.families)} families")
    folds = make_splits(y, scheme="stratified", n_splits=args.folds, n_repeats=1,
                        random_state=args.seed)

    print(f"(a) {args.folds}-fold stratified CV, same folds")
    for name in ("bilstm", "spca_rf", "rf"):
        model = make_model(name, ds.families, columns, random_state=args.seed)
        neural = name == "bilstm"
        start = time.perf_counter()
        result = cross_validate(model, X, y, folds, classes=CLASSES, model_name=name,
                                n_jobs=args.jobs if neural else 1,
                                torch_threads=1 if neural else None)
        seconds = time.perf_counter() - start
        f1 = result.macro_f1_per_fold
        print(f"    {name:8s} macro-F1 {np.mean(f1):.3f} +- {np.std(f1, ddof=1):.3f} "
              f"(per fold {', '.join(f'{v:.3f}' for v in f1)}); wall time {seconds:.1f} s")

    reps = max(1, 100_000 // len(X))
    X_big = pd.concat([X] * reps, ignore_index=True)
    bilstm = make_model("bilstm", ds.families, columns, random_state=args.seed).fit(X, y)
    forest = make_model("rf", ds.families, columns, random_state=args.seed).fit(X, y)
    print(f"(b) predict_proba on {len(X_big):,} cells (best of 3)")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        print(f"    BiLSTM, {threads} torch thread(s): {throughput(bilstm, X_big):,.0f} cells/s")
    print(f"    RF-500 (all cores):        {throughput(forest, X_big):,.0f} cells/s")


if __name__ == "__main__":
    main()
