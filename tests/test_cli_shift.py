"""``map`` and ``predict`` under shift through the command line: alarm, --align, --layer, --prior, features."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from ephys2tx import CLASSES

from conftest import run_cli as _run

FEATURES = ["tau", "input_resistance", "v_baseline", "sag", "rheobase_i", "width_rheo",
            "upstroke_downstroke_ratio_rheo", "threshold_v_rheo", "fi_fit_slope", "peak_deltav_rheo"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def cells(human, tmp_path_factory):
    """120 real human cells in IPFX names, with their layer column."""
    rows = human.features.iloc[::5].iloc[:120][FEATURES]
    table = rows.rename_axis("cell_id").reset_index()
    table["layer"] = human.metadata.loc[rows.index, "Cortical_layer"].astype(str).to_numpy()
    path = tmp_path_factory.mktemp("q") / "cells.csv"
    table.to_csv(path, index=False)
    return path, table


def _map(args, cells, cache, data_dir, tmp_path, capsys, name="out"):
    path, _ = cells
    return _run(["map", "--input", path, "--species", "human", "--column-map", "ipfx",
                 "--data-dir", data_dir, "--cache-dir", cache, "--out", tmp_path / name, *args], capsys)


def test_default_map_runs_the_alarm_first_and_auto(cells, cache, data_dir, tmp_path, capsys):
    code, out, err = _map([], cells, cache, data_dir, tmp_path, capsys)
    assert code == 0, err
    assert "--align auto chose" in err and "SHIFT ALARM" not in err
    report = (tmp_path / "out" / "report.md").read_text()
    first_section = report.split("\n## ")[1]
    assert first_section.startswith("Shift check")
    assert "## Shift handling" in report
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert set(pred["predicted_subclass"]) <= set(CLASSES)
    np.testing.assert_allclose(pred[[f"prob_{c}" for c in CLASSES]].sum(axis=1), 1.0, atol=1e-6)


def test_a_rig_shift_fires_a_loud_alarm(cells, cache, data_dir, tmp_path, capsys):
    path, table = cells
    shifted = table.copy()
    shifted["v_baseline"] += 14.0
    shifted["threshold_v_rheo"] += 14.0
    shifted["tau"] *= 2.0
    shifted["input_resistance"] *= 2.0
    shifted["width_rheo"] *= 1.5
    q = tmp_path / "shifted.csv"
    shifted.to_csv(q, index=False)
    code, out, err = _run(["map", "--input", q, "--species", "human", "--column-map", "ipfx",
                           "--data-dir", data_dir, "--cache-dir", cache, "--out", tmp_path / "s"], capsys)
    assert code == 0, err
    alarm_lines = [line for line in err.splitlines() if "SHIFT ALARM" in line]
    assert len(alarm_lines) == 1
    report = (tmp_path / "s" / "report.md").read_text()
    assert report.split("\n## ")[1].startswith("⚠ Shift alarm")
    assert "What to do" in report
    # report.md's alarm section pointed the reader at 'the first section of report.md': itself
    assert "first section of report.md" not in report and "read this section" in report
    ood = pd.read_csv(tmp_path / "s" / "predictions.csv")["ood_flag"].mean()
    assert ood > 0.2  # OOD is scored on the unaligned features


def test_layer_prior_is_reported_beside_the_prior_free_call(cells, cache, data_dir, tmp_path, capsys):
    code, out, err = _map(["--layer", "L1", "--align", "none"], cells, cache, data_dir, tmp_path, capsys)
    assert code == 0, err
    assert "fallback" in err and "mouse VISp" in err  # 1 human layer-1 cell: the mouse mix is used
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert {"predicted_subclass_no_prior", "confidence_no_prior"} <= set(pred.columns)
    assert (pred["predicted_subclass"] == "Lamp5").mean() > (pred["predicted_subclass_no_prior"] == "Lamp5").mean()
    assert "without prior" in (tmp_path / "out" / "report.md").read_text()
    code, out, err = _map(["--layer-column", "layer"], cells, cache, data_dir, tmp_path, capsys, "col")
    assert code == 0, err


def test_explicit_prior_and_align_none(cells, cache, data_dir, tmp_path, capsys):
    code, out, err = _map(["--prior", "Lamp5=0.97,Vip=0.01,Sst=0.01,Pvalb=0.01", "--align", "none"],
                          cells, cache, data_dir, tmp_path, capsys)
    assert code == 0, err
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv")
    changed = pred["predicted_subclass"] != pred["predicted_subclass_no_prior"]
    assert changed.any() and (pred.loc[changed, "predicted_subclass"] == "Lamp5").all()


@pytest.mark.parametrize("args,match", [
    (["--prior", "Sncg=1"], "unknown class"),
    (["--layer", "deep"], "not a cortical layer"),
    (["--layer", "L1", "--prior", "Lamp5=1"], "one of --layer"),
    (["--layer-column", "nope"], "--layer-column 'nope'"),
    (["--align", "magic"], "unknown --align"),
    (["--model", "svm"], "unknown --model"),
    (["--layer", " "], "--layer is empty"),
    (["--prior", "Lamp5=inf"], "non-negative number"),
])
def test_bad_shift_options_exit_2_with_one_line(args, match, cells, cache, data_dir, tmp_path, capsys):
    code, out, err = _map(args, cells, cache, data_dir, tmp_path, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and re.search(match, lines[0]), err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_lab_table_without_a_column_map_is_refused(tmp_path, data_dir, cache, capsys):
    lab = pd.DataFrame({"cell": ["a", "b", "c"], "Sag ratio": [1.08, 1.1, 1.05], "Rin": [200, 150, 300],
                        "Vm": [-70, -68, -66], "AP hw": [0.6, 0.5, 0.7]})
    path = tmp_path / "lab.csv"
    lab.to_csv(path, index=False)
    code, out, err = _run(["map", "--input", path, "--species", "mouse", "--data-dir", data_dir,
                           "--cache-dir", cache, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "--column-map allen_celltypes" in err and len(err.strip().splitlines()) == 1
    code, out, err = _run(["map", "--input", path, "--species", "mouse", "--column-map", "allen_celltypes",
                           "--data-dir", data_dir, "--cache-dir", cache, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "1 - 1/x" in err  # the Allen sag check names the other definitions


def test_mapped_features_the_reference_lacks_are_reported(tmp_path, data_dir, cache, mouse_visp, capsys):
    src = mouse_visp.features.iloc[:60]
    table = pd.DataFrame({"Cell ID": src.index, "Latency": src["Latency"],
                          "Input resistance (MΩ)": src["Input resistance (MΩ)"],
                          "Resting membrane potential (mV)": src["Resting membrane potential (mV)"],
                          "AP width (ms)": src["AP width (ms)"], "Sag ratio": src["Sag ratio"]})
    path = tmp_path / "visp.csv"
    table.to_csv(path, index=False)
    yaml_map = tmp_path / "m.yaml"
    yaml_map.write_text("name: m\ncolumns:\n"
                        "  - {column: Latency, name: latency_rheo, unit: s}\n"
                        "  - {column: 'Input resistance (MΩ)', name: input_resistance, unit: MΩ}\n"
                        "  - {column: 'Resting membrane potential (mV)', name: v_baseline, unit: mV}\n"
                        "  - {column: 'AP width (ms)', name: width_rheo, unit: ms}\n"
                        "  - {column: 'Sag ratio', name: sag, unit: '1'}\n", encoding="utf-8")
    code, out, err = _run(["map", "--input", path, "--species", "mouse", "--column-map", yaml_map,
                           "--data-dir", data_dir, "--cache-dir", cache, "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert re.search(r"not in the mouse reference.*latency_rheo \(column 'Latency'\)", err)


def test_features_command(data_dir, capsys):
    code, out, err = _run(["features", "--species", "human", "--data-dir", data_dir, "--csv"], capsys)
    assert code == 0
    table = pd.read_csv(__import__("io").StringIO(out))
    assert len(table) == 93 and {"feature", "unit", "cells", "from"} <= set(table.columns)
    assert table.set_index("feature").loc["tau", "unit"] == "s"
    code, out, err = _run(["features", "--species", "mouse", "--data-dir", data_dir], capsys)
    assert code == 0 and "tau [ms] × 0.001" in out and out.count("\n| ") == 21  # one row per harmonised feature
    code, out, err = _run(["features", "--species", "dog", "--data-dir", data_dir], capsys)
    assert code == 2 and err.startswith("error:")


def test_predict_with_a_prior_keeps_the_prior_free_call(data_dir, tmp_path, cells, capsys):
    model = tmp_path / "model"
    code, _, err = _run(["train", "--species", "human", "--model", "forest", "--n-estimators", "10",
                         "--n-splits", "3", "--data-dir", data_dir, "--out", model], capsys)
    assert code == 0, err
    path, _ = cells
    code, out, err = _run(["predict", "--model", model, "--input", path, "--column-map", "ipfx",
                           "--layer", "L1", "--data-dir", data_dir, "--out", tmp_path / "p.csv"], capsys)
    assert code == 0, err
    pred = pd.read_csv(tmp_path / "p.csv")
    assert "predicted_subclass_no_prior" in pred.columns
    assert (pred["predicted_subclass"] == "Lamp5").sum() >= (pred["predicted_subclass_no_prior"] == "Lamp5").sum()


@pytest.mark.parametrize("model", ["hgb", "ensemble"])
def test_other_reference_models_are_cached_and_reloaded(model, cells, data_dir, tmp_path, capsys):
    path, _ = cells
    args = ["map", "--input", path, "--species", "human", "--column-map", "ipfx", "--model", model,
            "--data-dir", data_dir, "--cache-dir", tmp_path / "cache"]
    code, out, err = _run([*args, "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    assert "new reference model" in out
    code, out, err = _run([*args, "--out", tmp_path / "b"], capsys)
    assert code == 0 and "cached reference model" in out
    a = pd.read_csv(tmp_path / "a" / "predictions.csv")
    b = pd.read_csv(tmp_path / "b" / "predictions.csv")
    pd.testing.assert_frame_equal(a, b)
    assert f"model: {model}" in (tmp_path / "a" / "report.md").read_text()
