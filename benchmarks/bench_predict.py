"""Throughput of ``ephys2tx predict`` on 300,000 cells, forest then BiLSTM, and CLI start-up.

Run::

    .venv/bin/python benchmarks/bench_predict.py --data-dir ../shared/data [--bilstm-epochs 20]

Start-up first: the wall time of ``ephys2tx --help`` (target <= 0.5 s) and of
``import ephys2tx.cli``, best of ``--repeats``. Then each model is trained on the
mouse reference (not timed), saved with the sample of training cells that
``ephys2tx train`` stores (so ``predict`` runs its shift alarm: two-sample tests
against it), then timed on ``--cells`` cells (default
300,000: the reference rows replicated), model load included, three ways:

* ``library``: :func:`ephys2tx.mapping.load_reference_model` + ``predict_frame``;
* ``predict()``: :func:`ephys2tx.workflows.predict`, Parquet in, CSV out, with
  the column map and unit checks (what the command does, minus start-up);
* ``CLI``: the ``ephys2tx predict`` process, interpreter start-up and imports
  included (target: >= 100,000 cells/s for the forest).

Each figure is the best of ``--repeats`` runs; the 1-minute load average
measured just before it is printed beside it, and so is the best CPU time
(user + system, of this process and of the ``ephys2tx`` child process, all
threads): on a machine shared with other jobs the wall time grows with the
load, the CPU time much less. Before each model the script
waits (up to ``--max-wait`` s) for the load average to fall below
``--max-load``: other jobs on the machine share the CPUs. The BiLSTM is
measured last.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ephys2tx.mapping import (fit_reference_model, load_reference_model, reference_data,
                              save_reference_model)
from ephys2tx.models.predict_shift import reference_sample
from ephys2tx.workflows import predict

from _quiet import wait_for_quiet  # benchmarks/ (the script's folder) is on sys.path

N_CELLS = 300_000


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def best_of(repeats: int, fn) -> tuple[float, float, float]:
    """(best wall time in s, best CPU time in s, load average before the first run) of ``fn()``."""
    load = os.getloadavg()[0]
    times, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), _cpu_seconds()
        fn()
        times.append(time.perf_counter() - t0)
        cpus.append(_cpu_seconds() - c0)
    return min(times), min(cpus), load


def _rate(seconds: float, n_cells: int) -> str:
    return f"{seconds:6.2f} s = {n_cells / seconds:>9,.0f} cells/s"


def startup(cli: Path, repeats: int) -> None:
    """Print the best wall time of ``ephys2tx --help`` and of importing the CLI module."""
    runs = (("`ephys2tx --help`", [str(cli), "--help"]),
            ("`import ephys2tx.cli`", [sys.executable, "-c", "import ephys2tx.cli"]))
    for label, argv in runs:
        seconds, cpu, load = best_of(repeats, lambda argv=argv: subprocess.run(
            argv, check=True, capture_output=True))
        print(f"  {label:<32} {seconds:6.3f} s   (CPU {cpu:.3f} s; load average {load:.2f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--bilstm-epochs", type=int, default=20,
                        help="BiLSTM training epochs (does not change its predict speed).")
    parser.add_argument("--models", nargs="+", default=["forest", "bilstm"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-load", type=float, default=0.5)
    parser.add_argument("--max-wait", type=float, default=1200.0)
    parser.add_argument("--cells", type=int, default=N_CELLS)
    args = parser.parse_args(argv)
    n_cells = args.cells
    print(f"cores: {os.cpu_count()}; {n_cells:,} cells; best of {args.repeats}")
    cli = Path(sys.executable).with_name("ephys2tx")
    load = wait_for_quiet(args.max_load, args.max_wait)
    print(f"start-up (load average {load:.2f} after waiting):")
    startup(cli, args.repeats)
    ref = reference_data("mouse", args.data_dir)
    reps = -(-n_cells // len(ref.features))
    big = pd.concat([ref.features] * reps).iloc[:n_cells]
    big.index = pd.Index([f"cell{i}" for i in range(n_cells)], name="cell_id")
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
            # with the sample of training cells that `ephys2tx train` stores: predict's shift alarm
            sample = reference_sample(ref.features[fitted.features], ref.labels, fitted.classes)
            model_dir = save_reference_model(fitted, tmp / model, checksums=ref.checksums,
                                             reference_sample=sample)
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
                seconds, cpu, load = best_of(args.repeats, fn)
                print(f"  {label:<32} {_rate(seconds, n_cells)}   (CPU {cpu:.2f} s; load average "
                      f"{load:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
