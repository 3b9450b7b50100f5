"""Throughput of `ephys2tx extract` vs ipfx's run_feature_vector_extraction on generated NWB files.

Run:  .venv/bin/python benchmarks/bench_extract.py [--sizes small allen50k] [--cells 12] [--repeats 3]
          [--workers 1 2] [--max-load 0.5] [--max-wait 1200]

Compares, on the same files and the same number of worker processes:

* ``ephys2tx``     -- ``extract_features`` (ipfx's 13 families + inst_freq_norm + IPFX summary features),
* ``ephys2tx-fv``  -- ``extract_features(summary=False)`` (the 14 families only),
* ``ipfx``         -- ``ipfx.bin.run_feature_vector_extraction`` (its own path:
  the 13 vector families, no summary).

Each ``--sizes`` entry is a file set of its own (``ephys2tx.testing.nwb_fixtures.PROTOCOLS``):
``small`` (the test fixtures: 1.55 s sweeps, 18 sweeps, float32, gzip, ~3 MB per cell),
``allen50k`` (Allen-sized: 2.52 s sweeps at 50 kHz, 24-30 sweeps, float64, uncompressed,
45-60 MB per cell) and ``allen200k`` (the same at 200 kHz, four times larger).

Fairness: every measurement runs in a fresh interpreter that imports ipfx and
ephys2tx *before* the clock starts (so neither path pays import warm-up, and
process-level caches of one path cannot help the other); the NWB files are
read once beforehand (warm OS cache for both); the order of the paths rotates
between repeats; figures are medians over repeats.  ipfx's ``Pool()`` is
given the same worker count.  Per-cell CPU time and peak RSS are measured
inside the worker processes (a thin wrapper around each path's per-cell
function records ``time.process_time`` and peak RSS (``VmHWM``)).  CPU seconds per
cell are robust to other load on the machine; wall-clock cells/min are not.

Wall-clock figures need an otherwise idle machine: the script first waits
(up to ``--max-wait`` s) until the 1-minute load average is at most
``--max-load``, prints the load averages before and after the runs, and for
every run the CPU that other processes used meanwhile (``other load``, in
cores, from ``/proc/stat`` minus the run's own CPU time).

Files are synthetic (ephys2tx.testing.nwb_fixtures): this measures mechanics,
not biology.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATHS = ("ephys2tx", "ephys2tx-fv", "ipfx")


def _record_cell_stats(log_path):
    """Decorator appending per-call worker CPU time / peak RSS / pid to ``log_path``."""
    import functools

    from ephys2tx.features.nwb.extract import peak_rss_mb

    def decorate(fn):
        @functools.wraps(fn)  # same __module__/__qualname__: still pickles by reference
        def wrapper(*args, **kwargs):
            cpu0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                line = json.dumps({"pid": os.getpid(), "cpu": time.process_time() - cpu0,
                                   "rss_mb": peak_rss_mb()})
                with open(log_path, "a") as fh:
                    fh.write(line + "\n")
        return wrapper
    return decorate


def _measure(path_name: str, workers: int, files: list[str], work_dir: Path) -> dict:
    """One timed run (called in a fresh interpreter)."""
    import logging
    import multiprocessing

    import ipfx.bin.run_feature_vector_extraction as rfv
    import ipfx.feature_record  # noqa: F401
    import ipfx.feature_vectors  # noqa: F401
    import ipfx.script_utils  # noqa: F401

    from ephys2tx.features.nwb import extract as ex

    logging.disable(logging.WARNING)
    log = work_dir / "cells.jsonl"
    if path_name == "ipfx":
        rfv.data_for_specimen_id = _record_cell_stats(log)(rfv.data_for_specimen_id)
        rfv.Pool = lambda: multiprocessing.Pool(workers)  # same worker count as ephys2tx
        out_dir = work_dir / "ipfx_out"
        out_dir.mkdir()
        import h5py  # ipfx 2.1.2 opens fv_<code>.h5 without a mode (read) before writing it
        h5py.File(out_dir / "fv_bench.h5", "w").close()
        t0 = time.perf_counter()
        rfv.run_feature_vector_extraction(
            output_dir=str(out_dir), data_source="filesystem", output_code="bench", project=None,
            output_file_type="h5", sweep_qc_option="none", include_failed_cells=True,
            run_parallel=workers > 1, ap_window_length=0.003, ids=list(range(len(files))), file_list=files)
        wall = time.perf_counter() - t0
        n_ok = len(json.loads((out_dir / "fv_errors_bench.json").read_text() or "[]"))
        n_ok = len(files) - n_ok
    else:
        ex.process_cell = _record_cell_stats(log)(ex.process_cell)
        t0 = time.perf_counter()
        result = ex.extract_features(files, work_dir / "f.parquet", workers=workers,
                                     cache_dir=work_dir / "cache", summary=path_name == "ephys2tx")
        wall = time.perf_counter() - t0
        n_ok = result.n_cells
    cells = [json.loads(line) for line in log.read_text().splitlines()]
    rss = {}
    for c in cells:
        rss[c["pid"]] = max(rss.get(c["pid"], 0.0), c["rss_mb"])
    return {"wall": wall, "n_ok": n_ok, "n_logged": len(cells),
            "cpu_per_cell": sum(c["cpu"] for c in cells) / len(cells),
            "worker_rss_mb": max(rss.values()), "n_workers_seen": len(rss)}


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux ``/proc/stat``)."""
    with open("/proc/stat") as fh:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, fh.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_in_subprocess(path_name, workers, files, tmp) -> dict:
    """One measurement in a fresh interpreter, plus the CPU that *other* processes used meanwhile.

    ``other_load`` = (machine busy CPU s - CPU s of the measurement and its
    workers) / wall s: about 0 on an idle machine, about 1 when another job
    keeps a core busy. It tells whether a wall-clock figure is trustworthy.
    """
    work_dir = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{path_name}_{workers}_"))
    cmd = [sys.executable, __file__, "--_measure", path_name, "--_workers", str(workers),
           "--_work-dir", str(work_dir), "--_files", *files]
    busy0, own0, t0 = _busy_cpu_seconds(), _children_cpu_seconds(), time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    busy, own, wall = _busy_cpu_seconds() - busy0, _children_cpu_seconds() - own0, time.perf_counter() - t0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["other_load"] = max(busy - own, 0.0) / wall
    return result


