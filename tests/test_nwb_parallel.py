import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from ephys2tx.features.nwb import extract_features, load_feature_table
from ephys2tx.testing.nwb_fixtures import standard_fixture_set


@pytest.fixture(scope="session")
def nwb_set(tmp_path_factory):
    return standard_fixture_set(tmp_path_factory.getbasetemp() / "nwb_fixture_set")


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
        while time.time() < deadline and len(list(cache_dir.glob("*.pkl"))) < 2:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    n_cached = len(list(cache_dir.glob("*.pkl")))
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


@pytest.mark.slow
def test_dask_local_cluster_matches_local(nwb_set, tmp_path):
    distributed = pytest.importorskip("distributed")
    inputs = _inputs(nwb_set)[:3]
    local = extract_features(inputs, tmp_path / "local.parquet", workers=1)
    with distributed.LocalCluster(host="127.0.0.1", n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        result = extract_features(inputs, tmp_path / "dask.parquet", scheduler=cluster.scheduler_address)
    assert result.n_computed == 3
    pd.testing.assert_frame_equal(load_feature_table(result.features_path)[0],
                                  load_feature_table(local.features_path)[0])
