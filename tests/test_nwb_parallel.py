"""Parallel, resumable and Dask extraction on generated NWB files."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from ephys2tx.features.nwb import extract_features, load_feature_table


def _inputs(nwb_set):
    return [str(p) for p, _ in nwb_set["good"]] + [str(nwb_set["nwb1"])]


def test_resume_after_killed_run(nwb_set, tmp_path):
    inputs = _inputs(nwb_set)
    out, cache_dir = tmp_path / "f.parquet", tmp_path / "cache"
    script = textwrap.dedent(f"""
        from ephys2tx.features.nwb import extract_features
        extract_features({inputs!r}, {str(out)!r}, workers=1, cache_dir={str(cache_dir)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(cache_dir.glob("*.npz"))) < 2:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    n_cached = len(list(cache_dir.glob("*.npz")))
    assert 2 <= n_cached < len(inputs), "the run must be killed mid-way"
    assert not out.exists()

    result = extract_features(inputs, out, workers=2, cache_dir=cache_dir)
    assert result.n_from_cache == n_cached
    assert result.n_computed == len(inputs) - n_cached
    features, _ = load_feature_table(out)
    failures = pd.read_csv(result.failures_path)
    assert features.index.is_unique and len(features) == len(inputs) - 1
    assert list(failures["cell_id"]) == ["nwb1_cell"]
    assert not list(cache_dir.glob("*.tmp"))

    again = extract_features(inputs, tmp_path / "g.parquet", workers=1, cache_dir=cache_dir)
    assert again.n_computed == 0
    pd.testing.assert_frame_equal(load_feature_table(tmp_path / "g.parquet")[0], features)


def test_injected_exception_keeps_finished_cells(nwb_set, tmp_path, monkeypatch):
    from ephys2tx.features.nwb import extract as ex

    inputs = _inputs(nwb_set)[:4]
    cache_dir = tmp_path / "cache"
    real, seen = ex.process_cell, []

    def flaky(path, settings, cache_dir):
        if len(seen) == 2:
            raise KeyboardInterrupt("simulated interruption")
        seen.append(path)
        return real(path, settings, cache_dir)

    monkeypatch.setattr(ex, "process_cell", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract_features(inputs, tmp_path / "f.parquet", cache_dir=cache_dir)
    monkeypatch.setattr(ex, "process_cell", real)
    result = extract_features(inputs, tmp_path / "f.parquet", cache_dir=cache_dir)
    assert (result.n_from_cache, result.n_computed) == (2, 2)


def test_a_file_removed_or_changed_after_its_cell_was_done_keeps_its_result(nwb_set, tmp_path, monkeypatch):
    """A recording deleted, or rewritten (new mtime), while later cells are still extracted keeps the
    row it was extracted into; a file removed before its turn fails that cell only. Before: the
    table was assembled by the files' identity at the end, so the whole run stopped with "no result
    in the cache ... Dask workers must see the cache directory"."""
    import shutil

    from ephys2tx.features.nwb import extract as ex

    folder = tmp_path / "in"
    folder.mkdir()
    names = ["a.nwb", "b.nwb", "c.nwb", "d.nwb"]
    for name, (source, _) in zip(names, nwb_set["good"]):
        shutil.copy(source, folder / name)
    real, done = ex.process_cell, []

    def then_edit(path, settings, cache_dir):
        status = real(path, settings, cache_dir)
        done.append(Path(path).name)
        if len(done) == 1:
            os.remove(path)  # a.nwb: removed after its cell was done
        elif len(done) == 2:
            os.utime(path, ns=(1, 1))  # b.nwb: another mtime (rewritten by a copy still running)
            os.remove(folder / "d.nwb")  # d.nwb: removed before its turn
        return status

    monkeypatch.setattr(ex, "process_cell", then_edit)
    result = extract_features([folder], tmp_path / "f.parquet", workers=1)
    features, _ = load_feature_table(result.features_path)
    assert sorted(features.index) == ["a", "b", "c"]
    failures = pd.read_csv(result.failures_path)
    assert list(failures["cell_id"]) == ["d"] and failures["reason"][0].startswith("file not found")


def test_dask_local_cluster_matches_local(nwb_set, tmp_path, capsys):
    """Acceptance: the ``--scheduler`` path on a LocalCluster bound to 127.0.0.1 (one thread, cheap)."""
    distributed = pytest.importorskip("distributed")
    from threadpoolctl import threadpool_info

    from ephys2tx.cli import main

    inputs = _inputs(nwb_set)[:1] + _inputs(nwb_set)[-2:]  # a sweep-table cell, an icephys-table cell, NWB 1
    local = extract_features(inputs, tmp_path / "local.parquet", workers=1)
    blas_threads = [p["num_threads"] for p in threadpool_info()]
    with distributed.LocalCluster(host="127.0.0.1", protocol="tcp://", n_workers=1, threads_per_worker=1,
                                  processes=False, dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        out = tmp_path / "dask.parquet"
        assert main(["extract", *inputs, "-o", str(out), "--scheduler", cluster.scheduler_address]) == 0
    assert "(0 from cache)" in capsys.readouterr().out
    assert [p["num_threads"] for p in threadpool_info()] == blas_threads  # in-process worker: untouched
    pd.testing.assert_frame_equal(load_feature_table(out, include_summary=True)[0],
                                  load_feature_table(local.features_path, include_summary=True)[0])
    assert pd.read_csv(f"{out}.failures.csv").equals(pd.read_csv(local.failures_path))


def test_unreachable_scheduler_is_input_error(nwb_set, tmp_path, monkeypatch):
    import socket

    from ephys2tx.errors import InputError
    from ephys2tx.features.nwb import extract as ex

    monkeypatch.setattr(ex, "SCHEDULER_TIMEOUT", "1s")
    with socket.socket() as sock:  # a free port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(InputError, match="cannot connect to the Dask scheduler"):
        extract_features(_inputs(nwb_set)[:1], tmp_path / "f.parquet", scheduler=f"tcp://127.0.0.1:{port}")
    assert not (tmp_path / "f.parquet.cache").exists()
