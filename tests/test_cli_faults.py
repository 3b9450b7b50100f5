"""Fault suite: every command, fed bad input or a bad environment, fails cleanly and harms nothing.

Each case builds a sandbox (a good cell table, a copy of a small trained model,
and whatever the fault needs), hashes the whole sandbox tree, runs the CLI
in-process and checks the contract of issue 11:

* exit code 2;
* exactly one line on stderr, ``error: ...``, matching the case's pattern
  (what is wrong, where, how to fix it); nothing on stdout; no traceback;
* no partial output and no change at all to the sandbox: the tree (paths,
  file contents, links) is identical afterwards.

Cases cover bad tables (non-finite values, truncated and ragged rows, header
only, encodings, ids), bad column maps, bad model folders (old pickle format,
paths escaping the folder, untrusted types, broken JSON), unsafe or blocked
outputs for run/train/predict/map/fetch, bad numeric arguments and data
directories, and tampered data files read with ``--no-verify``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ephys2tx.cli import main
from ephys2tx.data.registry import DATASET_FILES
from ephys2tx.safety import MARKER

from conftest import copy_data_dir

FEATURES = ["tau", "input_resistance", "v_baseline", "sag", "rheobase_i", "width_rheo",
            "upstroke_downstroke_ratio_rheo", "threshold_v_rheo", "fi_fit_slope"]
HUMAN = DATASET_FILES["human"]


# ------------------------------------------------------------------ sandbox


@pytest.fixture(scope="module")
def cells(human) -> pd.DataFrame:
    """30 real human cells, IPFX names, ``cell_id`` first."""
    return human.features[FEATURES].iloc[::20].iloc[:30].rename_axis("cell_id").reset_index()


@pytest.fixture(scope="module")
def tiny_model(data_dir, tmp_path_factory) -> Path:
    """A 5-tree human forest trained once through ``ephys2tx train``."""
    out = tmp_path_factory.mktemp("fault_models") / "model"
    assert main(["train", "--species", "human", "--n-estimators", "5", "--n-splits", "2",
                 "--data-dir", str(data_dir), "--out", str(out)]) == 0
    return out


@dataclass
class Sandbox:
    root: Path
    data: Path       # the real (shared) data directory
    model: Path      # a copy of the tiny model, inside the sandbox
    cells: Path      # a good cell table, inside the sandbox
    frame: pd.DataFrame

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        return path

    def table(self, frame: pd.DataFrame, name: str = "bad.csv") -> Path:
        path = self.root / name
        frame.to_csv(path, index=False)
        return path

    def model_json(self, **fields) -> dict:
        meta = json.loads((self.model / "model.json").read_text())
        meta.update(fields)
        (self.model / "model.json").write_text(json.dumps(meta))
        return meta

    def data_copy(self) -> Path:
        return copy_data_dir(self.data, self.root / "data")

    def own_folder(self, name: str, kind: str) -> Path:
        """A folder as ephys2tx would have written it (marker of ``kind``)."""
        folder = self.root / name
        folder.mkdir()
        (folder / MARKER).write_text(json.dumps({"created_by": "ephys2tx", "kind": kind}))
        (folder / "result.txt").write_text("earlier result")
        return folder

    def foreign_folder(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir()
        (folder / "thesis.tex").write_text("my own work")
        return folder


def snapshot(root: Path) -> dict:
    """Every path under ``root``: file sha256, link target, or folder."""
    tree = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            tree[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            tree[rel] = "dir"
        else:
            tree[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return tree


def predict(sb: Sandbox, *extra, input=None, out=None):
    return ["predict", "--model", sb.model, "--input", input or sb.cells,
            "--out", out or sb.root / "out" / "p.csv", *extra]


def mapping(sb: Sandbox, *extra, input=None, out=None, cache=None):
    return ["map", "--species", "human", "--input", input or sb.cells, "--data-dir", sb.data,
            "--cache-dir", cache or sb.root / "cache", "--out", out or sb.root / "mapped", *extra]


def train(sb: Sandbox, *extra, out=None, data=None):
    return ["train", "--species", "human", "--n-estimators", "5", "--data-dir", data or sb.data,
            "--out", out or sb.root / "model_out", *extra]


def run(sb: Sandbox, *extra, out=None, data=None):
    return ["run", "--quick", "--species", "human", "--model", "logreg", "--data-dir",
            data or sb.data, "--out", out or sb.root / "results", *extra]


def fetch(sb: Sandbox, *extra, data=None):
    return ["fetch", "--data-dir", data or sb.root / "fetched", "--dataset", "human",
            "--mirror", "http://127.0.0.1:9", *extra]


# ------------------------------------------------------------------ cases: tables

def _cell(sb, column, value):
    frame = sb.frame.astype({column: object})
    frame.loc[3, column] = value
    return sb.table(frame)


def _truncated(sb):
    text = sb.cells.read_text()
    return sb.write("cut.csv", text[: text.rindex(",", 0, len(text) - 20)])


def _ragged_middle(sb):
    lines = sb.cells.read_text().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:4])
    return sb.write("ragged.csv", "\n".join(lines) + "\n")


def _tsv_short_row(sb):
    lines = sb.frame.to_csv(sep="\t", index=False).splitlines()
    lines[-1] = "\t".join(lines[-1].split("\t")[:3])
    return sb.write("cells.tsv", "\n".join(lines) + "\n")


def _long_row(sb):
    lines = sb.cells.read_text().splitlines()
    lines[5] += ",99"
    return sb.write("long.csv", "\n".join(lines) + "\n")


def _parquet_with_inf(sb):
    path = sb.root / "cells.parquet"
    sb.frame.assign(sag=lambda t: t["sag"].where(t.index != 2, np.inf)).to_parquet(path)
    return path


TABLES: dict[str, tuple[Callable, str]] = {
    "inf value": (lambda sb: _cell(sb, "sag", "inf"), r"column 'sag' of .*bad\.csv has the value inf \(cell \d+"),
    "-inf value": (lambda sb: _cell(sb, "tau", "-inf"), r"column 'tau' .*value -inf \(cell \d+"),
    "1e300 value": (lambda sb: _cell(sb, "rheobase_i", "1e300"), r"column 'rheobase_i' .*1e\+300 .*finite numbers"),
    "1e400 overflow": (lambda sb: _cell(sb, "width_rheo", "1e400"),
                       r"column 'width_rheo' of .*bad\.csv has the value '1e400' \(cell \d+\), "
                       r"beyond the range of a floating-point number"),
    "-1e400 overflow": (lambda sb: _cell(sb, "sag", "-1e400"), r"column 'sag' .*'-1e400' .*not finite"),
    "Infinity spelled out": (lambda sb: _cell(sb, "v_baseline", "Infinity"), r"column 'v_baseline' .*inf"),
    "inf in parquet": (_parquet_with_inf, r"column 'sag' of .*cells\.parquet has the value inf"),
    "table cut mid-row": (_truncated, r"cut\.csv line 31 has \d+ of the 10 fields .*incomplete"),
    "ragged row in the middle": (_ragged_middle, r"ragged\.csv line 6 has 4 of the 10 fields"),
    "TSV row cut short": (_tsv_short_row, r"cells\.tsv line 31 has 3 of the 10 fields"),
    "header only": (lambda sb: sb.write("h.csv", ",".join(sb.frame.columns) + "\n"), r"h\.csv is empty"),
    "zero bytes": (lambda sb: sb.write("z.csv", ""), r"z\.csv is empty"),
    "UTF-16 table": (lambda sb: sb.write("u16.csv", sb.cells.read_text().encode("utf-16")), r"cannot read .*u16\.csv"),
    "Excel file renamed .csv": (lambda sb: sb.write("x.csv", b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 4),
                                r"cannot read .*x\.csv"),
    "unknown suffix": (lambda sb: sb.write("cells.dat", sb.cells.read_text()), r"suffix '\.dat'"),
    "input is a folder": (lambda sb: (sb.root / "folder.csv").mkdir() or sb.root / "folder.csv", r"is a folder"),
    "missing input": (lambda sb: sb.root / "nope.csv", r"nope\.csv does not exist"),
    "no id column": (lambda sb: sb.table(sb.frame.drop(columns="cell_id")), r"no cell id column .*--id-column"),
    "duplicated ids": (lambda sb: sb.table(sb.frame.assign(cell_id=[1, 1, *sb.frame["cell_id"][2:]])),
                       r"duplicated id '1'"),
    "empty id": (lambda sb: _cell(sb, "cell_id", None), r"id column 'cell_id' .* is empty on data row 4"),
    "non-numeric value": (lambda sb: _cell(sb, "sag", "n/a?"), r"column 'sag' .*non-numeric value 'n/a\?'"),
    "tau in ms under an IPFX name": (lambda sb: sb.table(sb.frame.assign(tau=sb.frame["tau"] * 1000)),
                                     r"column 'tau' .*unit: ms.*--force"),
    # red team 2 (notes/faults/findings2.md)
    "a column name used twice": (lambda sb: sb.write("dup.csv", sb.cells.read_text().replace("sag,", "tau,", 1)),
                                 r"dup\.csv has 1 column name\(s\) used twice, e\.g\. 'tau'"),
    "the id column name used twice": (
        lambda sb: sb.write("dup.csv", sb.cells.read_text().replace("tau,", "cell_id,", 1)),
        r"used twice, e\.g\. 'cell_id'"),
    "a row longer than its header": (_long_row, r"long\.csv line 6 has 11 fields, more than the 10 of its header"),
    "ids that differ only by blanks": (lambda sb: sb.table(sb.frame.assign(cell_id=["a", " a "] + [
        f"c{i}" for i in range(len(sb.frame) - 2)])), r"duplicated id 'a'"),
    "an id of blanks only": (lambda sb: _cell(sb, "cell_id", "   "), r"id column 'cell_id' .* is empty on data row 4"),
    "every feature value empty": (lambda sb: sb.table(sb.frame[["cell_id"]].assign(tau=np.nan, sag=np.nan)),
                                  r"no cell of .*bad\.csv has a value for any feature"),
    "a third of tau in ms (mixed units)": (
        lambda sb: sb.table(sb.frame.assign(tau=sb.frame["tau"].where(sb.frame.index % 3 != 0,
                                                                      sb.frame["tau"] * 1000))),
        r"column 'tau' \(canonical tau, expected s .*\): 10 of its 30 values lie outside the "
        r"plausible range .*mixes units.*1000 times too large.*--force"),
    "every duration negative": (lambda sb: sb.table(sb.frame.assign(tau=-sb.frame["tau"])),
                                r"column 'tau' \(canonical tau\): 30 of its 30 values are negative.*sign: -1.*--force"),
    # fault hunt 4 (notes/faults/findings4.md)
    "a CSV separated by semicolons, mixing decimal marks": (
        lambda sb: sb.write("semi.csv", sb.frame.assign(sag=sb.frame["sag"].astype(str)).to_csv(
            sep=";", decimal=",", index=False)),
        r"semi\.csv is separated by semicolons and mixes decimal commas .* with decimal points"),
    "a tab-separated file named .csv": (lambda sb: sb.write("tabs.csv", sb.frame.to_csv(sep="\t", index=False)),
                                        r"tabs\.csv is separated by tabs, not commas .*name the file \.tsv"),
    "a comment line above the header": (lambda sb: sb.write("c.csv", "# exported by rig 2\n" + sb.cells.read_text()),
                                        r"c\.csv starts with the line '# exported by rig 2'.*delete the lines above"),
    "input is /dev/null": (lambda sb: Path("/dev/null"), r"/dev/null is not a regular file"),
    # s9: True/False and dates were read as 1/0 and nanoseconds
    "a feature column of TRUE/FALSE": (lambda sb: sb.table(sb.frame.assign(sag=sb.frame["sag"] > 0.1)),
                                       r"column 'sag' of .*bad\.csv holds True/False values \(cell \d+: "
                                       r"(True|False)\), not measurements"),
    "a Parquet feature column of dates": (
        lambda sb: sb.frame.assign(tau=pd.Timestamp("2024-05-01")).to_parquet(sb.root / "d.parquet") or sb.root / "d.parquet",
        r"column 'tau' of .*d\.parquet holds dates or times \(cell \d+: '2024-05-01 00:00:00'\)"),
    # s8: a unit prefix off by 1e12 had no hint
    "rheobase in amperes": (lambda sb: sb.table(sb.frame.assign(rheobase_i=sb.frame["rheobase_i"] * 1e-12)),
                            r"column 'rheobase_i' .*multiply by 1e\+12 \(the values look like A, not pA: set "
                            r"`unit: A`\).*--force"),
}



def _table_case(make, pattern, command):
    def case(sb):
        path = make(sb)
        return (predict if command == "predict" else mapping)(sb, input=path), pattern
    return case


# ------------------------------------------------------------------ cases: column maps


def _map_file(sb, text: str | bytes, name="map.yaml"):
    return sb.write(name, text)


_GOOD_ENTRIES = ("id_column: cell_id\ncolumns:\n  - {column: tau, name: tau, unit: s}\n"
                 "  - {column: input_resistance, name: input_resistance, unit: MOhm}\n")


COLUMN_MAPS = {
    "column map not UTF-8": (lambda sb: _map_file(sb, "name: caf\xe9\ncolumns: []\n".encode("latin-1")),
                             r"column map .*map\.yaml is not UTF-8"),
    "column map invalid YAML": (lambda sb: _map_file(sb, "columns: [unclosed"), r"not valid YAML"),
    "column map with a python tag": (lambda sb: _map_file(sb, "columns: !!python/object/apply:os.system ['echo x']\n"),
                                     r"not valid YAML"),
    "column map missing": (lambda sb: sb.root / "nomap.yaml", r"column map .*nomap\.yaml does not exist"),
    "column map names a missing column": (
        lambda sb: _map_file(sb, "columns:\n  - {column: 'Tau (ms)', name: tau, unit: ms}\n"),
        r"'Tau \(ms\)'"),
    "column map unknown canonical name": (
        lambda sb: _map_file(sb, "columns:\n  - {column: tau, name: tau_m, unit: s}\n"),
        r"unknown canonical feature name 'tau_m'"),
    "column map unit of the wrong kind": (
        lambda sb: _map_file(sb, "columns:\n  - {column: tau, name: tau, unit: pA}\n"),
        r"unit 'pA' \(current\) cannot be converted"),
    "column map id_column a list": (
        lambda sb: _map_file(sb, "id_column: [cell_id]\ncolumns:\n  - {column: tau, name: tau, unit: s}\n"),
        r"'id_column' must be a column name, got \['cell_id'\]"),
    "column map expr giving no finite value": (
        lambda sb: _map_file(sb, "columns:\n  - {column: tau, name: tau, unit: s, expr: 'x/0'}\n"),
        r"column map .*map\.yaml, column 'tau': expr 'x/0' gives no finite value for any cell of "
        r".*cells\.csv \(e\.g\. x = [\d.e-]+\); fix the expr"),
    # fault hunt 3 (notes/faults/findings3.md)
    "column map expr empties one of several columns": (
        lambda sb: _map_file(sb, _GOOD_ENTRIES + "  - {column: v_baseline, name: sag, unit: '1', expr: 'log(x)'}\n"),
        r"column 'v_baseline': expr 'log\(x\)' gives no finite value for any cell"),
    "column map expr overflowing for every cell": (
        lambda sb: _map_file(sb, _GOOD_ENTRIES + "  - {column: sag, name: sag, unit: '1', expr: 'x*1e308*1e10'}\n"),
        r"column 'sag': expr 'x\*1e308\*1e10' gives no finite value"),
    "column map expr 1/(x-x)": (
        lambda sb: _map_file(sb, _GOOD_ENTRIES + "  - {column: sag, name: sag, unit: '1', expr: '1/(x-x)'}\n"),
        r"column 'sag': expr '1/\(x-x\)' gives no finite value"),
    "column map minus the column itself": (
        lambda sb: _map_file(sb, _GOOD_ENTRIES + "  - {column: sag, name: sag, unit: '1', minus: sag}\n"),
        r"column 'sag': 'minus' names the column itself"),
    "column map scale 0": (
        lambda sb: _map_file(sb, _GOOD_ENTRIES + "  - {column: sag, name: sag, unit: '1', scale: 0}\n"),
        r"column 'sag': 'scale' is 0"),
    # fault hunt 7 (notes/s7/faults1.md)
    "column map repeating a key": (
        lambda sb: _map_file(sb, _GOOD_ENTRIES + "  - {column: sag, name: sag, unit: '1', unit: ms}\n"),
        r"column map .*map\.yaml, line 5: the column map repeats the key 'unit' \(first on line 5\)"),
    "column map reading one column twice": (
        lambda sb: _map_file(sb, _GOOD_ENTRIES + "  - {column: tau, name: sag, unit: '1'}\n"),
        r"column map .*map\.yaml reads column 'tau' twice \(as tau and as sag\)"),
    "column map scale an integer too large for a float": (
        lambda sb: _map_file(sb, _GOOD_ENTRIES + "  - {column: sag, name: sag, unit: '1', scale: " + "9" * 400 + "}\n"),
        r"column 'sag': 'scale' must be a finite number of magnitude <= 1e\+15"),
    "column map expr x*0": (
        lambda sb: _map_file(sb, _GOOD_ENTRIES + "  - {column: sag, name: sag, unit: '1', expr: 'x*0'}\n"),
        r"column 'sag': 'expr' 'x\*0' gives 0 for every one of"),
    "column map expr without x": (
        lambda sb: _map_file(sb, _GOOD_ENTRIES + "  - {column: sag, name: sag, unit: '1', expr: '0.2'}\n"),
        r"column 'sag': 'expr' '0\.2' does not use x"),
    "column map sign true": (
        lambda sb: _map_file(sb, _GOOD_ENTRIES + "  - {column: sag, name: sag, unit: '1', sign: true}\n"),
        r"column 'sag': 'sign' must be a number, got true/false"),
    "column map strict as text": (lambda sb: _map_file(sb, "strict: 'no'\n" + _GOOD_ENTRIES),
                                  r"column map .*map\.yaml: 'strict' must be true or false"),
    "column map is a directory": (lambda sb: sb.root / "maps" if (sb.root / "maps").mkdir() is None else None,
                                  r"column map .*maps is a directory; give the YAML file itself"),
    "column map empty": (lambda sb: _map_file(sb, ""), r"column map .*map\.yaml is empty"),
    "column map binary": (lambda sb: _map_file(sb, bytes(range(256)) * 4), r"column map .*map\.yaml is a binary file"),
    "column map of 2 MB": (lambda sb: _map_file(sb, _GOOD_ENTRIES + "#" * (2 << 20)),
                           r"column map .*map\.yaml is 2\.1 MB; a column map is a small YAML file"),
    "column map with an alias": (lambda sb: _map_file(sb, "description: &d x\nname: *d\n" + _GOOD_ENTRIES),
                                 r"line 1: the column map uses a YAML anchor and alias"),
    "column map reading the id column": (
        lambda sb: _map_file(sb, "columns:\n  - {column: cell_id, name: tau, unit: s}\n"),
        r"reads column 'cell_id' \(for tau\), which is the id column of .*cells\.csv"),
}


def _map_case(make, pattern, command):
    def case(sb):
        cmap = make(sb)
        return (predict if command == "predict" else mapping)(sb, "--column-map", cmap), pattern
    return case


# ------------------------------------------------------------------ cases: model folders


def _old_pickle_format(sb):
    import pickle

    (sb.model / "model.skops").unlink()
    (sb.model / "model.joblib").write_bytes(pickle.dumps({"would run": "code"}))
    sb.model_json(kind="sklearn-joblib", weights_file="model.joblib")
    return predict(sb)


def _untrusted_type(sb):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    sio.dump(FunctionTransformer(func=os.system), sb.model / "model.skops")
    from ephys2tx.io import sha256_file

    sb.model_json(weights_sha256=sha256_file(sb.model / "model.skops"))
    return predict(sb)


def _symlink_out(sb):
    outside = sb.root / "elsewhere.skops"
    shutil.move(sb.model / "model.skops", outside)
    (sb.model / "model.skops").symlink_to(outside)
    return predict(sb)


def _drop_calibrator(sb):
    meta = json.loads((sb.model / "model.json").read_text())
    del meta["extra"]["mapping"]["calibrator"]
    (sb.model / "model.json").write_text(json.dumps(meta))
    return predict(sb)


def _flip_byte(sb):
    path = sb.model / "model.skops"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    return predict(sb)


MODELS = {
    "old pickle model folder": (_old_pickle_format, r"old pickle format .*retrain it with `ephys2tx train --out"),
    "weights path with ..": (lambda sb: sb.model_json(weights_file="../model.skops") and predict(sb),
                             r"weights_file.*inside the model folder"),
    "weights path absolute": (lambda sb: sb.model_json(weights_file=str(sb.model / "model.skops")) and predict(sb),
                              r"weights_file.*inside the model folder"),
    "weights path in a sub-folder": (lambda sb: sb.model_json(weights_file="x/model.skops") and predict(sb),
                                     r"inside the model folder"),
    "weights symlink out of the folder": (_symlink_out, r"symbolic link pointing outside the model folder"),
    "untrusted type in the weights": (_untrusted_type, r"does not trust"),
    "corrupted weights": (_flip_byte, r"model\.skops is corrupted: sha256"),
    "missing weights": (lambda sb: (sb.model / "model.skops").unlink() or predict(sb), r"model\.skops is missing"),
    "model.json not UTF-8": (lambda sb: (sb.model / "model.json").write_bytes(b"{\"format\": \"\xff\xfe\"}") and predict(sb),
                             r"model\.json is not UTF-8"),
    "model.json not JSON": (lambda sb: (sb.model / "model.json").write_text("{format: ") and predict(sb),
                            r"model\.json is not valid JSON"),
    "model.json a list": (lambda sb: (sb.model / "model.json").write_text("[]") and predict(sb), r"JSON list"),
    "model.json without calibrator": (_drop_calibrator, r"missing or bad calibration/OOD field"),
    "model of another major version": (lambda sb: sb.model_json(package_version="99.0.0") and predict(sb),
                                       r"incompatible .*major version"),
    "model folder missing": (lambda sb: predict(sb)[:2] + [sb.root / "none"] + predict(sb)[3:],
                             r"model directory .*none does not exist"),
    "model path is a file": (lambda sb: predict(sb)[:2] + [sb.cells] + predict(sb)[3:], r"cells\.csv is a file"),
    "model.json classes not those of the estimator": (
        lambda sb: _mapping_field(sb, "classes", ["A", "B"]), r"mapping\.classes is \['A', 'B'\], but the saved "
                                                              r"estimator predicts 4 classes"),
    # s9: a reordered class list named every cell by another class; an edited record's class counts
    # made predict's training mix uniform (or negative) without a word
    "model.json classes reordered": (
        lambda sb: _mapping_field(sb, "classes", ["Vip", "Sst", "Pvalb", "Lamp5"]),
        r"mapping\.classes is \['Vip', 'Sst', 'Pvalb', 'Lamp5'\], not classes of Lamp5, Pvalb, Sst, Vip "
        r"in that order"),
    "model.json record without class counts": (
        lambda sb: _mapping_field(sb, "record", {"n_cells": 664}),
        r"mapping\.record\.class_counts is None; it must give each class \(Lamp5, Pvalb, Sst, Vip\) its "
        r"number of training cells"),
    "model.json a negative class count": (
        lambda sb: _mapping_field(sb, "record", {"class_counts": {"Lamp5": -60, "Pvalb": 350, "Sst": 150,
                                                                  "Vip": 100}}),
        r"mapping\.record\.class_counts is \{'Lamp5': -60, .*>= 0, not all 0"),
    "model.json unknown species": (lambda sb: _mapping_field(sb, "species", "cat"), r"mapping\.species is 'cat'"),
    "model.json unknown model": (lambda sb: _mapping_field(sb, "model", "svm"), r"mapping\.model is 'svm'"),
    "model.json features a string": (lambda sb: _mapping_field(sb, "features", "tau"),
                                     r"mapping\.features must be a non-empty list of names"),
    "model.json features repeated": (lambda sb: _mapping_field(sb, "features", ["tau"] * 93),
                                     r"mapping\.features names the same entry twice"),
    "model.json nested 100000 deep": (
        lambda sb: (sb.model / "model.json").write_text("[" * 100000 + "]" * 100000) and predict(sb),
        r"model\.json is not valid JSON"),
    "model.json with a 5000-digit number": (
        lambda sb: (sb.model / "model.json").write_text(
            (sb.model / "model.json").read_text().replace('"format_version": 1', '"format_version": 1' + "0" * 5000))
        and predict(sb), r"model\.json is not valid JSON"),
}


def _edited_number(sb, *keys, value):
    """model.json with the number at ``keys`` (dict keys and list indices) replaced by ``value``."""
    meta = json.loads((sb.model / "model.json").read_text())
    node = meta
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    (sb.model / "model.json").write_text(json.dumps(meta))  # NaN and Infinity as Python writes them
    return predict(sb)


_OOD = ("extra", "mapping", "ood")
_NORM = ("extra", "mapping", "ood_norm")
#: s8: hand-edited numbers of model.json were used as they were (an OOD scale of 0 divided by 0).
MODELS.update({
    f"model.json {name}": ((lambda keys, value: lambda sb: _edited_number(sb, *keys, value=value))(keys, value),
                           rf"model\.json key {re.escape(shown)} is {re.escape(repr(value))}; it must be {rule}")
    for name, keys, value, shown, rule in [
        ("OOD scale 0", (*_OOD, "scale", 0), 0, "extra.mapping.ood.scale[0]", "a finite number > 0"),
        ("OOD scale negative", (*_OOD, "scale", 4), -1.5, "extra.mapping.ood.scale[4]", "a finite number > 0"),
        ("OOD scale NaN", (*_OOD, "scale", 2), float("nan"), "extra.mapping.ood.scale[2]", "a finite number > 0"),
        ("OOD scale inf", (*_OOD, "scale", 1), float("inf"), "extra.mapping.ood.scale[1]", "a finite number > 0"),
        ("OOD scale a string", (*_OOD, "scale", 1), "1", "extra.mapping.ood.scale[1]", "a finite number > 0"),
        ("OOD threshold NaN", (*_OOD, "threshold"), float("nan"), "extra.mapping.ood.threshold", "a finite number >= 0"),
        ("OOD false-alarm rate 0", (*_OOD, "false_alarm_rate"), 0, "extra.mapping.ood.false_alarm_rate",
         r"a finite number in \(0, 1\)"),
        ("OOD mean -inf", (*_OOD, "mean", 7), float("-inf"), "extra.mapping.ood.mean[7]", "a finite number"),
        ("OOD precision NaN", (*_OOD, "precision", 3, 3), float("nan"), "extra.mapping.ood.precision[3][3]",
         "a finite number"),
        ("OOD norm distance sd 0", (*_NORM, "distance_sd"), 0, "extra.mapping.ood_norm.distance_sd", "a finite number > 0"),
        ("OOD norm uncertainty sd negative", (*_NORM, "uncertainty_sd"), -0.1, "extra.mapping.ood_norm.uncertainty_sd",
         "a finite number > 0"),
        ("OOD norm threshold inf", (*_NORM, "threshold"), float("inf"), "extra.mapping.ood_norm.threshold",
         "a finite number"),
        ("calibration step above 1", ("extra", "mapping", "calibrator", "thresholds", 0, 1, 2), 1.5,
         "extra.mapping.calibrator.thresholds[0][1][2]", r"a finite number in \[0, 1\]"),
        ("n_features_in 0", ("n_features_in",), 0, "n_features_in", "an integer >= 1"),
    ]
})


def _mapping_field(sb, name, value):
    meta = json.loads((sb.model / "model.json").read_text())
    meta["extra"]["mapping"][name] = value
    (sb.model / "model.json").write_text(json.dumps(meta))
    return predict(sb)


# ------------------------------------------------------------------ cases: outputs


def _home(sb):
    home = sb.root / "home"
    home.mkdir(exist_ok=True)
    return home


def _blocked(sb):
    sb.write("blocker", "a file")
    return sb.root / "blocker" / "sub"


def _link_to_folder(sb, name):
    target = sb.foreign_folder("real")
    (sb.root / name).symlink_to(target)
    return sb.root / name


def _map_data_copy(sb, cache):
    """``map`` reading a copy of the data, with the cache at ``cache(copy)``."""
    data = sb.data_copy()
    args = [str(a) for a in mapping(sb, cache=cache(data))]
    args[args.index("--data-dir") + 1] = str(data)
    return args


def _run_data_copy(sb, cache=None, out=None):
    """``run`` reading a copy of the data, with ``--cache-dir cache(copy)`` / ``--out out(copy)``."""
    data = sb.data_copy()
    extra = [] if cache is None else ["--cache-dir", cache(data)]
    return run(sb, *extra, data=data, out=None if out is None else out(data))


OUTPUTS = {
    # predict: one file
    "predict --out exists": (lambda sb: predict(sb, out=sb.write("p.csv", "mine")), r"already exists; .*--overwrite"),
    "predict --overwrite of a foreign file": (lambda sb: predict(sb, "--overwrite", out=sb.write("p.csv", "mine")),
                                              r"not written by ephys2tx predict"),
    "predict --out is a folder": (lambda sb: predict(sb, out=sb.foreign_folder("pdir")), r"is a folder; give a file path"),
    "predict --out is the input": (lambda sb: predict(sb, "--overwrite", out=sb.cells), r"is the input"),
    "predict --out inside the model folder": (lambda sb: predict(sb, out=sb.model / "p.csv"),
                                              r"inside the input folder"),
    "predict --out blocked by a file": (lambda sb: predict(sb, out=_blocked(sb) / "p.csv"), r"blocker is a file"),
    "predict --out unwritable": (lambda sb: predict(sb, out=Path("/proc/ephys2tx-test/p.csv")), r"not writable"),
    "predict --out is a link": (lambda sb: predict(sb, "--overwrite", out=_link_to_file(sb)), r"symbolic link"),
    "predict --out is the current folder": (lambda sb: predict(sb, out=Path(".")), r"is the current folder"),
    "predict --out .xlsx (CSV bytes under another suffix)": (lambda sb: predict(sb, out=sb.root / "p.xlsx"),
                                                            r"p\.xlsx must name a \.csv file"),
    "predict --out a folder path ending in /": (lambda sb: predict(sb, out=str(sb.root / "newdir") + "/"),
                                                r"newdir must name a \.csv file"),
    # map: one folder
    "map --out exists": (lambda sb: mapping(sb, out=sb.foreign_folder("m")), r"already exists; .*--overwrite"),
    "map --overwrite of a foreign folder": (lambda sb: mapping(sb, "--overwrite", out=sb.foreign_folder("m")),
                                            r"not written by ephys2tx \(no \.ephys2tx-output\.json"),
    "map --overwrite of another kind of output": (lambda sb: mapping(sb, "--overwrite", out=sb.own_folder("m", "model")),
                                                  r"holds ephys2tx 'model' output, not 'mapping'"),
    "map --out is a file": (lambda sb: mapping(sb, out=sb.write("m", "x")), r"is an existing file"),
    "map --out .": (lambda sb: mapping(sb, out=Path(".")), r"is the current folder"),
    "map --out ~": (lambda sb: mapping(sb, out=Path("~")), r"is your home folder"),
    "map --out a parent of the current folder": (lambda sb: mapping(sb, out=Path("..")), r"parent of the current folder"),
    "map --out inside the data folder": (lambda sb: mapping(sb, out=sb.data / "mapped"), r"inside the input folder"),
    "map --out blocked by a file": (lambda sb: mapping(sb, out=_blocked(sb)), r"blocker is a file"),
    "map --out is a link": (lambda sb: mapping(sb, "--overwrite", out=_link_to_folder(sb, "m")), r"symbolic link"),
    "map --cache-dir is a file": (lambda sb: mapping(sb, cache=sb.write("cachefile", "x")), r"cachefile is a file"),
    "map --cache-dir unwritable": (lambda sb: mapping(sb, cache=Path("/proc/ephys2tx-test")), r"cache .*not writable"),
    "map --cache-dir inside --out": (lambda sb: mapping(sb, cache=sb.root / "mapped" / "c"),
                                     r"--cache-dir .* is inside the output folder"),
    # s8: caches and outputs that overlap the data or each other (a copy of the data: if the
    # check were missing, the command would write there, never into the shared folder)
    "map --cache-dir is the data folder": (lambda sb: _map_data_copy(sb, lambda d: d),
                                           r"--cache-dir .* is the input .*a cache must lie outside"),
    "map --cache-dir inside the data folder": (lambda sb: _map_data_copy(sb, lambda d: d / "cache"),
                                               r"--cache-dir .*cache is inside the input folder"),
    "map --cache-dir is the input table": (lambda sb: mapping(sb, cache=sb.cells), r"--cache-dir .*cells\.csv is the input"),
    "map --cache-dir is --out": (lambda sb: mapping(sb, cache=sb.root / "mapped"),
                                 r"--cache-dir .*mapped is the output .*mapped"),
    "run --cache-dir is the data folder": (lambda sb: _run_data_copy(sb, cache=lambda d: d),
                                           r"--cache-dir .* is the input .*or pass --no-cache"),
    "run --cache-dir inside the data folder": (
        lambda sb: _run_data_copy(sb, cache=lambda d: d / "human_gaba_leedalley2023" / "c"),
        r"--cache-dir .* is inside the input folder"),
    "run --cache-dir is --out": (lambda sb: run(sb, "--cache-dir", sb.root / "results"),
                                 r"--cache-dir .*results is the output"),
    "run --cache-dir inside --out": (lambda sb: run(sb, "--cache-dir", sb.root / "results" / "c"),
                                     r"--cache-dir .*c is inside the output folder"),
    "run --out inside the data folder": (lambda sb: _run_data_copy(sb, out=lambda d: d / "results"),
                                         r"inside the input folder"),
    "predict --layer, --out inside the data folder": (
        lambda sb: (lambda d: predict(sb, "--layer", "L1", "--data-dir", d, out=d / "p.csv"))(sb.data_copy()),
        r"--out .*p\.csv is inside the input folder"),
    "extract --cache-dir is --out": (
        lambda sb: _extract(sb, sb.write("nwb/e.nwb", b""), "--cache-dir", sb.root / "f.parquet"),
        r"--cache-dir .*f\.parquet is the output"),
    # train: one folder
    "train --out exists": (lambda sb: train(sb, out=sb.foreign_folder("t")), r"already exists; .*--overwrite"),
    "train --overwrite of a foreign folder": (lambda sb: train(sb, "--overwrite", out=sb.foreign_folder("t")),
                                              r"not written by ephys2tx"),
    "train --overwrite of study results": (lambda sb: train(sb, "--overwrite", out=sb.own_folder("t", "study")),
                                           r"holds ephys2tx 'study' output, not 'model'"),
    "train --out is a file": (lambda sb: train(sb, out=sb.write("t", "x")), r"is an existing file"),
    "train --out .": (lambda sb: train(sb, out=Path(".")), r"is the current folder"),
    "train --out ~": (lambda sb: train(sb, out=_home(sb)), r"is your home folder"),
    "train --out inside the data folder": (lambda sb: train(sb, out=sb.data / "m"), r"inside the input folder"),
    "train --out blocked by a file": (lambda sb: train(sb, out=_blocked(sb)), r"blocker is a file"),
    "train --out unwritable": (lambda sb: train(sb, out=Path("/proc/ephys2tx-test/m")), r"not writable"),
    # run: one folder
    "run --out .": (lambda sb: run(sb, out=Path(".")), r"is the current folder"),
    "run --out ~": (lambda sb: run(sb, out=Path("~")), r"is your home folder"),
    "run --out home, overwrite": (lambda sb: run(sb, "--overwrite", out=_home(sb)), r"is your home folder"),
    "run --out an existing file": (lambda sb: run(sb, out=sb.write("results", "x")), r"is an existing file"),
    "run --out a folder of the user": (lambda sb: run(sb, out=sb.foreign_folder("results")), r"already exists"),
    "run --overwrite of a folder of the user": (lambda sb: run(sb, "--overwrite", out=sb.foreign_folder("results")),
                                                r"not written by ephys2tx"),
    "run --out holding the data folder": (lambda sb: run(sb, out=sb.data.parent), r"contains the input"),
    "run --out is the data folder": (lambda sb: run(sb, out=sb.data), r"is the input"),
    "run --out is a link": (lambda sb: run(sb, "--overwrite", out=_link_to_folder(sb, "results")), r"symbolic link"),
    "run --out blocked by a file": (lambda sb: run(sb, out=_blocked(sb)), r"blocker is a file"),
    "run --out unwritable": (lambda sb: run(sb, out=Path("/proc/ephys2tx-test/r")), r"not writable"),
    # fetch: files in the data folder
    "fetch --data-dir is a file": (lambda sb: fetch(sb, data=sb.write("datafile", "x")), r"datafile is a file"),
    "fetch over a modified data file": (lambda sb: fetch(sb, data=_modified_fetch_target(sb)),
                                        r"differs from the published file .*--overwrite"),
    "fetch with a dataset folder blocked by a file": (lambda sb: fetch(sb, data=_blocked_dataset(sb)),
                                                      r"human_gaba_leedalley2023 is a file"),
    "fetch --data-dir unwritable": (lambda sb: fetch(sb, data=Path("/proc/ephys2tx-test")), r"not writable"),
}


def _link_to_file(sb):
    (sb.root / "p.csv").symlink_to(sb.write("target.csv", "mine"))
    return sb.root / "p.csv"


def _modified_fetch_target(sb):
    root = sb.root / "fetched"
    sb.write(f"fetched/{HUMAN['ephys'].relpath}", "my edited copy\n")
    return root


def _blocked_dataset(sb):
    sb.write("fetched/human_gaba_leedalley2023", "a file where a folder should be")
    return sb.root / "fetched"


# ------------------------------------------------------------------ cases: arguments and data folders


def _tampered(sb, relpath, edit):
    root = sb.data_copy()
    path = root / relpath
    edit(path)
    return root


def _cut(path):
    """Cut the file just before a separator in its middle: the last row lacks fields."""
    text = path.read_text(encoding="utf-8-sig")
    path.write_text(text[: text.index(",", len(text) // 2)], encoding="utf-8")


def _folder(path):
    path.unlink()
    path.mkdir()


def _header_only(path):
    path.write_text(path.read_text(encoding="utf-8-sig").splitlines()[0] + "\n", encoding="utf-8")


def _inf_in_table(path):
    table = pd.read_csv(path, encoding="utf-8-sig", low_memory=False)
    table.loc[7, "tau"] = np.inf
    table.to_csv(path, index=False)


def _one_class(path):
    table = pd.read_csv(path, encoding="utf-8-sig", low_memory=False)
    table["Revised_subclass_label"] = table["Revised_subclass_label"].where(
        table["Revised_subclass_label"].isna(), "PVALB")
    table.to_csv(path, index=False)


def _few_lamp5(path):
    table = pd.read_csv(path, encoding="utf-8-sig", low_memory=False)
    lamp5 = table.index[table["Revised_subclass_label"] == "LAMP5/PAX6/Other"]
    table.loc[lamp5[2:], "Revised_subclass_label"] = "PVALB"
    table.to_csv(path, index=False)


def _feature_table(sb, edit=lambda t: t, n=30, families=None):
    """A table in the layout of `ephys2tx extract` (family map in the schema metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ephys2tx.features.nwb.extract import META_FAMILIES

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a_0", "a_1", "b_0", "b_1"],
                         index=pd.Index([f"cell{i}" for i in range(n)], name="cell_id"))
    frame["subclass"] = np.resize(["Pvalb", "Sst", "Vip"], n)
    frame = edit(frame)
    table = pa.Table.from_pandas(frame)
    meta = {**(table.schema.metadata or {}),
            META_FAMILIES: families or json.dumps({"fam_a": ["a_0", "a_1"], "fam_b": ["b_0", "b_1"]}).encode()}
    path = sb.root / "features.parquet"
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def _with_features(sb, path, *extra):
    return ["run", "--features", path, "--label-column", "subclass", "--species", "mouse",
            "--model", "logreg", "--out", sb.root / "results", *extra]


