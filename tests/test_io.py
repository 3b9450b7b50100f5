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


# ------------------------------------------------------------------ YAML configuration files

import re  # noqa: E402
from pathlib import Path  # noqa: E402

from ephys2tx.errors import InputError  # noqa: E402
from ephys2tx.io import MAX_YAML_BYTES, read_yaml, read_yaml_file  # noqa: E402


def test_read_yaml_refuses_repeated_keys_at_any_depth_naming_key_and_lines():
    assert read_yaml("a: 1\nb: {c: 2, d: [1, {e: 3}]}\n", where="x") == {"a": 1, "b": {"c": 2, "d": [1, {"e": 3}]}}
    with pytest.raises(InputError, match=r"^m\.yaml, line 4: the map repeats the key 'e' \(first on line 3\)"):
        read_yaml("a: 1\nb:\n  - e: 1\n    e: 2\n", where="m.yaml", kind="map")
    with pytest.raises(InputError, match=r"line 1: the map repeats the key 1 \(first on line 1\)"):
        read_yaml("{1: a, 1: b}", where="m.yaml", kind="map")


def test_read_yaml_refuses_merge_keys():
    """``<<: {...}`` would let later keys override merged ones silently; a map needs none."""
    with pytest.raises(InputError, match=r"^m\.yaml, line 2: the map uses a YAML merge key \(<<\)"):
        read_yaml("a:\n  <<: {b: 1}\n  b: 2\n", where="m.yaml", kind="map")


def test_read_yaml_file_expands_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.yaml").write_text("a: 1\n")
    assert read_yaml_file("~/m.yaml", kind="map", hint="") == {"a": 1}


def test_read_yaml_refuses_aliases_quickly():
    """Anchors/aliases are refused: ``*name`` can expand a few lines into 10^9 values."""
    import time

    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"line 1: the file uses a YAML anchor and alias"):
        read_yaml("\n".join(lines), where="f.yaml")
    assert time.perf_counter() - start < 1.0


def test_read_yaml_numbers_follow_yaml_1_2():
    got = read_yaml("a: 1e-3\nb: 1.3e1\nc: -2E+5\nd: 13\ne: '1e3'\nf: e5\ng: .5e1\nh: 1e999", where="x")
    assert got == {"a": 0.001, "b": 13.0, "c": -2e5, "d": 13, "e": "1e3", "f": "e5", "g": 5.0, "h": float("inf")}
    assert isinstance(got["d"], int)


@pytest.mark.parametrize("case", ["directory", "missing", "too large", "binary", "latin-1", "empty",
                                  "comments only", "null document", "permission denied", "device"])
def test_read_yaml_file_problems_are_one_clear_line(case, tmp_path, monkeypatch):
    path = tmp_path / "m.yaml"
    pattern = {
        "directory": r"m\.yaml is a directory; give the YAML file itself",
        "missing": r"m\.yaml does not exist; see the docs",
        "too large": r"m\.yaml is 1\.1 MB; a test map is a small YAML file \(at most 1 MB\)",
        "binary": r"m\.yaml is a binary file, not YAML text",
        "latin-1": r"m\.yaml is not UTF-8 text \(byte 9\); save it as UTF-8",
        "empty": r"m\.yaml is empty; see the docs",
        "comments only": r"m\.yaml is empty; see the docs",
        "null document": r"m\.yaml holds no value",
        "permission denied": r"m\.yaml cannot be read \(permission denied\)",
        "device": r"null is not a regular file",
    }[case]
    if case == "directory":
        path.mkdir()
    elif case == "too large":
        path.write_text("a: 1\n" + "# padding\n" * (MAX_YAML_BYTES // 10 + 10000))
    elif case == "binary":
        path.write_bytes(b"a: 1\n\x00\x01\x02\xff")
    elif case == "latin-1":
        path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    elif case == "empty":
        path.write_text("  \n\n")
    elif case == "comments only":
        path.write_text("# nothing yet\n")
    elif case == "null document":
        path.write_text("---\n~\n")
    elif case == "permission denied":  # as root, chmod 000 is still readable: fail the read itself
        path.write_text("a: 1\n")

        def denied(self):
            raise PermissionError(13, "Permission denied", str(self))
        monkeypatch.setattr(Path, "read_bytes", denied)
    elif case == "device":
        path = Path("/dev/null")
    with pytest.raises(InputError, match=pattern) as info:
        read_yaml_file(path, kind="test map", hint="see the docs")
    assert str(info.value).startswith(f"test map {path}") and "\n" not in str(info.value)


def test_every_yaml_file_of_the_package_is_read_through_read_yaml(monkeypatch, tmp_path):
    """One reader: the column maps and the protocol maps go through ``read_yaml_file``, and no
    other module parses YAML itself."""
    import ephys2tx
    import ephys2tx.io as io
    from ephys2tx.features.column_map import load_column_map
    from ephys2tx.features.nwb.abf import load_protocol_map

    calls = []
    original = io.read_yaml_file
    monkeypatch.setattr(io, "read_yaml_file", lambda path, **kw: calls.append(kw["kind"]) or original(path, **kw))
    (tmp_path / "c.yaml").write_text("columns:\n  - {column: t, name: tau, unit: s}\n")
    (tmp_path / "p.yaml").write_text("long_square: IV\nliquid_junction_potential_mv: 13\n")
    load_column_map(tmp_path / "c.yaml")
    load_protocol_map(tmp_path / "p.yaml")
    assert calls == ["column map", "protocol map"]
    root = Path(ephys2tx.__file__).parent
    parsers = [str(p.relative_to(root)) for p in root.rglob("*.py")
               if re.search(r"yaml\.(safe_)?load\b|yaml\.(C?Safe)?Loader\b|yaml\.full_load", p.read_text("utf-8"))]
    assert parsers == ["io.py"]
