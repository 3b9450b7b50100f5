"""Wall time of ``ephys2tx map`` end to end on a 300-cell query, reference model fit included.

Run::

    .venv/bin/python benchmarks/bench_map.py --data-dir ../shared/data

The query is 300 cells of the mouse VISp table in Allen Cell Types naming
(all its mapped features, plus tau from the metadata), as a CSV. Timed: the
``ephys2tx map`` process (interpreter start-up, reading the reference, the
5-fold cross-validation, calibration and OOD threshold, the final fit, the
predictions, report and figures), with an empty cache (cold) and with the
reference model already cached (warm); also ``--align quantile`` and
``--align ot`` on a warm cache. The 1-minute load average before each run is
printed beside it.
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
from _quiet import wait_for_quiet  # benchmarks/ (the script's folder) is on sys.path

N_QUERY = 300


def visp_query(data_dir, n: int) -> pd.DataFrame:
    """``n`` VISp cells in Allen Cell Types naming (ephys table + tau from the metadata)."""
    from ephys2tx.data.paths import resolve_data_dir

    root = resolve_data_dir(data_dir) / "mouse_visp_gouwens2020"
    ephys = pd.read_csv(root / "VISp_Viewer_ephys.csv")
    meta = pd.read_csv(root / "VISp_Viewer_meta.csv")
    return ephys.merge(meta[["Cell ID", "tau"]], on="Cell ID").sample(n, random_state=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-load", type=float, default=0.5)
    parser.add_argument("--max-wait", type=float, default=1200.0)
    args = parser.parse_args(argv)
    cli = Path(sys.executable).with_name("ephys2tx")
    data = ["--data-dir", str(args.data_dir)] if args.data_dir else []
    print(f"cores: {os.cpu_count()}; query: {N_QUERY} cells; best of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        query = tmp / "query.csv"
        visp_query(args.data_dir, N_QUERY).to_csv(query, index=False)
        load = wait_for_quiet(args.max_load, args.max_wait)
        print(f"load average {load:.2f} after waiting")
        runs = [("cold cache (reference fit included)", [], True),
                ("warm cache", [], False),
                ("warm cache, --align quantile", ["--align", "quantile"], False),
                ("warm cache, --align ot", ["--align", "ot"], False)]
        for label, extra, cold in runs:
            times, loads = [], []
            for k in range(args.repeats):
                cache = tmp / (f"cache-cold-{k}" if cold else "cache-warm")
                if not cold and not cache.exists():  # fill the warm cache, untimed
                    subprocess.run([str(cli), "map", "--input", str(query), "--species", "mouse",
                                    "--out", str(tmp / "fill"), "--cache-dir", str(cache), *data],
                                   check=True, capture_output=True)
                loads.append(os.getloadavg()[0])
                t0 = time.perf_counter()
                done = subprocess.run([str(cli), "map", "--input", str(query), "--species", "mouse",
                                       "--out", str(tmp / "out"), "--overwrite", "--cache-dir",
                                       str(cache), *extra, *data], check=True, capture_output=True,
                                      text=True)
                times.append(time.perf_counter() - t0)
            print(f"  map {label:<38} best {min(times):5.1f} s, worst {max(times):5.1f} s "
                  f"(load average {min(loads):.2f}-{max(loads):.2f}): {done.stdout.strip()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
