"""CLI bad input: exit code 2, one line, no traceback, no results folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ephys2tx.cli import main
from ephys2tx.data.registry import DATASET_FILES

from conftest import copy_data_dir

HUMAN = DATASET_FILES["human"]


def _edit_csv(path: Path, edit) -> None:
    table = pd.read_csv(path, encoding="utf-8-sig", low_memory=False)
    edit(table)
    table.to_csv(path, index=False)


def _remove(root, spec):
    (root / spec.relpath).unlink()


def _rename(root, spec):
    path = root / spec.relpath
    path.rename(path.with_name(path.stem + "_renamed.csv"))


def _flip_byte(root, spec):
    path = root / spec.relpath
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _drop_column(root, spec, column):
    _edit_csv(root / spec.relpath, lambda t: t.drop(columns=[column], inplace=True))


def _set_value(root, spec, column, row, value):
    def edit(table):
        table[column] = table[column].astype(object)
        table.loc[row, column] = value

    _edit_csv(root / spec.relpath, edit)


# name -> (how to break a writable copy of the data dir or None, extra args, expected message)
CASES = {
    "missing data dir": (None, [], "does not exist"),
    "missing file": (lambda d: _remove(d, HUMAN["donors"]), [], "missing file .*DataS1_Donor_table.csv"),
    "renamed file": (lambda d: _rename(d, HUMAN["ephys"]), [], "missing file .*LeeDalley_ephys_fx.csv"),
    "checksum mismatch": (lambda d: _flip_byte(d, HUMAN["meta"]), [],
                          "checksum mismatch .*LeeDalley_manuscript_metadata_v2.csv"),
    "missing column": (lambda d: _drop_column(d, HUMAN["ephys"], "tau"), ["--no-verify"],
                       "lacks column 'tau'"),
    "non-numeric value": (lambda d: _set_value(d, HUMAN["ephys"], "sag", 3, "abc"), ["--no-verify"],
                          "column 'sag' .*non-numeric value 'abc'"),
    "unknown label": (lambda d: _set_value(d, HUMAN["meta"], "Revised_subclass_label", 0, "CHANDELIER"),
                      ["--no-verify"], "unknown label 'CHANDELIER'"),
    "unknown model": ("real", ["--model", "nope"], "unknown model 'nope'"),
    "unknown species": ("real", ["--species", "cat"], "unknown species 'cat'"),
}


def _run_case(case, data_dir, tmp_path, capsys):
    breaker, extra, _ = CASES[case]
    if breaker is None:
        root = tmp_path / "no_such_dir"
    elif breaker == "real":
        root = data_dir
    else:
        root = copy_data_dir(data_dir, tmp_path / "data")
        breaker(root)
    out = tmp_path / "out" / "results"
    args = ["run", "--data-dir", str(root), "--quick", "--out", str(out), *extra]
    if "--species" not in extra:
        args += ["--species", "human"]
    if "--model" not in extra:
        args += ["--model", "logreg"]
    capsys.readouterr()
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err, out


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_a_clear_error_and_no_results(case, data_dir, tmp_path, capsys):
    code, text, out = _run_case(case, data_dir, tmp_path, capsys)
    assert code == 2, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    assert pd.Series(errors).str.contains(CASES[case][2], regex=True).all(), errors[0]
    assert not out.exists()
    leftovers = list(out.parent.iterdir()) if out.parent.exists() else []
    assert leftovers == [], leftovers


@pytest.mark.parametrize("case", ["missing data dir", "non-numeric value", "unknown model"])
def test_bad_input_prints_exactly_one_line(case, data_dir, tmp_path, capsys):
    """Nothing but the error line: no progress-bar residue before it."""
    code, text, _ = _run_case(case, data_dir, tmp_path, capsys)
    assert code == 2
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, lines


def test_no_verify_accepts_a_harmless_rewrite(data_dir, tmp_path):
    """Control for the --no-verify cases: a pandas round trip alone is accepted."""
    from ephys2tx.data.datasets import load_dataset

    root = copy_data_dir(data_dir, tmp_path / "data")
    _edit_csv(root / HUMAN["ephys"].relpath, lambda t: None)
    assert load_dataset("human", root, verify=False).n_cells == 664


def test_version(capsys):
    from ephys2tx import __version__

    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_option_exits_2(capsys):
    assert main(["run", "--no-such-option"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_datasets_command(data_dir, capsys):
    assert main(["datasets", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "mouse_visp" in out and "3854 cells" in out and "664 cells" in out


def test_console_script_exits_promptly_after_a_run_with_worker_pools(data_dir, tmp_path):
    """The console entry point exits as soon as the work is done, also when worker pools ran
    (``run`` with 2 jobs): skipping the interpreter teardown must not wait on live workers."""
    import shutil
    import subprocess
    import sys
    import time

    cli = shutil.which("ephys2tx", path=str(Path(sys.executable).parent))
    assert cli is not None
    out = tmp_path / "results"
    args = [cli, "run", "--quick", "--species", "human", "--model", "logreg", "--n-splits", "2",
            "--jobs", "2", "--no-cache", "--data-dir", str(data_dir), "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, timeout=240)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "metrics.json").is_file()
    # the study itself reports its time; the process may take little longer than that
    study = float(done.stderr.split(" figures in ")[1].split(" s")[0])
    assert seconds < study + 60, (seconds, study)


def test_no_command_shows_the_help_and_a_meaningful_error(capsys):
    # Before: the help, then "error: (see `ephys2tx --help`)" with no text.
    assert main([]) == 2
    captured = capsys.readouterr()
    assert "Commands" in captured.out
    assert captured.err.strip() == ("error: no command given; choose one of the commands listed "
                                    "above (see `ephys2tx --help`)")


def test_every_command_reading_the_data_directory_has_no_verify():
    # The checksum error says "pass --no-verify"; before, `features` had no such option.
    import typer

    from ephys2tx.cli import app

    commands = typer.main.get_command(app).commands
    reading = sorted(name for name, cmd in commands.items()
                     if any("--data-dir" in p.opts for p in cmd.params) and name != "fetch")
    assert {"features", "map", "run", "train"} <= set(reading)
    for name in reading:
        flags = {opt for p in commands[name].params for opt in (*p.opts, *p.secondary_opts)}
        assert "--no-verify" in flags, name


def test_features_no_verify_reads_a_modified_data_file(data_dir, tmp_path, capsys):
    root = copy_data_dir(data_dir, tmp_path / "data")
    _edit_csv(root / HUMAN["ephys"].relpath, lambda t: None)  # same values, other bytes
    assert main(["features", "--species", "human", "--data-dir", str(root)]) == 2
    assert "--no-verify" in capsys.readouterr().err
    assert main(["features", "--species", "human", "--data-dir", str(root), "--no-verify",
                 "--csv"]) == 0
    assert capsys.readouterr().out.count("\n") == 94  # header and 93 features
