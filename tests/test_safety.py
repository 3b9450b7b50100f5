"""Output-location checks, ownership markers and staged output folders (ephys2tx.safety)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from ephys2tx.errors import InputError
from ephys2tx.safety import (MARKER, Interrupted, check_output_dir, check_output_file,
                             check_writable_dir, interrupts_raise, is_own_output, read_marker,
                             staged_output_dir)


@pytest.fixture(autouse=True)
def _sandbox_cwd(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_new_folder_is_accepted_and_written_with_its_marker(tmp_path):
    target = check_output_dir(tmp_path / "a" / "b", kind="study")
    with staged_output_dir(target, "study", command="run") as staging:
        (staging / "x.txt").write_text("x")
    assert read_marker(target)["kind"] == "study"
    assert read_marker(target)["command"] == "run"
    assert is_own_output(target, "study") and not is_own_output(target, "model")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "x.txt"]


def test_overwrite_replaces_only_own_output_of_the_same_kind(tmp_path):
    target = tmp_path / "out"
    with staged_output_dir(target, "study") as staging:
        (staging / "old.txt").write_text("old")
    with pytest.raises(InputError, match="already exists"):
        check_output_dir(target, kind="study")
    with pytest.raises(InputError, match="'study' output, not 'model'"):
        check_output_dir(target, kind="model", overwrite=True)
    check_output_dir(target, kind="study", overwrite=True)
    with staged_output_dir(target, "study", overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "new.txt"]


@pytest.mark.parametrize("marker", [None, "not json", json.dumps({"kind": "study"}),
                                    json.dumps({"created_by": "someone", "kind": "study"})])
def test_a_folder_without_a_valid_marker_is_never_replaced(marker, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("mine")
    if marker is not None:
        (target / MARKER).write_text(marker)
    with pytest.raises(InputError, match="not written by ephys2tx"):
        check_output_dir(target, kind="study", overwrite=True)


def test_target_appearing_during_the_work_is_not_replaced(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(InputError, match="appeared meanwhile"):
        with staged_output_dir(target, "study") as staging:
            (staging / "x.txt").write_text("x")
            target.mkdir()
            (target / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in target.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "work"]  # no staging left


@pytest.mark.parametrize("path, pattern", [
    (".", "is the current folder"),
    ("..", "a parent of the current folder"),
    ("~", "is your home folder"),
    ("/", "parent of the current folder|file system root"),
    ("", "is empty|current folder"),
])
def test_protected_locations(path, pattern):
    with pytest.raises(InputError, match=pattern):
        check_output_dir(path, kind="study", overwrite=True)


def test_inputs_are_never_outputs(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    table = tmp_path / "cells.csv"
    table.write_text("a\n1\n")
    with pytest.raises(InputError, match="is the input"):
        check_output_file(table, overwrite=True, inputs=[table], recognise=lambda p: True)
    with pytest.raises(InputError, match="contains the input"):
        check_output_dir(tmp_path / "d2", kind="study", inputs=[tmp_path / "d2" / "cells.csv"])
    with pytest.raises(InputError, match="inside the input folder"):
        check_output_dir(data / "results", kind="study", inputs=[data])


def test_files_blocked_paths_and_links(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is an existing file"):
        check_output_dir(tmp_path / "f", kind="study", overwrite=True)
    with pytest.raises(InputError, match="f is a file, not a folder"):
        check_output_dir(tmp_path / "f" / "g" / "h", kind="study")
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    with pytest.raises(InputError, match="symbolic link"):
        check_output_dir(tmp_path / "link", kind="study", overwrite=True)
    with pytest.raises(InputError, match="is a folder; give a file path"):
        check_output_file(tmp_path / "d")
    with pytest.raises(InputError, match="not written by"):
        check_output_file(tmp_path / "f", overwrite=True, recognise=lambda p: False)
    assert check_output_file(tmp_path / "f", overwrite=True, recognise=lambda p: True)


def test_unwritable_location_is_found_by_a_probe(tmp_path):
    with pytest.raises(InputError, match="not writable"):
        check_writable_dir("/proc/ephys2tx-nowhere/x", what="--out")
    check_writable_dir(tmp_path / "new" / "deeper", what="--out")
    assert not (tmp_path / "new").exists()  # the probe creates nothing that stays
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ephys2tx-probe")] == []


def test_a_read_only_folder_is_refused_also_for_root(tmp_path):
    """chmod a-w makes a folder read-only on purpose; root's probe would succeed there."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    for target in (folder, folder / "new" / "out"):
        with pytest.raises(InputError, match=r"ro is not writable \(read-only permissions dr-xr-xr-x\)"):
            check_writable_dir(target, what="--out")
    folder.chmod(0o755)
    check_writable_dir(folder / "new", what="--out")


def test_signals_raise_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info:
        with interrupts_raise() as received:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
    assert info.value.signum == signal.SIGTERM == received["signum"]
    assert signal.getsignal(signal.SIGTERM) == before


# ------------------------------------------------------------------ output claims


HOLD = ("import signal, sys, time\nfrom ephys2tx.safety import claim_output\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # exits, giving the claim back\n"
        "claim_output(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(120)\n")