def wait_for_quiet_machine(max_load: float, max_wait: float, poll: float = 30.0) -> bool:
    """Wait until the 1-minute load average is at most ``max_load``; False if ``max_wait`` s pass first."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] > max_load:
        if time.monotonic() >= deadline:
            return False
        print(f"  load average {_load()}; waiting for <= {max_load} ...", flush=True)
        time.sleep(poll)
    return True


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "allen50k"],
                        choices=["small", "allen50k", "allen200k"], help="file sets to measure, one table each")
    parser.add_argument("--cells", type=int, default=12, help="cells per file set")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-load", type=float, default=0.5, help="start when the 1-min load is at most this")
    parser.add_argument("--max-wait", type=float, default=1200.0, help="seconds to wait for it, then run anyway")
    parser.add_argument("--_measure", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--_workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_work-dir", help=argparse.SUPPRESS)
    parser.add_argument("--_files", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        print(json.dumps(_measure(args._measure, args._workers, args._files, Path(args._work_dir))))
        return

    from ephys2tx.testing.nwb_fixtures import PROTOCOLS

    print(f"{datetime.datetime.now().isoformat(timespec='seconds')}  python {sys.version.split()[0]}  "
          f"cpu_count={os.cpu_count()}", flush=True)
    for size in args.sizes:
        bench_size(PROTOCOLS[size], args)


def bench_size(protocol, args) -> None:
    """Generate one file set and print its table."""
    from ephys2tx.testing.nwb_fixtures import generate_cells

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        labels = ["Pvalb", "Sst"] * (args.cells // 2)
        files = [str(p) for p, _ in generate_cells(tmp / "nwb", labels, seed=7, protocol=protocol)]
        for f in files:  # warm the OS file cache for every path alike
            Path(f).read_bytes()
        mb = sum(Path(f).stat().st_size for f in files) / len(files) / 1e6
        print(f"\n== {protocol.name}: {protocol.sampling_rate / 1e3:g} kHz, {protocol.dtype}, "
              f"{'gzip' if protocol.compress else 'uncompressed'}, {mb:.1f} MB per cell; generated "
              f"{len(files)} cells in {time.perf_counter() - t0:.1f} s", flush=True)
        quiet = wait_for_quiet_machine(args.max_load, args.max_wait)
        print(f"load average (1/5/15 min) before: {_load()}" + ("" if quiet else
              f"  -- still above {args.max_load} after {args.max_wait:.0f} s: wall-clock figures are pessimistic"),
              flush=True)
        runs = {(p, w): [] for w in args.workers for p in PATHS}
        configs = list(runs)
        for rep in range(args.repeats):
            shift = rep % len(configs)  # rotate the order between repeats
            for config in configs[shift:] + configs[:shift]:
                res = _run_in_subprocess(*config, files, tmp)
                if res["n_ok"] != len(files):
                    raise RuntimeError(f"{config}: {res['n_ok']} of {len(files)} cells extracted")
                runs[config].append(res)
                print(f"  repeat {rep + 1} {config[0]:12s} workers={config[1]}: {res['wall']:6.1f} s wall, "
                      f"{res['cpu_per_cell']:.2f} CPU s/cell, other load {res['other_load']:.2f}", flush=True)

        def med(config, key):
            return statistics.median(r[key] for r in runs[config])

        print(f"\n{protocol.name}: median of {args.repeats} repeats, {len(files)} cells; load average "
              f"(1/5/15 min) after: {_load()}")
        other = [r["other_load"] for rs in runs.values() for r in rs]
        print(f"CPU used by other processes during the runs: median {statistics.median(other):.2f} cores, "
              f"max {max(other):.2f} (wall-clock figures are trustworthy only near 0)")
        print(f"{'path':12s} {'workers':>7s} {'cells/min':>9s} {'CPU s/cell':>10s} {'vs ipfx (wall)':>14s} "
              f"{'vs ipfx (CPU)':>13s} {'par. eff.':>9s} {'peak RSS/worker':>15s}")
        for w in args.workers:
            for p in PATHS:
                rate = 60 * len(files) / med((p, w), "wall")
                ipfx_rate = 60 * len(files) / med(("ipfx", w), "wall")
                cpu, ipfx_cpu = med((p, w), "cpu_per_cell"), med(("ipfx", w), "cpu_per_cell")
                eff = ""
                if w != 1 and (p, 1) in runs:
                    eff = f"{rate / (w * 60 * len(files) / med((p, 1), 'wall')):.2f}"
                print(f"{p:12s} {w:7d} {rate:9.1f} {cpu:10.2f} {rate / ipfx_rate:13.2f}x {ipfx_cpu / cpu:12.2f}x "
                      f"{eff:>9s} {max(r['worker_rss_mb'] for r in runs[(p, w)]):12.0f} MB")


if __name__ == "__main__":
    main()
