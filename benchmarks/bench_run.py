"""Wall time of the ``ephys2tx run`` process, cold (empty fold cache) and warm (second run).

Run::

    .venv/bin/python benchmarks/bench_run.py --data-dir ../shared/data [--full] [--jobs 2]

Times ``ephys2tx run --quick`` (target <= 60 s) and, with ``--full``, the full
study (target <= 5 min; it takes much longer cold): first with an empty fold
cache (a fresh temporary ``--cache-dir``), then again with the same cache.
Each line gives the wall time, the fold-cache counts the command printed and
the 1-minute load average before the run; the script first waits (up to
``--max-wait`` s) for the load average to fall below ``--max-load``, since
other jobs on the machine share the CPUs. It also checks that the warm run's
``metrics.json`` has the same scores as the cold one (timing fields aside).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _quiet import wait_for_quiet  # benchmarks/ (the script's folder) is on sys.path

TIMING_KEYS = {"seconds", "fit_seconds", "fit_seconds_mean", "started", "finished",
               "created_utc", "elapsed_seconds"}


def without_timing(value):
    """``value`` with every timing field dropped (they differ between runs)."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items()
                if k not in TIMING_KEYS and "seconds" not in k}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def timed_run(cli: Path, args: list[str]) -> tuple[float, str, float]:
    """(wall seconds, fold-cache line, load average before) of one ``ephys2tx run``."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run([str(cli), "run", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"ephys2tx run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    match = re.search(r"fold cache .*", done.stderr)
    return seconds, match.group(0) if match else "(no cache line)", load


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--full", action="store_true", help="Also time the full study.")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--max-load", type=float, default=0.5)
    parser.add_argument("--max-wait", type=float, default=1200.0)
    parser.add_argument("--run-args", default="",
                        help="Extra `ephys2tx run` arguments, e.g. \"--species human --model rf\" "
                             "(a smaller run, to check the script; the targets are for the default).")
    args = parser.parse_args(argv)
    cli = Path(sys.executable).with_name("ephys2tx")
    print(f"cores: {os.cpu_count()}; --jobs {args.jobs} {args.run_args}".rstrip())
    configs = [("run --quick", ["--quick"])] + ([("run (full)", [])] if args.full else [])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, extra in configs:
            cache = tmp / f"cache-{len(extra)}"
            common = [*extra, *args.run_args.split(), "--jobs", str(args.jobs),
                      "--cache-dir", str(cache)]
            if args.data_dir:
                common += ["--data-dir", str(args.data_dir)]
            metrics = []
            for phase in ("cold", "warm"):
                out = tmp / f"out-{len(extra)}-{phase}"
                load = wait_for_quiet(args.max_load, args.max_wait)
                seconds, line, load = timed_run(cli, [*common, "--out", str(out)])
                print(f"  {label:<12} {phase}: {seconds:7.1f} s   {line}   (load average {load:.2f})",
                      flush=True)
                metrics.append(without_timing(json.loads((out / "metrics.json").read_text())))
            same = json.dumps(metrics[0], sort_keys=True) == json.dumps(metrics[1], sort_keys=True)
            print(f"  {label:<12} warm scores identical to cold: {same}")
            if not same:
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
