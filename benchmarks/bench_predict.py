"""Throughput of ``ephys2tx predict`` on 100,000 cells, forest then BiLSTM, on the real data.

Run::

    .venv/bin/python benchmarks/bench_predict.py --data-dir ../shared/data [--bilstm-epochs 20]

Each model is trained on the mouse reference (not timed), saved, then timed on
100,000 cells (the reference rows replicated), model load included, three ways:

* ``library``: :func:`ephys2tx.mapping.load_reference_model` + ``predict_frame``;
* ``predict()``: :func:`ephys2tx.workflows.predict`, Parquet in, CSV out, with
  the column map and unit checks (what the command does, minus start-up);
* ``CLI``: the ``ephys2tx predict`` process, interpreter start-up and imports
  included.

Each figure is the best of ``--repeats`` runs; the 1-minute load average
measured just before it is printed beside it. Before each model the script
waits (up to ``--max-wait`` s) for the load average to fall below
``--max-load``: other jobs on the machine share the CPUs. The BiLSTM is
measured last.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ephys2tx.mapping import (fit_reference_model, load_reference_model, reference_data,
                              save_reference_model)
from ephys2tx.workflows import predict

N_CELLS = 100_000


def wait_for_quiet(max_load: float, max_wait: float) -> float:
    """Sleep until the 1-minute load average is below ``max_load`` (or ``max_wait`` s passed)."""
    deadline = time.monotonic() + max_wait
    load = os.getloadavg()[0]
    while load > max_load and time.monotonic() < deadline:
        time.sleep(15)
        load = os.getloadavg()[0]
    return load


def best_of(repeats: int, fn) -> tuple[float, float]:
    """(best wall time in s, load average before the first run) of ``fn()``."""
    load = os.getloadavg()[0]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), load


def _rate(seconds: float) -> str:
    return f"{seconds:6.2f} s = {N_CELLS / seconds:>9,.0f} cells/s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--bilstm-epochs", type=int, default=20,
                        help="BiLSTM training epochs (does not change its predict speed).")
    parser.add_argument("--models", nargs="+", default=["forest", "bilstm"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-load", type=float, default=0.5)
    parser.add_argument("--max-wait", type=float, default=1200.0)
    args = parser.parse_args(argv)
    print(f"cores: {os.cpu_count()}; {N_CELLS:,} cells; best of {args.repeats}")
    ref = reference_data("mouse", args.data_dir)
    reps = -(-N_CELLS // len(ref.features))
    big = pd.concat([ref.features] * reps).iloc[:N_CELLS]
    big.index = pd.Index([f"cell{i}" for i in range(N_CELLS)], name="cell_id")
    cli = Path(sys.executable).with_name("ephys2tx")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = tmp / "cells.parquet"
        big.reset_index().to_parquet(table)
        for model in args.models:
            t0 = time.perf_counter()
            fitted = fit_reference_model(ref.features, ref.labels, species="mouse", model=model,
                                         groups=ref.groups, n_splits=2 if model != "forest" else 5,
                                         max_epochs=args.bilstm_epochs)
            fit_s = time.perf_counter() - t0
            model_dir = save_reference_model(fitted, tmp / model, checksums=ref.checksums)
            size_mb = sum(f.stat().st_size for f in model_dir.iterdir()) / 1e6
            load = wait_for_quiet(args.max_load, args.max_wait)
            print(f"{model}: trained in {fit_s:.0f} s (not timed), model dir {size_mb:.1f} MB; "
                  f"load average {load:.2f} after waiting")
            out = tmp / f"{model}.csv"

            def library(model_dir=model_dir):
                load_reference_model(model_dir).predict_frame(big)

            def function(model_dir=model_dir, out=out):
                predict(model_dir, table, out, overwrite=True)

            def command(model_dir=model_dir, out=out):
                subprocess.run([str(cli), "predict", "--model", str(model_dir), "--input", str(table),
                                "--out", str(out), "--overwrite"], check=True, capture_output=True)

            for label, fn in (("library (load + predict_frame)", library),
                              ("predict() parquet -> csv", function),
                              ("CLI process `ephys2tx predict`", command)):
                seconds, load = best_of(args.repeats, fn)
                print(f"  {label:<32} {_rate(seconds)}   (load average {load:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
