"""Ctrl-C and SIGTERM: real ``ephys2tx`` processes, interrupted while they work.

Each case starts the console script in a sandbox, waits until it is fitting
models, sends the signal to the main process and checks: exit code 130
(SIGINT) or 143 (SIGTERM), ``aborted`` as the last line, no traceback, no
output folder, no staging folder, no surviving worker process, and the
sandbox's pre-existing files unchanged. In-process tests cover an interrupt
while the output folder is being written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ephys2tx.safety import MARKER, staged_output_dir

from test_cli_faults import snapshot, tiny_model  # noqa: F401  (a fixture: a 5-tree model)

SCRIPT = Path(sys.executable).with_name("ephys2tx")


def _descendants(pid: int) -> set[int]:
    """Child processes of ``pid``, recursively (Linux /proc)."""
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _interrupt(args: list[str], sandbox: Path, signum: int, wait_for_workers: bool,
               delay: float = 5.0) -> tuple[int, str, set[int]]:
    """Start ``ephys2tx args``, signal it once it is busy, return (code, stderr, its workers)."""
    env = {**os.environ, "HOME": str(sandbox / "home"), "MPLCONFIGDIR": str(sandbox.parent / "mpl"),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(SCRIPT), *args], cwd=sandbox, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    workers: set[int] = set()
    deadline = time.monotonic() + 60
    time.sleep(delay)
    while wait_for_workers and not workers and time.monotonic() < deadline and proc.poll() is None:
        workers = _descendants(proc.pid)
        time.sleep(0.2)
    workers |= _descendants(proc.pid)
    assert proc.poll() is None, "the command finished before it could be interrupted"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, workers


def _sandbox(tmp_path: Path) -> Path:
    sandbox = tmp_path / "sandbox"
    (sandbox / "home").mkdir(parents=True)
    (sandbox / "notes.txt").write_text("the user's own file")
    return sandbox


def _check(code, err, workers, signum, sandbox, before, out):
    assert code == 128 + signum, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("aborted"), err
    assert not out.exists()
    assert not [p for p in sandbox.iterdir() if "staging" in p.name]
    assert snapshot(sandbox) == before
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)], "worker processes outlived the command"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_quick_is_interrupted_cleanly(signum, data_dir, tmp_path):
    sandbox = _sandbox(tmp_path)
    out = sandbox / "results"
    before = snapshot(sandbox)
    args = ["run", "--quick", "--species", "human", "--model", "logreg", "--model", "rf",
            "--model", "hgb", "--data-dir", str(data_dir), "--out", str(out)]
    code, err, workers = _interrupt(args, sandbox, signum, wait_for_workers=True)
    assert workers, "the run had started its fold workers when it was interrupted"
    _check(code, err, workers, signum, sandbox, before, out)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_train_is_interrupted_cleanly(signum, data_dir, tmp_path):
    sandbox = _sandbox(tmp_path)
    out = sandbox / "model"
    before = snapshot(sandbox)
    args = ["train", "--species", "mouse", "--n-estimators", "400", "--data-dir", str(data_dir),
            "--out", str(out)]
    code, err, workers = _interrupt(args, sandbox, signum, wait_for_workers=False)
    _check(code, err, workers, signum, sandbox, before, out)


@pytest.mark.slow
def test_rerun_after_an_interrupt_works_and_replaces_nothing_of_the_user(data_dir, tmp_path):
    """After Ctrl-C the same command runs as if nothing had happened (no stale target)."""
    sandbox = _sandbox(tmp_path)
    out = sandbox / "model"
    code, err, _ = _interrupt(["train", "--species", "human", "--n-estimators", "300",
                               "--data-dir", str(data_dir), "--out", str(out)],
                              sandbox, signal.SIGINT, wait_for_workers=False, delay=4.0)
    assert code == 130, err
    done = subprocess.run([str(SCRIPT), "train", "--species", "human", "--n-estimators", "5",
                           "--n-splits", "2", "--data-dir", str(data_dir), "--out", str(out)],
                          cwd=sandbox, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HOME": str(sandbox / "home")})
    assert done.returncode == 0, done.stderr
    assert (out / MARKER).is_file() and (out / "model.json").is_file()


# ------------------------------------------------------------------ interrupts while writing


def test_interrupt_while_writing_leaves_the_old_folder(tmp_path):
    target = tmp_path / "results"
    with staged_output_dir(target, "study") as staging:
        (staging / "a.txt").write_text("first")
    before = snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with staged_output_dir(target, "study", overwrite=True) as staging:
            (staging / "a.txt").write_text("half")
            raise KeyboardInterrupt
    assert snapshot(tmp_path) == before


def test_main_turns_an_interrupt_into_130_and_removes_the_staging(tmp_path, monkeypatch, capsys):
    """Ctrl-C inside a command (as typer hands it back) exits 130 with 'aborted'."""
    import ephys2tx.data.fetch as fetch_module
    from ephys2tx.cli import main

    def interrupted():
        with staged_output_dir(tmp_path / "out", "study") as staging:
            (staging / "partial.txt").write_text("x")
            raise KeyboardInterrupt

    monkeypatch.setattr(fetch_module, "fetch_datasets", lambda *a, **k: interrupted())
    assert main(["fetch", "--data-dir", str(tmp_path / "data")]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "aborted"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ------------------------------------------------------------------ map and predict
#
# In-process: the command runs under `main`, and a patched step sends the real signal to this
# process at a chosen point (reading, fitting the reference model, saving it to the cache,
# writing the output). `main`'s handlers turn it into the interrupt, as for a user's Ctrl-C.

FEATURES = ["tau", "input_resistance", "v_baseline", "sag", "rheobase_i", "width_rheo",
            "upstroke_downstroke_ratio_rheo", "threshold_v_rheo", "fi_fit_slope"]


@pytest.fixture
def query(human, tmp_path) -> Path:
    sandbox = _sandbox(tmp_path)
    path = sandbox / "cells.csv"
    human.features[FEATURES].iloc[::25].rename_axis("cell_id").reset_index().to_csv(path, index=False)
    return path


def _signal_at(monkeypatch, owner, name: str, signum: int, call: int = 1):
    """Replace ``owner.name`` by a wrapper that sends ``signum`` to this process on its ``call``-th call."""
    original = getattr(owner, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)  # the handler raises here, in the main thread
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def _left_behind(sandbox: Path) -> list[str]:
    return [str(p.relative_to(sandbox)) for p in sandbox.rglob("*")
            if "staging" in p.name or p.name.endswith(".tmp") or ".ephys2tx-probe" in p.name]


def _check_in_process(code, capsys, signum, sandbox, before, out, kept: str | None = None):
    """The contract after an interrupt; ``kept``: a folder whose new content may stay (the cache)."""
    from ephys2tx.safety import _CLAIMS, lock_path

    err = capsys.readouterr().err
    assert code == 128 + signum, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("aborted"), err
    assert not out.exists() and not _left_behind(sandbox)
    after = {k: v for k, v in snapshot(sandbox).items() if kept is None or k.split("/")[0] != kept}
    assert after == before
    assert not _CLAIMS and not lock_path(out).exists()  # the claim went with the command


def _map_args(query: Path, data_dir: Path, out: Path, cache: Path, *extra) -> list[str]:
    return ["map", "--species", "human", "-i", str(query), "--data-dir", str(data_dir),
            "--cache-dir", str(cache), "--out", str(out), *extra]


def _cache_entries(cache: Path) -> list[Path]:
    return sorted(cache.iterdir()) if cache.is_dir() else []


@pytest.mark.parametrize("point, signum", [
    ("reading", signal.SIGINT), ("reading", signal.SIGTERM),
    ("fitting", signal.SIGINT), ("fitting", signal.SIGTERM),
])
def test_map_interrupted_while_reading_or_fitting(point, signum, query, data_dir, monkeypatch,
                                                  capsys):
    import ephys2tx.mapping.cache as cache_module
    import ephys2tx.workflows as workflows
    from ephys2tx.cli import main

    sandbox = query.parent
    out, cache = sandbox / "mapped", sandbox / "cache"
    if point == "reading":
        _signal_at(monkeypatch, workflows, "read_query", signum)
    else:
        original = cache_module.fit_reference_model

        def fit(*args, progress=None, **kwargs):  # the signal arrives inside the fit, at fold 2
            def say(message):
                if message.startswith("cross-validation fold 2/"):
                    os.kill(os.getpid(), signum)
            return original(*args, progress=say, **kwargs)

        monkeypatch.setattr(cache_module, "fit_reference_model", fit)
    before = snapshot(sandbox)
    code = main(_map_args(query, data_dir, out, cache))
    _check_in_process(code, capsys, signum, sandbox, before, out)


@pytest.mark.parametrize("point, signum", [
    ("saving the cache entry", signal.SIGINT), ("writing the report", signal.SIGTERM)])
def test_map_interrupted_while_writing_then_maps_again(point, signum, query, data_dir,
                                                       monkeypatch, capsys):
    """The cache is never left with a partial entry, and a later map works."""
    import ephys2tx.models.persistence as persistence
    import ephys2tx.report.mapping_report as mapping_report
    import ephys2tx.workflows as workflows
    from ephys2tx.cli import main
    from ephys2tx.mapping.reference import load_reference_model

    sandbox = query.parent
    out, cache = sandbox / "mapped", sandbox / "cache"
    original = workflows.cached_reference_model
    monkeypatch.setattr(workflows, "cached_reference_model",  # 10 trees: the mechanics only
                        lambda *a, **k: original(*a, **{**k, "n_estimators": 10}))
    if point == "saving the cache entry":
        calls = _signal_at(monkeypatch, persistence, "_dump_skops", signum)
    else:
        calls = _signal_at(monkeypatch, mapping_report, "_save", signum, call=2)
    before = snapshot(sandbox)
    code = main(_map_args(query, data_dir, out, cache, "--align", "none", "--model", "forest"))
    assert calls, "the interrupted step was not reached"
    if point == "saving the cache entry":
        _check_in_process(code, capsys, signum, sandbox, before, out)
    else:  # the cache entry was complete before the report: it stays, and is whole
        _check_in_process(code, capsys, signum, sandbox, before, out, kept="cache")
        entries = _cache_entries(cache)
        assert len(entries) == 1
        load_reference_model(entries[0])
    monkeypatch.undo()
    monkeypatch.setattr(workflows, "cached_reference_model",
                        lambda *a, **k: original(*a, **{**k, "n_estimators": 10}))
    assert main(_map_args(query, data_dir, out, cache, "--align", "none", "--model", "forest")) == 0, \
        capsys.readouterr().err
    assert (out / "predictions.csv").is_file() and (out / MARKER).is_file()
    assert not _left_behind(sandbox)


@pytest.mark.parametrize("point, signum", [
    ("reading", signal.SIGINT), ("reading", signal.SIGTERM),
    ("predicting", signal.SIGTERM), ("writing", signal.SIGINT), ("writing", signal.SIGTERM)])
def test_predict_interrupted(point, signum, query, tiny_model, monkeypatch, capsys):
    import ephys2tx.io as io_module
    import ephys2tx.workflows as workflows
    from ephys2tx.cli import main

    sandbox = query.parent
    out = sandbox / "out" / "p.csv"
    if point == "reading":
        _signal_at(monkeypatch, workflows, "read_query", signum)
    elif point == "predicting":
        _signal_at(monkeypatch, workflows, "prediction_warnings", signum)
    else:  # the temporary file is written, not yet renamed into place
        calls = []
        real_fsync = os.fsync

        def fsync(fd):
            real_fsync(fd)
            calls.append(fd)
            os.kill(os.getpid(), signum)

        monkeypatch.setattr(io_module.os, "fsync", fsync)
    before = snapshot(sandbox)
    code = main(["predict", "-m", str(tiny_model), "-i", str(query), "-o", str(out)])
    monkeypatch.undo()
    _check_in_process(code, capsys, signum, sandbox, before, out)
    assert not (sandbox / "out").exists()  # the folder made for the file went with it
    assert main(["predict", "-m", str(tiny_model), "-i", str(query), "-o", str(out)]) == 0


# Real processes: the signal comes from outside, at a point found by watching the process.


def _start(args, sandbox):
    env = {**os.environ, "HOME": str(sandbox / "home"), "MPLCONFIGDIR": str(sandbox.parent / "mpl"),
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([str(SCRIPT), *args], cwd=sandbox, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_map_process_interrupted_while_fitting(query, data_dir):
    sandbox = query.parent
    out, cache = sandbox / "mapped", sandbox / "cache"
    before = snapshot(sandbox)
    proc = _start(_map_args(query, data_dir, out, cache), sandbox)
    seen = []
    for line in proc.stderr:  # progress lines: the reference model is being fitted
        seen.append(line)
        if line.startswith("cross-validation fold 2/"):
            break
    assert proc.poll() is None, "".join(seen)
    workers = _descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    _check(proc.returncode, err, workers, signal.SIGINT, sandbox, before, out)
    assert not _left_behind(sandbox) and not _cache_entries(cache)


def test_predict_process_terminated(query, tiny_model):
    import time as _time

    from ephys2tx.safety import lock_path

    sandbox = query.parent
    out = sandbox / "p.csv"
    before = snapshot(sandbox)
    proc = _start(["predict", "-m", str(tiny_model), "-i", str(query), "-o", str(out)], sandbox)
    deadline = _time.monotonic() + 60
    while proc.poll() is None and not lock_path(out).exists() and _time.monotonic() < deadline:
        _time.sleep(0.01)  # the claim is taken by the output check, before the work starts
    assert proc.poll() is None, proc.stderr.read()
    workers = _descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    _check(proc.returncode, err, workers, signal.SIGTERM, sandbox, before, out)
    assert not lock_path(out).exists()


def test_a_signal_while_the_claims_are_given_back_still_aborts_cleanly(tmp_path, monkeypatch,
                                                                        capsys):
    """The last step of every command (giving back its output claims) is interruptible too."""
    import ephys2tx.cli as cli

    real = cli.release_claims

    def release():
        os.kill(os.getpid(), signal.SIGTERM)
        real()

    monkeypatch.setattr(cli, "release_claims", release)
    assert cli.main(["--version"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "aborted (SIGTERM)"
