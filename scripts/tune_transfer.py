"""EXPLORE human-side candidates by inner CV within the study's outer training folds.

Exploration only: the scores come from a 3-fold stratified CV inside the
training rows of the study's 5-fold stratified folds of the human table
(seed 0; :func:`ephys2tx.evaluation.selection.inner_validation_scores`).
Those training sets together cover every human cell, so a default chosen
from these scores would have seen the label of every scored cell. The study
therefore makes its human choices nested, per outer fold
(:func:`ephys2tx.models.registry.nested_choice`: boosting iterations, design
(d)'s alignment), or keeps values fixed before any search (the neural
designs' loss weights); see docs/transfer.md. Mouse cells are training data in
every fit.

Rounds:

1. gradient-boosted trees on human cells only (learning rate, iterations,
   leaves), beside the study's random forest;
2. design (d), the mouse-view stacking model: alignment of the human cells to
   the mouse model's space, the mouse model, and the human classifier;
3. the neural designs' fine-tuning choices (source loss weight,
   fine-tuning learning-rate factor, MMD weight).

Run (each round prints its table and writes a CSV)::

    .venv/bin/python scripts/tune_transfer.py --round 1 --out results/tune_transfer_round1.csv
    .venv/bin/python scripts/tune_transfer.py --round 2 --out results/tune_transfer_round2.csv
    .venv/bin/python scripts/tune_transfer.py --round 3 --use-outer 3 --out results/tune_transfer_round3.csv
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch

from ephys2tx import CLASSES
from ephys2tx.data.datasets import load_dataset
from ephys2tx.evaluation.selection import inner_validation_scores, selection_summary
from ephys2tx.evaluation.splits import make_splits
from ephys2tx.models.baselines import make_hgb, make_rf
from ephys2tx.models.transfer import MouseHumanTransferClassifier, MousePriorClassifier


def round1():
    grid = {"hgb_default": {}, "hgb_lr0.05_iter300": dict(learning_rate=0.05, max_iter=300),
            "hgb_iter300": dict(max_iter=300), "hgb_iter75": dict(max_iter=75),
            "hgb_leaves15": dict(max_leaf_nodes=15), "hgb_l2_1": dict(l2_regularization=1.0)}
    out = {name: partial(make_hgb, random_state=0, **params) for name, params in grid.items()}
    out["rf"] = partial(make_rf, random_state=0)
    return out, "hgb_default"


def round2():
    out = {"hgb": partial(make_hgb, random_state=0), "rf": partial(make_rf, random_state=0)}
    for base in ("hgb", "rf"):
        for alignment in ("zscore", "quantile", "coral"):
            out[f"d_{base}_{alignment}"] = partial(MousePriorClassifier, base=base,
                                                   alignment=alignment, random_state=0)
    out["d_hgb_zscore_mouse_rf"] = partial(MousePriorClassifier, base="hgb", alignment="zscore",
                                           source_model="rf", random_state=0)
    return out, "hgb"


def round3():
    make = partial(MouseHumanTransferClassifier, design="adapters", random_state=0)
    out = {"b_human_only": partial(make, source_weight=0.0), "b_default": make,
           "b_source1.0": partial(make, source_weight=1.0),
           "b_source0.25": partial(make, source_weight=0.25),
           "b_finetune0.1": partial(make, finetune_lr_factor=0.1),
           "b_no_finetune": partial(make, finetune=False),
           "c_mmd1": partial(make, alignment="mmd"),
           "c_mmd0.3": partial(make, alignment="mmd", alignment_weight=0.3)}
    return out, "b_human_only"


ROUNDS = {1: round1, 2: round2, 3: round3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--round", type=int, default=1, choices=sorted(ROUNDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--use-outer", type=int, default=5,
                        help="tune on the training rows of the first N outer folds only")
    parser.add_argument("--out", default=None, help="CSV of every inner score")
    args = parser.parse_args()
    torch.set_num_threads(1)
    human = load_dataset("human", args.data_dir)
    mouse = load_dataset("mouse_visp", args.data_dir)
    y = human.labels.to_numpy()
    folds = make_splits(y, scheme="stratified", n_splits=5, n_repeats=1,
                        random_state=args.seed)[:args.use_outer]
    candidates, reference = ROUNDS[args.round]()
    source = {"X_source": mouse.features, "y_source": mouse.labels.to_numpy()}
    needs_source = [name for name, factory in candidates.items()
                    if isinstance(factory(), (MousePriorClassifier, MouseHumanTransferClassifier))]
    scores = inner_validation_scores(
        candidates, human.features, y, folds, classes=CLASSES,
        fit_params={name: source for name in needs_source}, random_state=args.seed,
        on_result=lambda r: print(f"outer {r['outer_fold']} {r['candidate']:24s} inner macro-F1 "
                                  f"{r['inner_macro_f1']:.4f} ({r['seconds']:.1f} s)", flush=True))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        scores.to_csv(args.out, index=False)
    print(f"\nround {args.round}: inner-validation macro-F1 over {len(folds)} outer training sets")
    print(selection_summary(scores, reference).round(4).to_string())


if __name__ == "__main__":
    main()