def _labels(sb, n=30) -> pd.DataFrame:
    return pd.DataFrame({"cell_id": [f"cell{i}" for i in range(n)],
                         "subclass": np.resize(["Pvalb", "Sst", "Vip"], n)})


def _with_labels(sb, labels, *extra, encoding="utf-8"):
    """`run --features` (no label column in it) with ``labels`` as --labels (None: a folder)."""
    path = _feature_table(sb, lambda t: t.drop(columns="subclass"))
    target = sb.root / "labels.csv"
    if labels is None:
        target.mkdir()
    else:
        target.write_bytes(labels.to_csv(index=False).encode(encoding))
    return ["run", "--features", path, "--labels", target, "--species", "mouse", "--model",
            "logreg", "--quick", "--out", sb.root / "results", *extra]


def _inf_feature(t):
    t.iloc[4, 1] = np.inf
    return t


FEATURE_TABLES = {
    "run --features, inf value": (lambda sb: _with_features(sb, _feature_table(sb, _inf_feature)),
                                  r"column 'a_1' of .*features\.parquet has the value inf \(cell cell4"),
    "run --features, a single class": (
        lambda sb: _with_features(sb, _feature_table(sb, lambda t: t.assign(subclass="Sst"))),
        r"has only class 'Sst'"),
    "run --features, fewer cells of a class than folds": (
        lambda sb: _with_features(sb, _feature_table(sb), "--n-splits", "20"),
        r"10 cell\(s\) of class '\w+', fewer than the 20 .*lower --n-splits to at most 10"),
    "run --features, header-only table": (
        lambda sb: _with_features(sb, _feature_table(sb, lambda t: t.iloc[:0])),
        r"features\.parquet holds no cells"),
    "run --features, family metadata not JSON": (
        lambda sb: _with_features(sb, _feature_table(sb, families=b"{not json")),
        r"features\.parquet: its 'ephys2tx\.families' metadata is not valid JSON"),
    "run --features, family metadata a list": (
        lambda sb: _with_features(sb, _feature_table(sb, families=b"[1, 2]")),
        r"'ephys2tx\.families' metadata is a JSON list, not a dict"),
    "run --features, a family names a missing column": (
        lambda sb: _with_features(sb, _feature_table(sb, families=json.dumps(
            {"fam_a": ["a_0", "zz"], "fam_b": ["a_1", "b_0", "b_1"]}).encode())),
        r"metadata names column 'zz', which the table lacks"),
    "run --features, text in a feature column": (
        lambda sb: _with_features(sb, _feature_table(sb, lambda t: t.assign(a_0="x"))),
        r"feature column 'a_0' of .*features\.parquet is not numeric"),
    "run --labels without --features": (lambda sb: run(sb, "--labels", sb.cells),
                                        r"--labels labels the cells of --features"),
    "run --label-column without --features": (lambda sb: run(sb, "--label-column", "subclass"),
                                              r"--label-column labels the cells of --features"),
    "run --features, output is the feature table": (
        lambda sb: _with_features(sb, _feature_table(sb))[:-2] + ["--out", sb.root / "features.parquet"],
        r"is an existing file|is the input"),
}


