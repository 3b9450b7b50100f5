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

from test_cli_faults import snapshot

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
