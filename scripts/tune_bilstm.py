"""Choose the attention BiLSTM's defaults on the mouse LOCKBOX animals only.

The lockbox (:func:`ephys2tx.evaluation.selection.lockbox_mask`, 15% of the
mouse animals drawn by a hash of the animal id) is set aside from every
reported mouse score: ``ephys2tx run`` scores mouse cells of the other animals
only. Here, each candidate setting is scored by a stratified 5-fold CV over
the lockbox cells (macro-F1 pooled over the folds; the network's own early
stopping uses an inner split of each training part). The package defaults are
the candidate with the best mean; the choice never sees a scored cell, mouse
or human.

The candidates are every setting the earlier search (on the study's own
training folds, which covered every cell, so no longer used) tried, around the
base below.

Run (prints the table and writes a CSV)::

    .venv/bin/python scripts/tune_bilstm.py --data-dir ../shared/data --out results/tune_bilstm_lockbox.csv
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ephys2tx.data.datasets import load_dataset
from ephys2tx.evaluation.selection import inner_validation_scores, lockbox_mask, selection_summary
from ephys2tx.evaluation.splits import Fold
from ephys2tx.models.bilstm import AttentionBiLSTMClassifier

BASE = dict(token_dim=16, hidden_size=32, embedding_dim=32, dropout=0.1, arcface_margin=0.2,
            arcface_scale=16.0, learning_rate=3e-3, batch_size=128, weight_decay=1e-4,
            patience=15)
CANDIDATES = {
    "base (scale 16)": {},
    "scale 8": dict(arcface_scale=8.0),
    "scale 32": dict(arcface_scale=32.0),
    "margin 0.35": dict(arcface_margin=0.35),
    "dropout 0.3": dict(dropout=0.3),
    "lr 1e-2, batch 256": dict(learning_rate=1e-2, batch_size=256),
    "hidden 64, embedding 64": dict(hidden_size=64, embedding_dim=64),
    "hidden 16": dict(hidden_size=16),
    "weight decay 1e-3, patience 10": dict(weight_decay=1e-3, patience=10),
    "scale 8, dropout 0.3": dict(arcface_scale=8.0, dropout=0.3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5, help="stratified folds over the lockbox")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="CSV of every score")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ds = load_dataset("mouse_visp", args.data_dir)
    box = ds.subset(ds.features.index[lockbox_mask(ds.groups.to_numpy())])
    print(f"lockbox: {box.n_cells} cells of {box.groups.nunique()} animals {box.class_counts()}",
          flush=True)
    candidates = {name: partial(AttentionBiLSTMClassifier, families=box.families,
                                random_state=args.seed, **{**BASE, **change})
                  for name, change in CANDIDATES.items()}
    everything = Fold(0, 0, np.arange(box.n_cells), np.array([], dtype=int))
    scores = inner_validation_scores(
        candidates, box.features, box.labels.to_numpy(), [everything], classes=list(box.class_counts()),
        inner_splits=args.folds, random_state=args.seed,
        on_result=lambda r: print(f"{r['candidate']:32s} lockbox CV macro-F1 "
                                  f"{r['inner_macro_f1']:.4f} ({r['seconds']:.1f} s)", flush=True))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        scores.to_csv(args.out, index=False)
    summary = selection_summary(scores, "base (scale 16)")
    print("\nlockbox CV macro-F1 (pooled over folds), best first:")
    print(summary.drop(columns=["sd_f1"]).round(4).to_string())
    print("selected:", {**BASE, **CANDIDATES[summary.index[0]]})


if __name__ == "__main__":
    main()
