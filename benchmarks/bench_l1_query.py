"""A layer-1 query through the human reference: accuracy of ``map`` with and without ``--layer L1``.

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

    .venv/bin/python benchmarks/bench_l1_query.py --data-dir ../shared/data
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
    from ephys2tx.data.paths import resolve_data_dir
    from ephys2tx.workflows import map_cells

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    table = resolve_data_dir(args.data_dir) / "mouse_l1_bridge_chartrand2023" / "aibs_mouse_features_E.csv"
    labels = load_dataset("mouse_l1_bridge", args.data_dir).labels
    labels.index = labels.index.map(str)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for align in ("none", "auto"):
            for layer in (None, "L1"):
                started = time.perf_counter()
                res = map_cells(table, "human", tmp / f"out-{align}-{layer}", align=align, layer=layer,
                                data_dir=args.data_dir, cache_dir=tmp / "cache")
                pred = res.predictions
                ids = pred.iloc[:, 0].astype(str)
                truth = labels.reindex(ids).to_numpy(dtype=object)
                call = pred["predicted_subclass"].to_numpy(dtype=object)
                ok = pd.Series(truth).isin(CLASSES).to_numpy() & pd.notna(call)
                rows.append({"--align": align, "--layer": layer or "—", "resolved": res.align,
                             "cells scored": int(ok.sum()),
                             "accuracy": round(accuracy_score(truth[ok], call[ok]), 3),
                             "macro-F1": round(f1_score(truth[ok], call[ok], average="macro"), 3),
                             "calls": pd.Series(call[ok]).value_counts().to_dict(),
                             "seconds": round(time.perf_counter() - started, 1)})
    print("mouse L1 bridge cells (IPFX naming) mapped onto the human reference; "
          f"truth: {labels.reindex(labels.index).value_counts().to_dict()}\n")
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
