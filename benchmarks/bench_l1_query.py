"""A layer-1 query through the human reference: accuracy of ``map`` or ``predict``, with and without ``--layer L1``.

The shared data hold only 3 human layer-1 cells, so no human layer-1 query can
be scored. The stand-in: the mouse L1 bridge cells (Chartrand et al. 2023),
whose features come from the same IPFX pipeline and carry the same column
names as the human table, mapped onto the *human* reference exactly as a user
would (``ephys2tx map --species human``, the shipped column map detected), and
scored against their subclass labels (Lamp5 and Vip; Sncg cells have no
reference class and are left out of the scores). It is a harder query than a
human one: the cells are of another species as well as another layer. Mouse
cells through the mouse reference are the shift benchmark's ``bridge`` and
``mouse L1`` scenarios (docs/shift.md).

``--route predict`` trains a human forest as ``ephys2tx train`` does (defaults)
and runs ``ephys2tx predict`` on the table with ``--align none``, ``em`` and
``auto``.

The class prior of ``--layer L1``: the human table has 1 layer-1 cell, so it
falls back to the mouse VISp layer-1 mix, and 192 of VISp's 244 labelled
layer-1 cells are bridge cells of this very query: ``--layer L1`` here carries
the query's own labels (Lamp5 83%, Vip 12%; without them, 52 cells: Lamp5 48%,
Vip 30%, Pvalb 11%, Sst 11%). The rows ``--prior L1 w/o query`` give instead the layer-1 mix of
the reference tables without the query's cells
(:func:`ephys2tx.data.layers.layer_tables` ``exclude``) as an explicit ``--prior``:
the honest figure for a lab whose cells are in no reference.

    .venv/bin/python benchmarks/bench_l1_query.py --data-dir ../shared/data [--route predict]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score

    from ephys2tx import CLASSES
    from ephys2tx.data.datasets import load_dataset
    from ephys2tx.data.layers import layer_priors, layer_tables
    from ephys2tx.data.paths import resolve_data_dir
    from ephys2tx.workflows import map_cells, predict, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--route", choices=("map", "predict"), default="map")
    args = parser.parse_args(argv)
    table = resolve_data_dir(args.data_dir) / "mouse_l1_bridge_chartrand2023" / "aibs_mouse_features_E.csv"
    labels = load_dataset("mouse_l1_bridge", args.data_dir).labels
    labels.index = labels.index.map(str)
    # the layer-1 mix of the reference tables without the query's own cells, as an explicit prior
    clean, clean_notes, _ = layer_priors(["L1"], layer_tables("human", args.data_dir, exclude=labels.index),
                                         CLASSES)
    clean_prior = ",".join(f"{c}={v:.6f}" for c, v in zip(CLASSES, clean[0]))
    priors = (("—", {}), ("--layer L1", {"layer": "L1"}), ("--prior L1 w/o query", {"prior": clean_prior}))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.route == "predict":
            started = time.perf_counter()
            model_dir = train("human", "forest", tmp / "model", data_dir=args.data_dir).path
            print(f"trained the human forest (train defaults) in {time.perf_counter() - started:.0f} s")
        for align in (("none", "auto") if args.route == "map" else ("none", "em", "auto")):
            for label, prior in priors:
                started = time.perf_counter()
                if args.route == "map":
                    res = map_cells(table, "human", tmp / f"out-{align}-{len(rows)}", align=align,
                                    data_dir=args.data_dir, cache_dir=tmp / "cache", **prior)
                    pred, resolved = res.predictions, res.align
                else:
                    res = predict(model_dir, table, tmp / f"out-{len(rows)}.csv", align=align,
                                  data_dir=args.data_dir, **prior)
                    pred, resolved = res.predictions, res.shift.adapt.method
                ids = pred.iloc[:, 0].astype(str)
                truth = labels.reindex(ids).to_numpy(dtype=object)
                call = pred["predicted_subclass"].to_numpy(dtype=object)
                ok = pd.Series(truth).isin(CLASSES).to_numpy() & pd.notna(call)
                rows.append({"--align": align, "prior": label, "resolved": resolved,
                             "cells scored": int(ok.sum()),
                             "accuracy": round(accuracy_score(truth[ok], call[ok]), 3),
                             "macro-F1": round(f1_score(truth[ok], call[ok], average="macro"), 3),
                             "calls": pd.Series(call[ok]).value_counts().to_dict(),
                             "seconds": round(time.perf_counter() - started, 1)})
    print(f"route: {args.route}; L1 prior without the query's cells: {clean_notes[0]}")
    print("mouse L1 bridge cells (IPFX naming) mapped onto the human reference; "
          f"truth: {labels.reindex(labels.index).value_counts().to_dict()}\n")
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
