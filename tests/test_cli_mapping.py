"""``ephys2tx train / predict / map`` through the command line, on the real tables.

Every bad input of issue 5 exits with code 2, prints exactly one line
(``error: ...``) on stderr and nothing on stdout, shows no traceback and
leaves no output file (nor a temporary one) behind. All-NaN rows are not an
error: they are reported and kept, without a prediction.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ephys2tx import CLASSES
from ephys2tx.cli import main

from conftest import run_cli as _run
from ephys2tx.mapping import load_reference_model

#: A few human features (IPFX names) for the ``map`` queries: a small, fast reference model.
MAP_FEATURES = ["tau", "input_resistance", "v_baseline", "sag", "rheobase_i", "width_rheo",
                "upstroke_downstroke_ratio_rheo", "threshold_v_rheo", "fi_fit_slope"]


@pytest.fixture(scope="module")
def human_cells(human):
    """40 real human cells in IPFX naming, ``cell_id`` first (the predict input)."""
    cells = human.features.iloc[::17].iloc[:40]
    return cells.rename_axis("cell_id").reset_index()


@pytest.fixture(scope="module")
def model_dir(human_forest_dir):
    return human_forest_dir


# ------------------------------------------------------------------ bad input: table and column map


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def _yaml_map(tmp_path: Path, columns: list[dict]) -> Path:
    path = tmp_path / "map.yaml"
    path.write_text(yaml.safe_dump({"name": "lab", "columns": columns}))
    return path


def _empty(frame, tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text("")
    return path, []


def _header_only(frame, tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text(",".join(frame.columns) + "\n")
    return path, []


def _no_id(frame, tmp_path):
    return _write(frame.drop(columns=["cell_id"]), tmp_path / "cells.csv"), []


def _duplicated_ids(frame, tmp_path):
    dup = frame.copy()
    dup.loc[3, "cell_id"] = dup.loc[0, "cell_id"]
    return _write(dup, tmp_path / "cells.csv"), []


def _map_missing_column(frame, tmp_path):
    cmap = _yaml_map(tmp_path, [{"column": "sag", "name": "sag", "unit": "1"},
                                {"column": "Tau (ms)", "name": "tau", "unit": "ms"}])
    return _write(frame, tmp_path / "cells.csv"), ["--column-map", cmap]


def _unknown_canonical(frame, tmp_path):
    cmap = _yaml_map(tmp_path, [{"column": "tau", "name": "tau_m", "unit": "s"}])
    return _write(frame, tmp_path / "cells.csv"), ["--column-map", cmap]


def _unit_dimension(frame, tmp_path):
    cmap = _yaml_map(tmp_path, [{"column": "tau", "name": "tau", "unit": "pA"}])
    return _write(frame, tmp_path / "cells.csv"), ["--column-map", cmap]


def _values_in_ms(frame, tmp_path):
    """tau given in ms under its IPFX name, which is in seconds."""
    return _write(frame.assign(tau=frame["tau"] * 1000), tmp_path / "cells.csv"), []


def _non_numeric(frame, tmp_path):
    bad = frame.astype({"sag": object})
    bad.loc[2, "sag"] = "n/a?"
    return _write(bad, tmp_path / "cells.csv"), []


def _bad_yaml(frame, tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("columns: [unclosed")
    return _write(frame, tmp_path / "cells.csv"), ["--column-map", path]


def _missing_input(frame, tmp_path):
    return tmp_path / "nope.csv", []


TABLE_CASES = {
    "empty table": (_empty, r"is empty"),
    "header only": (_header_only, r"is empty"),
    "no id column": (_no_id, r"no cell id column"),
    "duplicated ids": (_duplicated_ids, r"duplicated id '\S+' \(data rows 1, 4\); 1 id is repeated, on 2 rows in all"),
    "map names a missing column": (_map_missing_column, r"names column 'Tau \(ms\)'"),
    "unknown canonical name": (_unknown_canonical, r"unknown canonical feature name 'tau_m'"),
    "unit dimension mismatch": (_unit_dimension, r"unit 'pA' \(current\) cannot be converted to 's'"),
    "unit conversion mismatch": (_values_in_ms, r"column 'tau' .*multiply by 0\.001 .*unit: ms.*--force"),
    "non-numeric value": (_non_numeric, r"column 'sag' .*non-numeric value 'n/a\?'"),
    "invalid column map": (_bad_yaml, r"not valid YAML"),
    "missing input": (_missing_input, r"does not exist"),
}


def _command(command: str, input_path, out: Path, model_dir: Path, data_dir: Path, tmp_path: Path):
    if command == "predict":
        return ["predict", "--model", model_dir, "--input", input_path, "--out", out]
    return ["map", "--species", "human", "--input", input_path, "--out", out,
            "--data-dir", data_dir, "--cache-dir", tmp_path / "cache"]


def _assert_clean_failure(code, out_text, err_text, pattern):
    assert code == 2, err_text
    assert "Traceback" not in out_text + err_text
    assert out_text == ""
    lines = [line for line in err_text.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert re.search(pattern, lines[0]), lines[0]


def _assert_nothing_written(folder: Path):
    assert not folder.exists() or list(folder.iterdir()) == [], list(folder.iterdir())


@pytest.mark.parametrize("command", ["predict", "map"])
@pytest.mark.parametrize("case", list(TABLE_CASES))
def test_bad_table_or_column_map(case, command, human_cells, model_dir, data_dir, tmp_path, capsys):
    build, pattern = TABLE_CASES[case]
    input_path, extra = build(human_cells[["cell_id", *MAP_FEATURES]], tmp_path)
    out_dir = tmp_path / "out"
    out = out_dir / ("predictions.csv" if command == "predict" else "mapping")
    args = _command(command, input_path, out, model_dir, data_dir, tmp_path) + extra
    _assert_clean_failure(*_run(args, capsys), pattern)
    _assert_nothing_written(out_dir)


# ------------------------------------------------------------------ bad input: model directory


def _edit_json(model: Path, **changes):
    meta = json.loads((model / "model.json").read_text())
    meta.update(changes)
    (model / "model.json").write_text(json.dumps(meta))


def _flip_weights_byte(model: Path):
    weights = model / "model.skops"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))


MODEL_CASES = {
    "incompatible package version": (lambda m: _edit_json(m, package_version="99.0.0"),
                                     r"saved by ephys2tx 99\.0\.0, incompatible .*major version"),
    "incompatible format version": (lambda m: _edit_json(m, format_version=99),
                                    r"format_version 99"),
    "corrupted weights": (_flip_weights_byte, r"model\.skops is corrupted: sha256"),
    "missing weights": (lambda m: (m / "model.skops").unlink(), r"model\.skops is missing"),
    "not a model directory": (lambda m: (m / "model.json").unlink(), r"model\.json is missing"),
    "model without calibration": (lambda m: _edit_json(m, extra={}), r"without calibration/OOD"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_directory(case, model_dir, human_cells, tmp_path, capsys):
    import shutil

    broken = Path(shutil.copytree(model_dir, tmp_path / "model"))
    breaker, pattern = MODEL_CASES[case]
    breaker(broken)
    table = _write(human_cells, tmp_path / "cells.csv")
    out_dir = tmp_path / "out"
    args = ["predict", "--model", broken, "--input", table, "--out", out_dir / "p.csv"]
    _assert_clean_failure(*_run(args, capsys), pattern)
    _assert_nothing_written(out_dir)


def test_missing_model_directory(human_cells, tmp_path, capsys):
    table = _write(human_cells, tmp_path / "cells.csv")
    args = ["predict", "--model", tmp_path / "nope", "--input", table, "--out", tmp_path / "p.csv"]
    _assert_clean_failure(*_run(args, capsys), r"model directory .*nope does not exist")
    assert not (tmp_path / "p.csv").exists()


# ------------------------------------------------------------------ bad input: outputs and arguments


@pytest.mark.parametrize("command", ["predict", "map", "train"])
def test_existing_output_needs_overwrite(command, human_cells, model_dir, data_dir, tmp_path, capsys):
    table = _write(human_cells[["cell_id", *MAP_FEATURES]], tmp_path / "cells.csv")
    out = tmp_path / "out" / "existing"
    out.parent.mkdir()
    if command == "predict":
        out.write_text("old")
        args = _command("predict", table, out, model_dir, data_dir, tmp_path)
    elif command == "map":
        out.mkdir()
        (out / "old.txt").write_text("old")
        args = _command("map", table, out, model_dir, data_dir, tmp_path)
    else:
        out.mkdir()
        (out / "old.txt").write_text("old")
        args = ["train", "--species", "human", "--data-dir", data_dir, "--out", out]
    _assert_clean_failure(*_run(args, capsys), r"already exists; .*--overwrite")
    assert [p.name for p in out.parent.iterdir()] == ["existing"]  # untouched, no temp files
    assert (out if command == "predict" else out / "old.txt").read_text() == "old"


@pytest.mark.parametrize("args, pattern", [
    (["train", "--species", "cat"], r"unknown species 'cat'"),
    (["train", "--model", "svm"], r"unknown model 'svm'"),
    (["train", "--species", "mouse", "--model", "transfer"], r"transfer predicts human .*--species human"),
    (["train", "--calibration", "platt"], r"unknown calibration 'platt'"),
    (["map", "--species", "both", "--input", "x.csv"], r"map --species must be mouse or human"),
    (["map", "--species", "human", "--input", "x.csv", "--align", "magic"], r"unknown --align 'magic'"),
])
def test_bad_arguments(args, pattern, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    _assert_clean_failure(*_run([*args, "--data-dir", data_dir, "--out", out], capsys), pattern)
    assert not out.exists()


# ------------------------------------------------------------------ not errors: --force, all-NaN rows


@pytest.mark.parametrize("command", ["predict", "map"])
def test_force_continues_past_a_unit_mismatch(command, human_cells, model_dir, data_dir, tmp_path, capsys):
    table, _ = _values_in_ms(human_cells[["cell_id", *MAP_FEATURES]], tmp_path)
    out = tmp_path / ("p.csv" if command == "predict" else "mapping")
    args = _command(command, table, out, model_dir, data_dir, tmp_path) + ["--force"]
    code, _, stderr = _run(args, capsys)
    assert code == 0, stderr
    assert re.search(r"warning: continuing \(--force\): column 'tau' .*multiply by 0\.001", stderr)
    pred = pd.read_csv(out if command == "predict" else out / "predictions.csv")
    assert len(pred) == len(human_cells)


@pytest.mark.parametrize("command", ["predict", "map"])
def test_all_nan_rows_are_reported_and_kept_without_prediction(command, human_cells, model_dir,
                                                               data_dir, tmp_path, capsys):
    frame = human_cells[["cell_id", *MAP_FEATURES]].copy()
    empty_rows = [2, 7]
    frame.loc[empty_rows, MAP_FEATURES] = np.nan
    table = _write(frame, tmp_path / "cells.csv")
    out = tmp_path / ("p.csv" if command == "predict" else "mapping")
    code, _, stderr = _run(_command(command, table, out, model_dir, data_dir, tmp_path), capsys)
    assert code == 0, stderr
    assert f"warning: {len(empty_rows)} cell(s) have no value for any model feature" in stderr
    pred = pd.read_csv(out if command == "predict" else out / "predictions.csv",
                       dtype={"cell_id": str, "predicted_subclass": str}, keep_default_na=False,
                       na_values=[""])
    assert pred["cell_id"].tolist() == frame["cell_id"].astype(str).tolist()  # all ids, same order
    missing = pred.index.isin(empty_rows)
    assert pred.loc[missing, ["predicted_subclass", "confidence", "ood_flag"]].isna().all().all()
    assert pred.loc[~missing, "predicted_subclass"].isin(CLASSES).all()
    probs = pred[[f"prob_{c}" for c in CLASSES]]
    assert probs[missing].isna().all().all()
    np.testing.assert_allclose(probs[~missing].sum(axis=1), 1.0, rtol=1e-6)


def test_overwrite_replaces_the_output(human_cells, model_dir, tmp_path, capsys):
    """--overwrite replaces an earlier predictions table, never a file ephys2tx did not write."""
    table = _write(human_cells, tmp_path / "cells.csv")
    out = tmp_path / "p.csv"
    out.write_text("old")
    args = ["predict", "--model", model_dir, "--input", table, "--out", out, "--overwrite"]
    _assert_clean_failure(*_run(args, capsys), r"not written by ephys2tx predict")
    assert out.read_text() == "old"
    _write(human_cells.head(3).assign(predicted_subclass="Sst", confidence=1.0, ood_score=0.0,
                                      ood_flag=False, n_features=1), out)
    code, _, stderr = _run(args, capsys)
    assert code == 0, stderr
    assert pd.read_csv(out, dtype={"cell_id": str})["cell_id"].tolist() == human_cells["cell_id"].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.csv", "p.csv"]


# ------------------------------------------------------------------ round trips through the CLI


def test_train_then_predict_matches_the_library(model_dir, human, human_cells, tmp_path, capsys):
    """train -> save -> load -> predict on the real human table, Parquet in, CSV out."""
    table = tmp_path / "cells.parquet"
    human_cells.to_parquet(table)
    out = tmp_path / "predictions.csv"
    # --align none: the model's own calibrated probabilities (auto may re-estimate the class mix)
    code, stdout, stderr = _run(["predict", "--model", model_dir, "--input", table, "--out", out,
                                 "--align", "none"], capsys)
    assert code == 0, stderr
    assert f"{len(human_cells)}/{len(human_cells)} cells predicted" in stdout
    pred = pd.read_csv(out, dtype={"cell_id": str}, float_precision="round_trip")
    expected = load_reference_model(model_dir).predict_frame(
        human_cells.set_index("cell_id").rename(index=str))
    assert pred["cell_id"].tolist() == list(expected.index)
    assert pred["predicted_subclass"].tolist() == expected["predicted_subclass"].tolist()
    cols = ["confidence", *[f"prob_{c}" for c in CLASSES], "ood_score"]
    # full precision in the CSV; rtol: a parallel forest sums its trees in varying order (last ulp)
    np.testing.assert_allclose(pred[cols].to_numpy(), expected[cols].to_numpy(), rtol=1e-13)
    assert pred["ood_flag"].tolist() == expected["ood_flag"].astype(bool).tolist()
    labels = human.labels.loc[human_cells["cell_id"]].to_numpy()
    assert (pred["predicted_subclass"].to_numpy() == labels).mean() > 0.8  # cells seen in training
    meta = json.loads((model_dir / "model.json").read_text())
    assert set(meta["training_checksums"]) == set(human.checksums)
    record = meta["extra"]["mapping"]["record"]
    assert record["n_cells"] == human.n_cells and 0.4 < record["cv"]["macro_f1"] <= 1.0


def test_mouse_model_predicts_the_allen_table_through_the_shipped_map(data_dir, tmp_path, capsys):
    """A mouse model predicts cells given in Allen Cell Types naming, units and ids kept."""
    model = tmp_path / "mouse"
    assert main(["train", "--species", "mouse", "--n-estimators", "10", "--n-splits", "3",
                 "--data-dir", str(data_dir), "--out", str(model)]) == 0
    root = data_dir / "mouse_visp_gouwens2020"
    meta = pd.read_csv(root / "VISp_Viewer_meta.csv")
    table = pd.read_csv(root / "VISp_Viewer_ephys.csv").merge(
        meta[["Cell ID", "tau", "T type subclass"]], on="Cell ID").sample(200, random_state=1)
    truth = table.pop("T type subclass").str.replace(" interneuron", "").to_numpy()
    query = tmp_path / "visp.xlsx"
    table.to_excel(query, index=False)
    out = tmp_path / "pred.csv"
    code, _, stderr = _run(["predict", "--model", model, "--input", query, "--column-map",
                            "allen_celltypes", "--out", out], capsys)
    assert code == 0, stderr
    pred = pd.read_csv(out)
    assert pred["Cell ID"].tolist() == table["Cell ID"].tolist()
    known = np.isin(truth, CLASSES)
    assert (pred["predicted_subclass"].to_numpy()[known] == truth[known]).mean() > 0.8


def test_column_map_names_the_id_column(human_cells, model_dir, tmp_path, capsys):
    """A user map with ``id_column``, units other than IPFX's, a sign flip and an offset."""
    frame = pd.DataFrame({"Neuron": [f"n{i}" for i in range(len(human_cells))],
                          "name": "same for all",  # would be taken as the id without the map
                          "Tau (ms)": human_cells["tau"] * 1000,
                          "AHP (mV)": -human_cells["fast_trough_deltav_rheo"],
                          "Vrest (V)": (human_cells["v_baseline"] - 2.0) / 1000})
    table = _write(frame, tmp_path / "cells.csv")
    cmap = tmp_path / "map.yaml"
    cmap.write_text(yaml.safe_dump({"name": "lab", "id_column": "Neuron", "columns": [
        {"column": "Tau (ms)", "name": "tau", "unit": "ms"},
        {"column": "AHP (mV)", "name": "fast_trough_deltav_rheo", "unit": "mV", "sign": -1},
        {"column": "Vrest (V)", "name": "v_baseline", "unit": "V", "offset": 2.0}]}))
    out = tmp_path / "p.csv"
    code, _, stderr = _run(["predict", "--model", model_dir, "--input", table, "--column-map", cmap,
                            "--out", out, "--align", "none"], capsys)
    assert code == 0, stderr
    assert "warning: 90 of the model's 93 features are absent" in stderr
    pred = pd.read_csv(out, float_precision="round_trip")
    assert pred["Neuron"].tolist() == frame["Neuron"].tolist()
    model = load_reference_model(model_dir)
    canonical = human_cells.set_index("cell_id")[["tau", "fast_trough_deltav_rheo", "v_baseline"]]
    expected = model.predict_frame(canonical)
    assert pred["predicted_subclass"].tolist() == expected["predicted_subclass"].tolist()
    np.testing.assert_allclose(pred["confidence"], expected["confidence"], rtol=1e-9)