def _id_named_like_an_output(sb, command):
    """An id column named predicted_subclass (--id-column): was an internal error ('cannot insert')."""
    path = sb.table(sb.frame.rename(columns={"cell_id": "predicted_subclass"}))
    return (predict if command == "predict" else mapping)(sb, "--id-column", "predicted_subclass",
                                                           input=path)


ARGUMENTS = {
    # fault hunt s7 (notes/s7/faults2.md)
    "predict --id-column named like an output column": (
        lambda sb: _id_named_like_an_output(sb, "predict"),
        r"the id column of .*bad\.csv is named 'predicted_subclass', the name of an output column"),
    "map --id-column named like an output column": (
        lambda sb: _id_named_like_an_output(sb, "map"),
        r"the id column of .*bad\.csv is named 'predicted_subclass', the name of an output column"),
    "run --n-splits 1": (lambda sb: run(sb, "--n-splits", "1"), r"--n-splits.*greater than or equal to 2"),
    "run --n-splits 10000": (lambda sb: run(sb, "--n-splits", "10000"), r"--n-splits.*less than or equal to 100"),
    "run --n-splits above the smallest class": (lambda sb: run(sb, "--n-splits", "99"),
                                                r"human cells .* cell\(s\) of class 'Lamp5', fewer than the 99 .*lower --n-splits"),
    "run --n-repeats 0": (lambda sb: run(sb, "--n-repeats", "0"), r"--n-repeats.*greater than or equal to 1"),
    "run --jobs 0": (lambda sb: run(sb, "--jobs", "0"), r"--jobs.*greater than or equal to 1"),
    "run --jobs -3": (lambda sb: run(sb, "--jobs", "-3"), r"--jobs"),
    "run --seed -1": (lambda sb: run(sb, "--seed", "-1"), r"--seed"),
    "run --n-splits not a number": (lambda sb: run(sb, "--n-splits", "many"), r"--n-splits.*not a valid integer|--n-splits"),
    "run unknown option": (lambda sb: run(sb, "--no-such-option"), r"No such option"),
    "run unknown species": (lambda sb: run(sb)[:3] + ["cat"] + run(sb)[4:], r"unknown species 'cat'"),
    "run unknown model": (lambda sb: run(sb)[:5] + ["svm"] + run(sb)[6:], r"unknown model 'svm'"),
    "train --n-estimators 0": (lambda sb: train(sb)[:4] + ["0"] + train(sb)[5:], r"--n-estimators.*greater than or equal to 1"),
    "train --n-estimators -5": (lambda sb: train(sb)[:4] + ["-5"] + train(sb)[5:], r"--n-estimators"),
    "train --n-estimators absurd": (lambda sb: train(sb)[:4] + ["10000000"] + train(sb)[5:], r"--n-estimators.*less than"),
    "train --n-splits 1": (lambda sb: train(sb, "--n-splits", "1"), r"--n-splits"),
    "train --max-epochs 0": (lambda sb: train(sb, "--max-epochs", "0"), r"--max-epochs"),
    # s9: --max-epochs of the forest (which has no epochs) was ignored
    "train --max-epochs with the forest": (lambda sb: train(sb, "--max-epochs", "3"),
                                           r"--max-epochs sets the epochs of --model bilstm; --model forest has none"),
    "train --seed -1": (lambda sb: train(sb, "--seed", "-1"), r"--seed"),
    "map --align magic": (lambda sb: mapping(sb, "--align", "magic"), r"unknown --align 'magic'"),
    "run --data-dir is a file": (lambda sb: run(sb, data=sb.write("datafile", "x")), r"datafile is a file"),
    "run --data-dir missing": (lambda sb: run(sb, data=sb.root / "nodata"), r"nodata does not exist; run `ephys2tx fetch"),
    "run --data-dir empty": (lambda sb: run(sb, data=(sb.root / "empty").mkdir() or sb.root / "empty"),
                             r"missing file .*empty"),
    "train --data-dir is a file": (lambda sb: train(sb, data=sb.write("datafile", "x")), r"datafile is a file"),
    "map --data-dir empty": (lambda sb: mapping(sb)[:6] + [(sb.root / "e").mkdir() or sb.root / "e"] + mapping(sb)[7:],
                             r"missing file"),
    "run --no-verify, data file cut off": (lambda sb: run(sb, "--no-verify", data=_tampered(sb, HUMAN["ephys"].relpath, _cut)),
                                           r"LeeDalley_ephys_fx\.csv line \d+ has \d+ of the \d+ fields"),
    "run, data file cut off": (lambda sb: run(sb, data=_tampered(sb, HUMAN["ephys"].relpath, _cut)),
                               r"checksum mismatch .*--no-verify"),
    # s8: was 'missing file ...' for a folder standing where the file should be
    "datasets --no-verify, a folder in place of a data file": (
        lambda sb: ["datasets", "--no-verify", "--data-dir", _tampered(sb, HUMAN["ephys"].relpath, _folder)],
        r"LeeDalley_ephys_fx\.csv is a folder, not the data file of dataset human; move the folder away, then run "
        r"`ephys2tx fetch --data-dir "),
    "features --species human, a folder in place of a data file": (
        lambda sb: ["features", "--species", "human", "--data-dir", _tampered(sb, HUMAN["meta"].relpath, _folder)],
        r"LeeDalley_manuscript_metadata_v2\.csv is a folder, not the data file"),
    "train --no-verify, header-only data file": (
        lambda sb: train(sb, "--no-verify", data=_tampered(sb, HUMAN["ephys"].relpath, _header_only)),
        r"has a header but no rows"),
    "map --no-verify, inf in a data file": (
        lambda sb: mapping(sb, "--no-verify")[:6] + [_tampered(sb, HUMAN["ephys"].relpath, _inf_in_table)]
        + mapping(sb, "--no-verify")[7:], r"column 'tau' of .*LeeDalley_ephys_fx\.csv has the value inf"),
    "train --no-verify, a single class": (
        lambda sb: train(sb, "--no-verify", data=_tampered(sb, HUMAN["meta"].relpath, _one_class)),
        r"has only class 'Pvalb'; a classifier needs at least two classes"),
    "run --no-verify, fewer cells of a class than folds": (
        lambda sb: run(sb, "--no-verify", data=_tampered(sb, HUMAN["meta"].relpath, _few_lamp5)),
        r"cell\(s\) of class 'Lamp5', fewer than the 2 cross-validation folds"),
    "fetch --cells without --dandiset": (lambda sb: fetch(sb, "--cells", "1,2"), r"--cells needs --dandiset"),
    "predict --prior names a class twice": (lambda sb: predict(sb, "--prior", "Lamp5=0.5,lamp5=0.5"),
                                            r"--prior names Lamp5 twice"),
    # fault hunt 3 (notes/faults/findings3.md): the shift options of map and predict
    "map --model empty": (lambda sb: mapping(sb, "--model", ""), r"unknown --model ''"),
    "map --model svm": (lambda sb: mapping(sb, "--model", "svm"), r"unknown --model 'svm'; use one of forest"),
    "map --model transfer (a train model)": (lambda sb: mapping(sb, "--model", "transfer"), r"unknown --model 'transfer'"),
    "map --align empty": (lambda sb: mapping(sb, "--align", ""), r"unknown --align ''"),
    "map --species both": (lambda sb: ["map", "--species", "both", *mapping(sb)[3:]], r"--species must be mouse or human, got 'both'"),
    "map --prior without =": (lambda sb: mapping(sb, "--prior", "Lamp5"), r"--prior entry 'Lamp5' must look like Lamp5=0\.6"),
    "map --prior not a number": (lambda sb: mapping(sb, "--prior", "Lamp5=abc"), r"--prior value 'abc' for Lamp5 is not a number"),
    "map --prior negative": (lambda sb: mapping(sb, "--prior", "Lamp5=-0.5,Vip=1.5"), r"must be a non-negative number, got '-0\.5'"),
    "map --prior all zero": (lambda sb: mapping(sb, "--prior", "Lamp5=0,Pvalb=0,Sst=0,Vip=0"), r"--prior gives every class 0"),
    "map --prior nan": (lambda sb: mapping(sb, "--prior", "Lamp5=nan,Vip=1"), r"non-negative number, got 'nan'"),
    "map --prior separated by semicolons": (lambda sb: mapping(sb, "--prior", "Lamp5=0.5;Vip=0.5"), r"'0\.5;Vip=0\.5' for Lamp5 is not a number"),
    "predict --prior 1e400": (lambda sb: predict(sb, "--prior", "Lamp5=1e400,Vip=1"), r"non-negative number, got '1e400'"),
    "predict --prior a class the model lacks": (lambda sb: predict(sb, "--prior", "Sncg=1"), r"unknown class 'Sncg'; classes are Lamp5"),
    "map --layer and --prior": (lambda sb: mapping(sb, "--layer", "L1", "--prior", "Vip=1"), r"one of --layer, --layer-column and --prior"),
    "predict --layer not a layer": (lambda sb: predict(sb, "--layer", "L9", "--data-dir", sb.data), r"layer 'L9' is not a cortical layer"),
    "predict --layer, data dir missing": (lambda sb: predict(sb, "--layer", "L1", "--data-dir", sb.root / "nodata"), r"nodata does not exist"),
    "predict --layer, data dir a file": (lambda sb: predict(sb, "--layer", "L1", "--data-dir", sb.cells), r"cells\.csv is a file, not a folder"),
    "map --layer-column absent": (lambda sb: mapping(sb, "--layer-column", "nope"), r"--layer-column 'nope' is not a column of"),
    "map --layer-column a feature column": (lambda sb: mapping(sb, "--layer-column", "tau"), r"layer [\d.]+ is not a cortical layer"),
    # s9: the id column was "not a column"; a column empty in every row was ignored (prior-free)
    "predict --layer-column the id column": (lambda sb: predict(sb, "--layer-column", "cell_id", "--data-dir", sb.data),
                                             r"--layer-column 'cell_id' is the cell id column of .*cells\.csv"),
    "predict --layer-column empty in every row": (
        lambda sb: predict(sb, "--layer-column", "layer", "--data-dir", sb.data, input=sb.table(sb.frame.assign(layer=""))),
        r"--layer-column 'layer' of .*bad\.csv is empty \(or unknown\) in every row; fill in each cell's cortical layer"),
    "map --layer-column of unknown layers": (
        lambda sb: mapping(sb, "--layer-column", "layer", input=sb.table(sb.frame.assign(layer="L9"))), r"layer 'L9' is not a cortical layer"),
    # run --features with odd --labels tables
    "run --labels, no id in common": (lambda sb: _with_labels(sb, _labels(sb).assign(cell_id=lambda t: "x" + t["cell_id"])),
                                      r"no cell id of .*features\.parquet \(e\.g\. 'cell0'\) appears in the labels"),
    "run --labels, duplicated ids": (lambda sb: _with_labels(sb, pd.concat([_labels(sb), _labels(sb).iloc[:3]])),
                                     r"labels\.csv has duplicated id 'cell0'"),
    "run --labels, one class": (lambda sb: _with_labels(sb, _labels(sb).assign(subclass="Pvalb")), r"has only class 'Pvalb'"),
    "run --labels, header only": (lambda sb: _with_labels(sb, _labels(sb).iloc[:0]), r"labels\.csv is empty"),
    "run --labels, no label column": (lambda sb: _with_labels(sb, _labels(sb), "--label-column", "nope"), r"has no label column 'nope'"),
    "run --labels, every label empty": (lambda sb: _with_labels(sb, _labels(sb).assign(subclass=np.nan)), r"has no labels to learn from"),
    "run --labels, numbers as classes": (lambda sb: _with_labels(sb, _labels(sb).assign(subclass=np.resize([1, 2, 3], 30))),
                                         r"the labels of .* are numbers \(e\.g\. '1'\), not class names"),
    "run --labels, 40 unknown class names": (
        lambda sb: _with_labels(sb, _labels(sb, 40).assign(subclass=[f"type{i:02d}" for i in range(40)])),
        r"no cell of .* is left after QC with one of the classes .*\.\.\.\); check the labels"),
    "run --labels, no id column": (lambda sb: _with_labels(sb, _labels(sb)[["subclass"]]), r"labels\.csv has no cell id column"),
    "run --labels, UTF-16": (lambda sb: _with_labels(sb, _labels(sb), encoding="utf-16"),
                             r"labels\.csv as delimited text: it is not UTF-8 .*save it as UTF-8"),
    "run --labels a folder": (lambda sb: _with_labels(sb, None), r"labels\.csv is a folder"),
    "fetch --mirror not a URL": (lambda sb: fetch(sb)[:-1] + ["not a url"], r"--mirror 'not a url' is not an http"),
    "fetch --mirror a malformed URL": (lambda sb: fetch(sb)[:-1] + ["http://[::1"], r"is not an http"),
    "fetch from an unreachable mirror leaves no folder": (lambda sb: fetch(sb), r"cannot download .*127\.0\.0\.1:9"),
    # extract: outputs checked before any cell is read; a batch in which no cell can be read
    "extract, only an empty .nwb": (lambda sb: _extract(sb, sb.write("nwb/e.nwb", b"")),
                                    r"none of the 1 recording\(s\) could be extracted .*e\.nwb: empty file \(0 bytes\)"),
    "extract, HDF5 that is not NWB": (lambda sb: _extract(sb, _hdf5(sb)),
                                      r"none of the 1 recording\(s\) could be extracted .*not an NWB 2 file"),
    "extract --out inside the input folder": (
        lambda sb: _extract(sb, sb.write("nwb/e.nwb", b"").parent, out=sb.root / "nwb" / "f.parquet"),
        r"--out .*f\.parquet is inside the input folder"),
    "extract --out not parquet": (lambda sb: _extract(sb, sb.write("nwb/e.nwb", b""), out=sb.root / "f.csv"),
                                  r"--out .*f\.csv must name a parquet file"),
    "extract --out .": (lambda sb: _extract(sb, sb.write("nwb/e.nwb", b""), out=Path(".")),
                        r"--out \. is the current folder"),
    "extract --cache-dir is the input folder": (
        lambda sb: _extract(sb, sb.write("nwb/e.nwb", b""), "--cache-dir", sb.root / "nwb"),
        r"--cache-dir .*nwb contains the input"),
    # s8 (extract/fetch hunt): read-only folders are refused also when running as root (a probe
    # alone succeeds for root); missing folders created for a run that writes nothing are removed
    "extract --out in a read-only folder": (
        lambda sb: _extract(sb, sb.write("nwb/e.nwb", b""), out=_read_only(sb) / "f.parquet"),
        r"cannot write --out .*ro/f\.parquet: .*ro is not writable \(read-only permissions dr-xr-xr-x\)"),
    "extract --cache-dir in a read-only folder": (
        lambda sb: _extract(sb, sb.write("nwb/e.nwb", b""), "--cache-dir", _read_only(sb) / "c"),
        r"cannot write --cache-dir .*ro/c: .*ro is not writable \(read-only"),
    "extract --out in /proc": (lambda sb: _extract(sb, sb.write("nwb/e.nwb", b""), out=Path("/proc/e2t/f.parquet")),
                               r"cannot write --out /proc/e2t/f\.parquet: /proc is not writable"),
    "extract into new folders, no recording readable": (
        lambda sb: _extract(sb, sb.write("nwb/e.nwb", b""), out=sb.root / "new" / "deeper" / "f.parquet"),
        r"none of the 1 recording\(s\) could be extracted"),
    "fetch --data-dir in a read-only folder": (lambda sb: fetch(sb, data=_read_only(sb) / "data"),
                                               r"cannot write data folder .*ro/data/human_gaba_leedalley2023: "
                                               r".*ro is not writable \(read-only permissions"),
    "extract --workers 0": (lambda sb: _extract(sb, sb.write("nwb/e.nwb", b""))[:-1] + ["0"],
                            r"--workers 0 must be between 1 and 256 \(local worker processes; this machine has \d+ cores"),
    "extract --workers -1": (lambda sb: _extract(sb, sb.write("nwb/e.nwb", b""))[:-1] + ["-1"],
                             r"--workers -1 must be between 1 and 256"),
    "extract --workers 100000 (one process per cell)": (
        lambda sb: _extract(sb, sb.write("nwb/e.nwb", b""))[:-1] + ["100000"], r"--workers 100000 must be between 1 and 256"),
    "extract, one cell name in two folders": (
        lambda sb: _extract(sb, sb.write("a/c.nwb", b"").parent, sb.write("b/c.nwb", b"").parent),
        r"cell ids .* must be unique; duplicated: \['c'\] \('c': .*a/c\.nwb and .*b/c\.nwb\); rename the files"),
    "fetch --data-dir a read-only folder": (lambda sb: fetch(sb, data=_read_only(sb)),
                                            r".*ro is not writable \(read-only permissions"),
}


