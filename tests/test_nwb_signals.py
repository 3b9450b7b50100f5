"""`ephys2tx extract` under signals and dying workers, as real subprocesses; unreadable entries; a hostile cache."""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from ephys2tx.features.nwb import extract_features, read_feature_table
from ephys2tx.features.nwb import cache as nwb_cache


def _inputs(nwb_set, n=None):
    good = [str(p) for p, _ in nwb_set["good"]]
    return good[:n] if n else good


def _many_cells(nwb_set, tmp_path, n=24):
    """``n`` cells (links with their own names to the fixture files): long enough a run to interrupt."""
    folder = tmp_path / "many"
    folder.mkdir()
    good = _inputs(nwb_set)
    for k in range(n):
        (folder / f"cell_{k:02d}.nwb").symlink_to(good[k % len(good)])
    return sorted(str(p) for p in folder.iterdir())


def _start(args, tmp_path, prelude=""):
    """Run ``ephys2tx.cli.main(args)`` in a new process group; ``prelude`` runs first (e.g. a patch)."""
    script = textwrap.dedent(prelude) + textwrap.dedent(f"""
        import sys
        from ephys2tx.cli import main
        sys.exit(main({[str(a) for a in args]!r}))
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, cwd=tmp_path, text=True)


def _workers(proc, n, timeout=120):
    """Wait until ``proc`` has ``n`` live child processes, return them."""
    deadline = time.time() + timeout
    parent = psutil.Process(proc.pid)
    while time.time() < deadline:
        children = [c for c in parent.children() if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        if len(children) >= n:
            return children
        time.sleep(0.05)
    raise AssertionError(f"no {n} workers after {timeout} s")


def _wait_cached(cache_dir: Path, n: int, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline and len(list(cache_dir.glob("*.npz"))) < n:
        time.sleep(0.05)
    assert len(list(cache_dir.glob("*.npz"))) >= n, "cells were not cached in time"


def _gone(processes, timeout=15):
    gone, alive = psutil.wait_procs(processes, timeout=timeout)
    return not alive


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_promptly_exits_130_or_143_and_keeps_cache(sig, nwb_set, tmp_path):
    inputs = _many_cells(nwb_set, tmp_path)  # 24 cells, 2 workers
    out, cache_dir = tmp_path / "f.parquet", tmp_path / "cache"
    proc = _start(["extract", *inputs, "-o", out, "--cache-dir", cache_dir, "-j", "2"], tmp_path)
    workers = _workers(proc, 2)
    _wait_cached(cache_dir, 1)
    sent = time.time()
    os.kill(proc.pid, sig)  # the main process only (a terminal's Ctrl-C also reaches the workers: they ignore it)
    stdout, stderr = proc.communicate(timeout=60)
    assert time.time() - sent < 10, "queued cells must not run after the interrupt"
    assert proc.returncode == 128 + sig, stderr  # 130 after Ctrl-C, 143 after SIGTERM (was 130 for both)
    assert "Traceback" not in stderr + stdout
    # one line, also off a terminal (was wrapped at 80 columns into two)
    name = "" if sig == signal.SIGINT else " (SIGTERM)"
    assert [line for line in stderr.splitlines() if line.strip()] == [
        f"aborted{name}: no table written; finished cells are kept in the cache, rerun the same command to resume"]
    assert _gone(workers), "worker processes survived their parent"
    assert not out.exists() and not Path(f"{out}.failures.csv").exists()
    n_cached = len(list(cache_dir.glob("*.npz")))
    assert 1 <= n_cached < len(inputs)
    assert not list(cache_dir.glob(".*.tmp"))
    result = extract_features(inputs, out, cache_dir=cache_dir)  # resumes from the cache
    assert result.n_from_cache == n_cached and result.n_cells == len(inputs)
    assert sorted(read_feature_table(out).frame.index) == sorted(Path(p).stem for p in inputs)


def test_sigint_to_the_whole_process_group(nwb_set, tmp_path):
    """Ctrl-C in a terminal signals every process of the group: workers ignore it, the parent cleans up."""
    out, cache_dir = tmp_path / "f.parquet", tmp_path / "cache"
    proc = _start(["extract", *_many_cells(nwb_set, tmp_path), "-o", out, "--cache-dir", cache_dir, "-j", "2"],
                  tmp_path)
    workers = _workers(proc, 2)
    _wait_cached(cache_dir, 1)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "aborted" in stderr and "Traceback" not in stderr + stdout
    assert _gone(workers) and not out.exists()


def test_sigkill_of_the_main_process_kills_the_workers(nwb_set, tmp_path):
    out, cache_dir = tmp_path / "f.parquet", tmp_path / "cache"
    proc = _start(["extract", *_many_cells(nwb_set, tmp_path), "-o", out, "--cache-dir", cache_dir, "-j", "2"],
                  tmp_path)
    workers = _workers(proc, 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert _gone(workers, timeout=10), "orphaned workers keep extracting"
    assert not out.exists()


# Workers run this before each cell (fork start method: the patch is inherited). A cell named
# in ALWAYS kills its worker with SIGKILL, as the out-of-memory killer would; a cell in ONCE
# does so only on its first attempt (a marker file remembers the attempt).
KILLER = """
    import os, signal
    from pathlib import Path
    from ephys2tx.features.nwb import extract as ex
    ALWAYS, ONCE, MARKS = {always!r}, {once!r}, Path({marks!r})
    real = ex.process_cell
    def process_cell(path, settings, cache_dir):
        name = Path(path).name
        if name in ALWAYS:
            os.kill(os.getpid(), signal.SIGKILL)
        if name in ONCE and not (MARKS / name).exists():
            (MARKS / name).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, settings, cache_dir)
    ex.process_cell = process_cell