def test_error_line_keeps_brackets_of_user_column_names(human_cells, model_dir, tmp_path, capsys):
    frame = pd.DataFrame({"cell_id": human_cells["cell_id"], "Tau [ms]": human_cells["tau"] * 1000})
    table = _write(frame, tmp_path / "cells.csv")
    cmap = _yaml_map(tmp_path, [{"column": "Tau [ms]", "name": "tau", "unit": "s"}])
    args = ["predict", "--model", model_dir, "--input", table, "--column-map", cmap,
            "--out", tmp_path / "p.csv"]
    _assert_clean_failure(*_run(args, capsys), r"column 'Tau \[ms\]' .*multiply by 0\.001")


def test_a_non_strict_user_map_says_which_entries_it_skipped(human_cells, model_dir, tmp_path, capsys):
    """``strict: false`` skips the entries whose column the table lacks: no longer silently (fault
    hunt 7, notes/s7/faults1.md); a name differing only in case is still read (``Sag``)."""
    table = _write(human_cells[["cell_id", *MAP_FEATURES]], tmp_path / "cells.csv")
    cmap = tmp_path / "map.yaml"
    cmap.write_text("strict: false\ncolumns:\n  - {column: tau, name: tau, unit: s}\n"
                    "  - {column: Sag, name: sag, unit: '1'}\n"
                    "  - {column: v_baseline, name: v_baseline, unit: mV, minus: v_rest}\n"
                    "  - {column: Rin, name: input_resistance, unit: MOhm}\n")
    out = tmp_path / "p.csv"
    code, _, stderr = _run(["predict", "--model", model_dir, "--input", table, "--column-map", cmap,
                            "--out", out, "--align", "none"], capsys)
    assert code == 0, stderr
    assert re.search(r"warning: column map .*map\.yaml \(strict: false\): 2 entries skipped, the table lacks "
                     r"the column: v_baseline \('v_rest'\), input_resistance \('Rin'\); fix the names",
                     stderr), stderr
    assert "sag (" not in stderr.split("skipped")[1].split(";")[0]
    assert pd.read_csv(out)["n_features"].max() == 2  # tau and sag