def _empty_path_cases() -> dict:
    """Every path option of every command given as '' (or blanks): refused, naming the option (s8).

    Before: ``Path("")`` is ``Path(".")``, so ``--data-dir ''`` read the current folder and
    ``--cache-dir ''`` wrote the cache there.
    """
    def swap(args, option, value):
        args = [str(a) for a in args]
        return args[:args.index(option) + 1] + [value] + args[args.index(option) + 2:]

    nwb = lambda sb: sb.write("nwb/e.nwb", b"")  # noqa: E731
    cases = {
        "run --data-dir": lambda sb: swap(run(sb), "--data-dir", ""),
        "run --out": lambda sb: swap(run(sb), "--out", ""),
        "run --cache-dir": lambda sb: run(sb, "--cache-dir", ""),
        "run --features": lambda sb: run(sb, "--features", ""),
        "run --labels": lambda sb: run(sb, "--labels", " "),
        "train --data-dir": lambda sb: swap(train(sb), "--data-dir", ""),
        "train --out": lambda sb: swap(train(sb), "--out", ""),
        "predict --model": lambda sb: swap(predict(sb), "--model", ""),
        "predict --input": lambda sb: swap(predict(sb), "--input", ""),
        "predict --out": lambda sb: swap(predict(sb), "--out", ""),
        "predict --column-map": lambda sb: predict(sb, "--column-map", ""),
        "predict --data-dir": lambda sb: predict(sb, "--layer", "L1", "--data-dir", ""),
        "map --input": lambda sb: swap(mapping(sb), "--input", ""),
        "map --out": lambda sb: swap(mapping(sb), "--out", "  "),
        "map --data-dir": lambda sb: swap(mapping(sb), "--data-dir", ""),
        "map --cache-dir": lambda sb: swap(mapping(sb), "--cache-dir", ""),
        "map --column-map": lambda sb: mapping(sb, "--column-map", ""),
        "fetch --data-dir": lambda sb: swap(fetch(sb), "--data-dir", ""),
        "fetch --nwb-dir": lambda sb: ["fetch", "--dandiset", "000020", "--cells", "1", "--nwb-dir", ""],
        "datasets --data-dir": lambda sb: ["datasets", "--data-dir", ""],
        "harmonise --data-dir": lambda sb: ["harmonise", "--data-dir", ""],
        "features --data-dir": lambda sb: ["features", "--species", "human", "--data-dir", ""],
        "extract input": lambda sb: _extract(sb, ""),
        "extract --out": lambda sb: _extract(sb, nwb(sb), out=""),
        "extract --cache-dir": lambda sb: _extract(sb, nwb(sb), "--cache-dir", ""),
        "extract --protocol-map": lambda sb: _extract(sb, nwb(sb), "--protocol-map", ""),
    }
    option = lambda name: name.split()[1].replace("input", "inputs", name == "extract input")  # noqa: E731
    return {f"{name} is empty": (make, rf"Invalid value for '{option(name)}'.*the value is empty")
            for name, make in cases.items()}