@pytest.fixture
def held_elsewhere():
    """Claim a path from another process (as a running ephys2tx command would); kill it after."""
    import subprocess
    import sys

    procs = []

    def hold(path):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.terminate()
        proc.wait()


def test_a_claim_is_reentrant_and_given_back(tmp_path):
    from ephys2tx.safety import claim_output, lock_path, release_output

    target = tmp_path / "not" / "yet" / "there"
    assert claim_output(target) is True
    assert claim_output(tmp_path / "not" / "yet" / ".." / "yet" / "there") is False  # same place
    assert lock_path(target).read_text().split()[0] == str(os.getpid())
    release_output(target)
    assert not lock_path(target).exists()  # nothing left behind
    assert claim_output(target) is True
    release_output(target)
    assert not (tmp_path / "not").exists()  # claiming creates nothing at the target


def test_the_lock_folder_goes_with_the_last_claim(tmp_path, monkeypatch):
    from ephys2tx import safety

    monkeypatch.setattr(safety, "_CLAIMS", {})  # this test's claims only
    monkeypatch.setattr(safety.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert safety.claim_output(tmp_path / "a") and safety.claim_output(tmp_path / "b")
    safety.release_output(tmp_path / "a")
    assert safety.lock_path(tmp_path / "b").exists()
    safety.release_output(tmp_path / "b")
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_location_claimed_by_another_process_is_refused_until_it_dies(tmp_path, held_elsewhere):
    from ephys2tx.safety import claim_output, lock_path, release_output

    folder, table = tmp_path / "results", tmp_path / "p.csv"
    holders = [held_elsewhere(folder), held_elsewhere(table)]
    with pytest.raises(InputError, match=rf"another ephys2tx process \(pid {holders[0].pid}\) is "
                                         r"writing --out .*results right now"):
        check_output_dir(folder, kind="study")
    with pytest.raises(InputError, match="another ephys2tx process .* is writing -o"):
        check_output_file(table, option="-o")
    for proc in holders:  # killed: the lock file stays, but its flock went with the process
        proc.kill()
        proc.wait()
    assert lock_path(folder).exists()
    assert check_output_dir(folder, kind="study") == folder
    assert check_output_file(table) == table
    release_output(folder)
    release_output(table)
    assert claim_output(folder) is True  # and again, now that this process gave it back
    release_output(folder)


def test_a_claim_held_by_another_thread_is_refused_and_not_given_back_by_it(tmp_path):
    """Two commands run in threads of one process are two writers: the second is refused (a claim was
    per process, so it passed as "already held"), and the end of the second command does not give back
    the first one's claim (release_claims gave back every claim of the process)."""
    import threading

    from ephys2tx.safety import claim_output, lock_path, release_claims, release_output

    target = tmp_path / "p.csv"
    claimed, done, seen = threading.Event(), threading.Event(), {}

    def first():
        seen["claim"] = claim_output(target)
        claimed.set()
        done.wait(60)
        seen["again"] = claim_output(target)  # its own claim: no cost
        release_output(target)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert claimed.wait(60)
        with pytest.raises(InputError, match=rf"another ephys2tx command in this process \(pid {os.getpid()}\) "
                                             r"is writing --out .*p\.csv right now"):
            check_output_file(target)
        release_claims()  # the end of this (the second) command
        release_output(target)
        assert lock_path(target).exists()  # still the first thread's
    finally:
        done.set()
        thread.join(60)
    assert seen == {"claim": True, "again": False}
    assert not lock_path(target).exists()
    assert claim_output(target) is True
    release_output(target)


def test_a_failed_check_gives_its_new_claim_back(tmp_path):
    from ephys2tx.safety import lock_path

    (tmp_path / "taken").mkdir()
    with pytest.raises(InputError, match="already exists"):
        check_output_dir(tmp_path / "taken", kind="study")
    assert not lock_path(tmp_path / "taken").exists()


def test_a_staged_folder_gives_its_claim_back_once_written(tmp_path):
    from ephys2tx.safety import lock_path

    target = check_output_dir(tmp_path / "out", kind="study")
    assert lock_path(target).exists()
    with staged_output_dir(target, "study") as staging:
        (staging / "a.txt").write_text("a")
    assert not lock_path(target).exists()


def test_check_cache_dir_refuses_overlaps_with_inputs_and_outputs(tmp_path):
    """s8: a cache in (or being) the data folder or an output folder is refused; beside them it is not."""
    from ephys2tx.safety import check_cache_dir

    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    for cache, pattern in ((data, "is the input"), (data / "sub" / "c", "is inside the input folder"),
                           (out, "is the output"), (out / "c", "is inside the output folder"),
                           ("", "is empty")):
        with pytest.raises(InputError, match=pattern):
            check_cache_dir(cache, what="cache", outputs=[out], inputs=[data])
    assert check_cache_dir(tmp_path / "c", what="cache", outputs=[out], inputs=[data]) == tmp_path / "c"
    # a cache holding the data (its entries have names of their own) is allowed
    assert check_cache_dir(tmp_path, what="cache", outputs=[out], inputs=[data]) == tmp_path
    assert not (tmp_path / "c").exists()
