"""``ephys2tx extract`` through the console-script entry point (exit codes, options, progress)."""

import pandas as pd
import pytest

from ephys2tx.cli import main
from ephys2tx.features.nwb import COMPACT_FAMILIES, COMPACT_LAYOUT, read_feature_table


@pytest.fixture
def two_cells(nwb_set):
    """One cell of each layout and kind, plus the NWB 1 file (a failure)."""
    return [str(nwb_set["good"][0][0]), str(nwb_set["good"][-1][0]), str(nwb_set["nwb1"])]


def _bad_arguments(tmp_path, good):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.parquet").write_text("keep me")
    return {
        "missing input": [str(tmp_path / "typo.nwb")],
        "no nwb files": [str(tmp_path / "empty")],
        "out is a directory": [good, "-o", str(tmp_path)],
        "out is another file": [good, "-o", str(tmp_path / "notes.parquet")],
        "malformed scheduler": [good, "--scheduler", "nonsense"],
        "unknown scheme": [good, "--scheduler", "foo://host:1"],
        "ap window": [good, "--ap-window", "0.5"],
        "workers": [good, "--workers", "0"],
        "not an integer": [good, "--workers", "many"],
        "existing failures list": [good, "-o", str(tmp_path / "g.parquet")],
        "missing protocol map": [good, "-o", str(tmp_path / "g.parquet"), "--protocol-map",
                                 str(tmp_path / "nope.yaml")],
    }


@pytest.mark.parametrize("case", ["missing input", "no nwb files", "out is a directory", "out is another file",
                                  "malformed scheduler", "unknown scheme", "ap window", "workers",
                                  "not an integer", "existing failures list", "missing protocol map"])
def test_bad_input_exits_2_with_one_line(case, tmp_path, nwb_set, capsys):
    (tmp_path / "g.parquet.failures.csv").write_text("my own notes\n")
    args = _bad_arguments(tmp_path, str(nwb_set["good"][0][0]))[case]
    assert main(["extract", *args, *([] if "-o" in args else ["-o", str(tmp_path / "f.parquet")])]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert lines and "rror" in lines[-1]
    if case != "not an integer":  # click prints usage lines before its own error line
        assert len(lines) == 1, lines
    assert not (tmp_path / "f.parquet").exists() and not (tmp_path / "g.parquet").exists()
    assert not (tmp_path / "f.parquet.cache").exists() and not (tmp_path / "g.parquet.cache").exists()
    assert (tmp_path / "notes.parquet").read_text() == "keep me"
    assert (tmp_path / "g.parquet.failures.csv").read_text() == "my own notes\n"


def test_compact_run_progress_and_resume(two_cells, tmp_path, capsys):
    out = tmp_path / "f.parquet"
    args = ["extract", *two_cells, "-o", str(out), "--compact", "-j", "1"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "3/3 done, 1 failed, 0 remaining" in captured.err
    assert "2 cells" in captured.out and "(0 from cache)" in captured.out
    table = read_feature_table(out)
    assert table.settings["compact"] is True
    assert list(table.families) == list(COMPACT_FAMILIES)  # the documented subset: 12 families
    assert {k: len(v) for k, v in table.families.items()} == {k: n * m for k, (n, m) in COMPACT_LAYOUT.items()}
    assert len(table.feature_columns) == 498
    assert list(pd.read_csv(f"{out}.failures.csv")["cell_id"]) == ["nwb1_cell"]

    before = out.read_bytes(), (tmp_path / "f.parquet.failures.csv").read_bytes()
    assert main(args) == 2  # an existing output is refused ...
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and "Traceback" not in err
    assert (out.read_bytes(), (tmp_path / "f.parquet.failures.csv").read_bytes()) == before
    assert main(args + ["--overwrite"]) == 0  # ... unless --overwrite: everything from the cache, rewritten
    assert "(3 from cache)" in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_feature_table(out).frame, table.frame)


def test_ap_window_and_no_summary(two_cells, tmp_path):
    out = tmp_path / "f.parquet"
    assert main(["extract", *two_cells[:1], "-o", str(out), "--ap-window", "0.002", "--no-summary",
                 "--cache-dir", str(tmp_path / "c"), "-j", "1"]) == 0
    table = read_feature_table(out)
    assert len(table.families["first_ap_v"]) == 3 * 100  # 3 waveforms of 2 ms at 50 kHz
    assert table.summary_columns == [] and table.settings["ap_window"] == 0.002
    assert (tmp_path / "c").is_dir() and not (tmp_path / "f.parquet.cache").exists()


def test_file_names_that_are_not_utf8_are_escaped_in_the_outputs(nwb_set, tmp_path, capsys):
    """A good cell and a broken one named in Latin-1 (b'caf\\xe9'): the table and the failures list are
    written with the names escaped (was: an internal error, exit 1, while writing the failures list,
    after the table had been written), and a second run resumes from the cache."""
    import os
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(nwb_set["good"][0][0], os.fsdecode(bytes(folder) + b"/cell\xe9.nwb"))
    with open(bytes(folder) + b"/caf\xe9.nwb", "wb") as fh:
        fh.write(b"junk")
    out = tmp_path / "f.parquet"
    for overwrite in ([], ["--overwrite"]):
        assert main(["extract", str(folder), "-o", str(out), "--workers", "1", *overwrite]) == 0, \
            capsys.readouterr().err
        assert list(pd.read_parquet(out).index) == ["cell\\xe9"]
        failures = pd.read_csv(str(out) + ".failures.csv", encoding="utf-8")
        assert failures["cell_id"].tolist() == ["caf\\xe9"]
        assert failures["path"].tolist() == [str(folder / "caf\\xe9.nwb")]
        assert failures["reason"].str.startswith("not an HDF5 file").all()


def test_a_failures_list_that_cannot_be_written_leaves_no_new_table(nwb_set, tmp_path, monkeypatch, capsys):
    """The table and the failures list are one output: an error writing the list (here a full disk)
    leaves neither file (the table used to be in place already, beside no list)."""
    import errno

    from ephys2tx import io as eio
    from ephys2tx.features.nwb import extract as ex

    real = eio.replace_atomically

    def full_for_the_list(target, write):
        if str(target).endswith(".failures.csv"):
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return real(target, write)

    monkeypatch.setattr(ex, "replace_atomically", full_for_the_list)
    out = tmp_path / "f.parquet"
    assert main(["extract", str(nwb_set["good"][0][0]), str(nwb_set["nwb1"]), "-o", str(out), "--workers", "1"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "f.parquet.failures.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["f.parquet.cache"]  # finished cells kept for a rerun