ARGUMENTS.update(_empty_path_cases())


def _read_only(sb):
    folder = sb.root / "ro"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    return folder


def _extract(sb, *inputs, out=None):
    return ["extract", *inputs, "-o", sb.root / "f.parquet" if out is None else out, "--workers", "1"]


def _hdf5(sb):
    import h5py

    (sb.root / "nwb").mkdir(exist_ok=True)
    with h5py.File(sb.root / "nwb" / "h.nwb", "w") as handle:
        handle.create_dataset("x", data=[1, 2])
    return sb.root / "nwb" / "h.nwb"


# ------------------------------------------------------------------ the test

CASES: dict[str, Callable] = {}
for _name, (_make, _pattern) in TABLES.items():
    CASES[f"predict: {_name}"] = _table_case(_make, _pattern, "predict")
    CASES[f"map: {_name}"] = _table_case(_make, _pattern, "map")
for _name, (_make, _pattern) in COLUMN_MAPS.items():
    CASES[f"predict: {_name}"] = _map_case(_make, _pattern, "predict")
    CASES[f"map: {_name}"] = _map_case(_make, _pattern, "map")
for _group in (MODELS, OUTPUTS, ARGUMENTS, FEATURE_TABLES):
    for _name, (_make, _pattern) in _group.items():
        CASES[_name] = (lambda make, pattern: lambda sb: (make(sb), pattern))(_make, _pattern)


