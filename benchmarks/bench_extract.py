"""Throughput of `ephys2tx extract` vs ipfx's run_feature_vector_extraction on generated NWB files.

Run:  .venv/bin/python benchmarks/bench_extract.py [--cells 12]

Prints cells/minute with 1 and 2 workers for both paths (same files, same core
count), parallel efficiency, the speed ratio and peak RSS per worker.  Files
are synthetic (ephys2tx.testing.nwb_fixtures); this measures mechanics, not
biology.
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from pathlib import Path

from ephys2tx.features.nwb import extract_features
from ephys2tx.testing.nwb_fixtures import generate_cells


def run_ours(files, workers, tmp):
    t0 = time.perf_counter()
    result = extract_features(files, tmp / f"ours_{workers}.parquet", workers=workers,
                              cache_dir=tmp / f"cache_{workers}")
    elapsed = time.perf_counter() - t0
    assert result.n_failed == 0 and result.n_computed == len(files)
    return elapsed, result.max_worker_rss_mb


def run_ipfx(files, workers, tmp):
    import ipfx.bin.run_feature_vector_extraction as rfv

    out_dir = tmp / f"ipfx_{workers}"
    out_dir.mkdir()
    import h5py  # ipfx 2.1.2 opens fv_<code>.h5 without a mode (read) before writing it
    h5py.File(out_dir / "fv_bench.h5", "w").close()
    t0 = time.perf_counter()
    rfv.run_feature_vector_extraction(
        output_dir=str(out_dir), data_source="filesystem", output_code="bench", project=None,
        output_file_type="h5", sweep_qc_option="none", include_failed_cells=True,
        run_parallel=workers > 1, ap_window_length=0.003, ids=list(range(len(files))),
        file_list=[str(f) for f in files])
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=12)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        labels = ["Pvalb", "Sst"] * (args.cells // 2)
        files = [p for p, _ in generate_cells(tmp / "nwb", labels, seed=7)]
        print(f"generated {len(files)} cells in {time.perf_counter() - t0:.1f} s")
        rate = {}
        for workers in (1, 2):
            ours, rss = run_ours(files, workers, tmp)
            theirs = run_ipfx(files, workers, tmp)  # ipfx's Pool() uses all (2) cores
            rate[workers] = (60 * len(files) / ours, 60 * len(files) / theirs)
            print(f"workers={workers}: ephys2tx {rate[workers][0]:6.1f} cells/min | ipfx run_feature_vector_extraction "
                  f"{rate[workers][1]:6.1f} cells/min | ratio {rate[workers][0] / rate[workers][1]:.2f}x | "
                  f"peak RSS per worker {rss:.0f} MB")
        for k, name in enumerate(("ephys2tx", "ipfx")):
            print(f"parallel efficiency (2 workers) {name}: {rate[2][k] / (2 * rate[1][k]):.2f}")
        print(f"benchmark process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