"""


def test_killed_worker_cell_is_retried_once_then_recorded(nwb_set, tmp_path):
    inputs = _inputs(nwb_set)
    always, once = Path(inputs[1]).name, Path(inputs[4]).name
    out = tmp_path / "f.parquet"
    prelude = KILLER.format(always=[always], once=[once], marks=str(tmp_path))
    proc = _start(["extract", *inputs, "-o", out, "-j", "2"], tmp_path, prelude=prelude)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenProcessPool" not in stderr
    table = read_feature_table(out).frame
    failures = pd.read_csv(f"{out}.failures.csv")
    assert list(failures["cell_id"]) == [Path(always).stem]
    reason = failures["reason"][0]
    assert "SIGKILL" in reason and "retry in a fresh worker" in reason
    assert Path(once).stem in table.index  # died once, succeeded on the retry
    assert len(table) == len(inputs) - 1
    assert (tmp_path / once).is_file()  # it was killed once
    # No stray processes of that run: its forked workers share its command line (other tests
    # of this session may leave their own joblib workers, so children() is no measure).
    assert not [p for p in psutil.process_iter(["pid", "cmdline"])
                if p.info["pid"] != os.getpid() and str(out) in " ".join(p.info["cmdline"] or [])]


def test_unreadable_entries_are_skipped_with_a_reason(nwb_set, tmp_path):
    folder = tmp_path / "cells"
    folder.mkdir()
    good = Path(_inputs(nwb_set, 1)[0])
    (folder / good.name).symlink_to(good)
    (folder / "loop_a.nwb").symlink_to(folder / "loop_b.nwb")
    (folder / "loop_b.nwb").symlink_to(folder / "loop_a.nwb")
    (folder / "self.nwb").symlink_to(folder / "self.nwb")
    (folder / "dangling.nwb").symlink_to(tmp_path / "gone.nwb")
    (folder / "subdir_loop").symlink_to(folder)  # a folder link: not followed
    os.mkfifo(folder / "fifo.nwb")
    result = extract_features([folder], tmp_path / "f.parquet")
    assert result.n_cells == 1
    failures = pd.read_csv(result.failures_path).set_index("cell_id")["reason"]
    assert set(failures.index) == {"loop_a", "loop_b", "self", "dangling", "fifo"}
    assert all(r.startswith("skipped") for r in failures)
    assert "loop" in failures["self"] and "dangling" in failures["dangling"] and "FIFO" in failures["fifo"]


def test_planted_pickle_in_the_cache_never_runs(nwb_set, tmp_path):
    """A file planted in a shared cache is data: a pickle there is ignored and the cell recomputed."""
    good = _inputs(nwb_set, 2)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    settings = {"ap_window": 0.003, "compact": False}
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    key0, key1 = (nwb_cache.cell_key(p, settings) for p in good)
    (cache_dir / f"{key0}.npz").write_bytes(pickle.dumps(Exploit()))
    (cache_dir / f"{key1}.npz").write_bytes(b"PK\x03\x04 truncated zip")
    (cache_dir / f"{key0}.pkl").write_bytes(pickle.dumps(Exploit()))  # old-format name: never read
    result = extract_features(good, tmp_path / "f.parquet", cache_dir=cache_dir)
    assert not marker.exists()
    assert result.n_computed == 2 and result.n_cells == 2
    assert all(nwb_cache.read(cache_dir, k) is not None for k in (key0, key1))  # replaced by valid entries