def test_the_suite_is_large_enough():
    assert len(CASES) >= 100


@pytest.mark.parametrize("name", list(CASES))
def test_fault_fails_cleanly_and_changes_nothing(name, cells, tiny_model, data_dir, tmp_path,
                                                 monkeypatch, capsys):
    root = tmp_path / "sandbox"
    root.mkdir()
    (root / "work").mkdir()
    monkeypatch.chdir(root / "work")  # `.` and `..` are the sandbox's
    monkeypatch.setenv("HOME", str(root / "home"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))  # its font cache is not ours
    monkeypatch.delenv("EPHYS2TX_CACHE", raising=False)
    import pynwb  # noqa: F401  (its import writes pynwb's own type cache under $HOME: not ours)
    sb = Sandbox(root=root, data=data_dir, model=Path(shutil.copytree(tiny_model, root / "model")),
                 cells=root / "cells.csv", frame=cells)
    cells.to_csv(sb.cells, index=False)
    args, pattern = CASES[name](sb)
    before = snapshot(root)
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    assert code == 2, text
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    assert snapshot(root) == before  # nothing created, changed or deleted


# ------------------------------------------------------------------ two processes, one output

_HOLD = ("import signal, sys, time\nfrom ephys2tx.safety import claim_output\n"
         "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # exits, giving the claim back\n"
         "claim_output(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(120)\n")