def test_cells_an_expr_makes_missing_are_reported(human_cells, model_dir, tmp_path, capsys):
    frame = human_cells[["cell_id", *MAP_FEATURES]]
    table = _write(frame, tmp_path / "cells.csv")
    cut = float(frame["fi_fit_slope"].quantile(0.2))
    n_lost = int((frame["fi_fit_slope"] < cut).sum())
    cmap = _yaml_map(tmp_path, [{"column": "tau", "name": "tau", "unit": "s"},
                                {"column": "fi_fit_slope", "name": "fi_fit_slope", "unit": "Hz/pA",
                                 "expr": f"sqrt(x - {cut!r}) + {cut!r}"}])
    code, _, stderr = _run(["predict", "--model", model_dir, "--input", table, "--column-map", cmap,
                            "--out", tmp_path / "p.csv", "--align", "none"], capsys)
    assert code == 0, stderr
    assert n_lost > 0 and re.search(rf"warning: column map .*map\.yaml, column 'fi_fit_slope': expr .* gives no "
                                    rf"finite value for {n_lost} of {len(frame)} cells of .*cells\.csv", stderr), stderr


def test_map_help_lists_every_align_method(capsys):
    """``map --help`` names every ``--align`` value that ``map`` accepts."""
    from ephys2tx.models.shift_adapt import ALIGN_METHODS

    code, out, _ = _run(["map", "--help"], capsys)
    assert code == 0
    text = re.sub(r"[\s│]+", " ", out)
    for method in ALIGN_METHODS:
        assert re.search(rf"\b{re.escape(method)}\b", text), method


