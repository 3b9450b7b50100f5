"""Throughput of ``predict`` and wall time of ``map`` on the real reference data.

Run::

    EPHYS2TX_DATA=/work/shared/data python benchmarks/bench_predict.py [--bilstm-epochs 20]

Prints, for the forest and the BiLSTM (trained on the mouse reference):

* ``predict`` on 100,000 cells (reference rows replicated), model load
  included: library path (load + predict_frame) and end to end (Parquet in,
  CSV out, through :func:`ephys2tx.mapping.predict`);
* ``map`` end to end on a 300-cell query in Allen Cell Types naming, with a
  cold cache (the reference model fit included) and a warm cache.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from ephys2tx.mapping import (load_reference_model, map_cells, predict, reference_data,
                              save_reference_model, fit_reference_model)

N_CELLS = 100_000
N_QUERY = 300


def _visp_query(data_dir: Path | None, n: int) -> pd.DataFrame:
    from ephys2tx.data.paths import resolve_data_dir

    root = resolve_data_dir(data_dir) / "mouse_visp_gouwens2020"
    ephys = pd.read_csv(root / "VISp_Viewer_ephys.csv")
    meta = pd.read_csv(root / "VISp_Viewer_meta.csv")
    extra = ["Cell ID", "AP maximum rate of rise (Upstroke) (mV/ms)", "tau", "Latency"]
    return ephys.merge(meta[extra], on="Cell ID").sample(n, random_state=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--bilstm-epochs", type=int, default=20,
                        help="BiLSTM training epochs (does not change its predict speed).")
    args = parser.parse_args(argv)
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    ref = reference_data("mouse", args.data_dir)
    reps = -(-N_CELLS // len(ref.features))
    big = pd.concat([ref.features] * reps).iloc[:N_CELLS]
    big.index = [f"cell{i}" for i in range(N_CELLS)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = tmp / "cells.parquet"
        big.rename_axis("cell_id").reset_index().to_parquet(table)
        for model in ("forest", "bilstm"):
            t0 = time.perf_counter()
            fitted = fit_reference_model(ref.features, ref.labels, species="mouse", model=model,
                                         groups=ref.groups, max_epochs=args.bilstm_epochs)
            fit_s = time.perf_counter() - t0
            model_dir = save_reference_model(fitted, tmp / model, checksums=ref.checksums)
            size_mb = sum(f.stat().st_size for f in model_dir.iterdir()) / 1e6
            t0 = time.perf_counter()
            loaded = load_reference_model(model_dir)
            load_s = time.perf_counter() - t0
            loaded.predict_frame(big)
            lib_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            predict(model_dir, table, tmp / f"{model}.csv")
            e2e_s = time.perf_counter() - t0
            print(f"{model:>7}: train+CV {fit_s:6.1f} s, model dir {size_mb:5.1f} MB | predict "
                  f"{N_CELLS:,} cells: load+predict {lib_s:5.2f} s ({N_CELLS / lib_s:,.0f} cells/s, "
                  f"load {load_s:.2f} s); end to end parquet->csv {e2e_s:5.2f} s "
                  f"({N_CELLS / e2e_s:,.0f} cells/s)")
        query = tmp / "query.csv"
        _visp_query(args.data_dir, N_QUERY).to_csv(query, index=False)
        cache = tmp / "cache"
        for label in ("cold cache (reference fit included)", "warm cache"):
            t0 = time.perf_counter()
            result = map_cells(query, "mouse", tmp / f"map-{label[:4]}", cache_dir=cache,
                               data_dir=args.data_dir)
            print(f"map {N_QUERY} cells, {len(result.features)} features, {label}: "
                  f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