CONCURRENT = {  # command -> (arguments, the output the other process is writing)
    "run": lambda sb: (run(sb), sb.root / "results"),
    "train": lambda sb: (train(sb), sb.root / "model_out"),
    "map": lambda sb: (mapping(sb), sb.root / "mapped"),
    "predict": lambda sb: (predict(sb, out=sb.root / "p.csv"), sb.root / "p.csv"),
    "extract": lambda sb: (_extract(sb, _hdf5(sb)), sb.root / "f.parquet"),
}


@pytest.mark.parametrize("command", list(CONCURRENT))
def test_an_output_another_process_is_writing_is_refused(command, cells, tiny_model, data_dir,
                                                         tmp_path, monkeypatch, capsys):
    """A second command on the same output exits 2 at once; the first one's files are untouched."""
    import subprocess
    import sys

    root = tmp_path / "sandbox"
    root.mkdir()
    monkeypatch.setenv("HOME", str(root / "home"))
    monkeypatch.delenv("EPHYS2TX_CACHE", raising=False)
    sb = Sandbox(root=root, data=data_dir, model=Path(shutil.copytree(tiny_model, root / "model")),
                 cells=root / "cells.csv", frame=cells)
    cells.to_csv(sb.cells, index=False)
    args, target = CONCURRENT[command](sb)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(target)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(root)
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        assert code == 2, captured.err
        assert captured.out == ""
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert re.search(rf"another ephys2tx process \(pid {holder.pid}\) is writing .*"
                         rf"{re.escape(target.name)} right now", lines[0]), lines[0]
        assert snapshot(root) == before
    finally:
        holder.terminate()
        holder.wait()