@pytest.mark.parametrize("form", ["semicolon_csv", "xlsx"])
def test_a_lab_export_keeps_its_ids_and_values(form, human_cells, model_dir, tmp_path, capsys):
    """A spreadsheet's CSV in a decimal-comma locale (`;`, `0,012`, a BOM, CRLF) was refused; a
    workbook's text ids ('0042') came out as numbers (42). Both now predict as the same cells in
    a comma CSV do, with the ids exactly as written."""
    frame = human_cells.assign(cell_id=[f"{i:04d}" for i in range(len(human_cells))])
    plain = tmp_path / "cells.csv"
    frame.to_csv(plain, index=False)
    if form == "xlsx":
        lab = tmp_path / "lab.xlsx"
        frame.to_excel(lab, index=False)
    else:
        lab = tmp_path / "lab.csv"
        frame.to_csv(lab, sep=";", decimal=",", index=False, encoding="utf-8-sig", lineterminator="\r\n")
    outs = []
    for path in (plain, lab):
        out = tmp_path / f"p_{path.suffix[1:]}_{len(outs)}.csv"
        code, _, stderr = _run(["predict", "--model", model_dir, "--input", path, "--column-map", "ipfx",
                                "--out", out, "--align", "none"], capsys)
        assert code == 0, stderr
        outs.append(pd.read_csv(out, dtype={"cell_id": str}))
    assert outs[1]["cell_id"].tolist() == frame["cell_id"].tolist()  # '0000', '0001', ...
    assert outs[1]["predicted_subclass"].tolist() == outs[0]["predicted_subclass"].tolist()
    np.testing.assert_allclose(outs[1]["confidence"], outs[0]["confidence"], rtol=1e-9)
