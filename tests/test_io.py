"""Atomic writes: the old file survives a failed write, and no temporary file is left."""

from __future__ import annotations

import pytest

from ephys2tx.io import replace_atomically


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "t.bin"
    replace_atomically(target, lambda fh: fh.write(b"old"))

    def broken(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        replace_atomically(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.bin"]


def test_new_file_gets_the_content_and_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    target = replace_atomically(tmp_path / "new.txt", lambda fh: fh.write(b"hello"))
    assert target.read_bytes() == b"hello"
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_staged_directory_replaces_the_folder_whole_or_not_at_all(tmp_path):
    from ephys2tx.io import staged_directory

    target = tmp_path / "out"
    with staged_directory(target) as folder:
        (folder / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with staged_directory(target) as folder:
            (folder / "b.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with staged_directory(target) as folder:
        (folder / "c.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left


def test_a_full_disk_names_the_file_and_leaves_no_folder(tmp_path, monkeypatch):
    """A write error without a file name (ENOSPC, EFBIG) names the target; new folders are removed."""
    import errno

    import pandas as pd
    import pyarrow.csv as pa_csv

    from ephys2tx.io import write_csv

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pa_csv, "write_csv", full)
    target = tmp_path / "new" / "sub" / "p.csv"
    with pytest.raises(OSError) as info:
        write_csv(pd.DataFrame({"a": [1]}), target)
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