def test_two_commands_in_threads_of_one_process_one_writes_the_other_is_refused(cells, tiny_model, tmp_path,
                                                                                 monkeypatch, capsys):
    """Two `predict -o p.csv` run as threads of one process (the claim was per process: the second
    passed the check as "already held" and both wrote). The first is held just before its write until
    the second has ended, so no timing decides: the second exits 2 with one line and writes nothing;
    the first writes the whole table; no claim is left."""
    import threading

    from ephys2tx import workflows
    from ephys2tx.safety import _CLAIMS, lock_path

    cells.to_csv(tmp_path / "cells.csv", index=False)
    out = tmp_path / "p.csv"
    args = ["predict", "-m", str(tiny_model), "-i", str(tmp_path / "cells.csv"), "-o", str(out)]
    writing, second_done, real = threading.Event(), threading.Event(), workflows.write_csv

    def held_write(frame, path):
        assert not writing.is_set(), "both commands reached their write"
        writing.set()
        assert second_done.wait(120)
        return real(frame, path)

    monkeypatch.setattr(workflows, "write_csv", held_write)
    codes = {}
    first = threading.Thread(target=lambda: codes.setdefault("first", main(args)))
    first.start()
    try:
        assert writing.wait(120), "the first predict never reached its write"
        capsys.readouterr()
        codes["second"] = main(args)
        err = capsys.readouterr().err
        assert sorted(tmp_path.iterdir()) == [tmp_path / "cells.csv"]  # nothing written yet, by either
    finally:
        second_done.set()
        first.join(120)
    assert codes == {"first": 0, "second": 2}, err
    assert err.strip().splitlines() == [
        f"error: another ephys2tx command in this process (pid {os.getpid()}) is writing --out {out} right "
        "now; wait until it has finished, or choose another path."]
    assert len(pd.read_csv(out)) == len(cells)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "cells.csv", out]
    assert not _CLAIMS and not lock_path(out).exists()


def test_two_predicts_on_one_output_the_second_is_refused(cells, tiny_model, tmp_path):
    """Real processes: the second `predict -o p.csv` exits 2 while the first writes p.csv.

    The first process stops just before its write (it says so on stdout and waits for a line on
    stdin), so no timing decides which one holds the output (the old test relied on 30,000 rows
    keeping the first busy long enough)."""
    import subprocess
    import sys

    from ephys2tx.safety import lock_path

    cells.to_csv(tmp_path / "cells.csv", index=False)
    out = tmp_path / "p.csv"
    args = ["predict", "-m", str(tiny_model), "-i", str(tmp_path / "cells.csv"), "-o", str(out)]
    held = ("import sys\nfrom ephys2tx import workflows\nfrom ephys2tx.cli import main\n"
            "real = workflows.write_csv\n"
            "def held(frame, path):\n    print('writing', flush=True)\n    sys.stdin.readline()\n"
            "    return real(frame, path)\n"
            "workflows.write_csv = held\nsys.exit(main(sys.argv[1:]))\n")
    first = subprocess.Popen([sys.executable, "-c", held, *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "writing", first.stderr.read()
        second = subprocess.run([sys.executable, "-m", "ephys2tx.cli", *args], capture_output=True,
                                text=True, timeout=120)
        assert sorted(tmp_path.iterdir()) == [tmp_path / "cells.csv"]  # nothing written by the second
        out_first, err = first.communicate("go\n", timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    # the message names the first process's pid: it was refused while the first held the output
    assert second.returncode == 2, second.stderr
    assert second.stdout == ""
    assert second.stderr.strip().splitlines() == [
        f"error: another ephys2tx process (pid {first.pid}) is writing --out {out} right now; wait "
        "until it has finished, or choose another path."]
    assert first.returncode == 0, err
    assert len(pd.read_csv(out)) == len(cells)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "cells.csv", out]
    assert out.read_text().startswith('"cell_id","predicted_subclass"')
    assert not lock_path(out).exists()


# ------------------------------------------------------------------ valid but unusual tables (findings4.md)

UNUSUAL_TABLES = {  # name -> (write the table, the ids predict must write back)
    "headers in capitals and ids with leading zeros": (
        lambda frame, root: frame.rename(columns=lambda c: c if c == "cell_id" else c.upper())
        .assign(cell_id=[f"{i:03d}" for i in range(len(frame))]).to_csv(root / "t.csv", index=False)
        or root / "t.csv", [f"{i:03d}" for i in range(30)]),
    "Excel table below a title row, spreadsheet blank rows": (
        lambda frame, root: _excel_below_title(frame, root), None),
    "CSV with blank lines first and ',,,' rows": (lambda frame, root: _blank_lines_and_rows(frame, root), None),
}


def _blank_lines_and_rows(frame, root):
    path = root / "t.csv"
    path.write_text("\n\n" + frame.to_csv(index=False) + "," * 9 + "\n" + "," * 9 + "\n")
    return path


def _excel_below_title(frame, root):
    path = root / "t.xlsx"
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame({"Recorded on rig 2": []}).to_excel(writer, index=False)
        frame.to_excel(writer, index=False, startrow=3)
    return path


@pytest.mark.parametrize("name", list(UNUSUAL_TABLES))
def test_unusual_but_valid_tables_predict_like_the_plain_table(name, cells, tiny_model, tmp_path, capsys):
    from conftest import run_cli

    write, ids = UNUSUAL_TABLES[name]
    plain = tmp_path / "plain.csv"
    cells.to_csv(plain, index=False)
    code, _, err = run_cli(["predict", "--model", tiny_model, "--input", plain, "--out",
                            tmp_path / "want.csv"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["predict", "--model", tiny_model, "--input", write(cells, tmp_path),
                            "--out", tmp_path / "got.csv"], capsys)
    assert code == 0, err
    want = pd.read_csv(tmp_path / "want.csv", dtype=str)
    got = pd.read_csv(tmp_path / "got.csv", dtype=str)
    assert list(got["cell_id"]) == (ids or list(want["cell_id"]))
    pd.testing.assert_frame_equal(got.drop(columns="cell_id"), want.drop(columns="cell_id"))


# ------------------------------------------------------------------ a closed output pipe (s8)


def _with_closed_stdout(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``python -m ephys2tx.cli ARGS`` with a stdout pipe whose reader is already gone."""
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # `| head -1` after its line: every write to stdout fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "ephys2tx.cli", *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300, cwd=cwd)
    finally:
        os.close(write)
    return done.returncode, done.stderr


@pytest.mark.parametrize("args", [
    ["--help"],  # rich, through typer's help
    ["--version"],  # typer.echo
    ["datasets", "--data-dir", "{data}"],  # a rich console on stdout
    ["features", "--species", "human", "--data-dir", "{data}", "--csv"],
])
def test_a_closed_stdout_pipe_ends_the_command_quietly(args, data_dir, tmp_path):
    """Before: exit code 1 (rich's and typer's broken-pipe exits), or the error line of an OSError.
    Now: nothing on stderr (no traceback, no "Exception ignored"), exit code 141 as `yes | head`."""
    code, err = _with_closed_stdout([a.format(data=data_dir) for a in args], tmp_path)
    assert code == 141, err
    assert err == ""


def test_a_closed_pipe_after_predict_has_written_its_table(cells, tiny_model, tmp_path):
    """The table is complete (it is written before the summary line); the exit is quiet."""
    cells.to_csv(tmp_path / "cells.csv", index=False)
    code, err = _with_closed_stdout(["predict", "-m", str(tiny_model), "-i", str(tmp_path / "cells.csv"),
                                     "-o", str(tmp_path / "p.csv")], tmp_path)
    assert code == 141, err
    assert not re.search(r"Traceback|Exception ignored|BrokenPipe|error", err), err
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(cells)


@pytest.mark.parametrize("stderr", ["closed", "full", "closed pipe"])
def test_an_error_with_stderr_closed_full_or_unread_still_exits_2(stderr, tmp_path):
    """Before: exit code 1 (a traceback about the unwritable error line, or `None.flush()` at exit,
    or rich's exit on a broken pipe). The error line cannot be shown; the exit code still says 2."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "ephys2tx.cli", "predict", "-m", str(tmp_path / "none"), "-i",
            str(tmp_path / "c.csv"), "-o", str(tmp_path / "p.csv")]
    if stderr == "closed":
        done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
                              preexec_fn=lambda: os.close(2))
    elif stderr == "full":
        with open("/dev/full", "w") as full:
            done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=full, timeout=120)
    else:
        read, write = os.pipe()
        os.close(read)
        try:
            done = subprocess.run(args, stdout=write, stderr=write, timeout=120)
        finally:
            os.close(write)
    assert done.returncode == 2
    assert not (tmp_path / "p.csv").exists()


def test_run_on_features_with_a_column_no_cell_has(tmp_path, monkeypatch, capsys):
    """`run --features` with a feature empty in every cell and boosted trees: was an internal
    error (exit 1, scikit-learn's binning); the empty feature is now a constant the trees ignore."""
    from types import SimpleNamespace

    from conftest import run_cli

    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    sb = SimpleNamespace(root=tmp_path)
    path = _feature_table(sb, lambda t: t.assign(a_0=np.nan, subclass=np.resize(["Pvalb", "Sst"], len(t))),
                          n=24)
    code, out, err = run_cli(["run", "--features", path, "--label-column", "subclass", "--species",
                              "mouse", "--model", "hgb", "--quick", "--no-cache", "--jobs", "1",
                              "--out", tmp_path / "results"], capsys)
    assert code == 0, err
    assert "hgb" in out and (tmp_path / "results" / "metrics.json").is_file()
