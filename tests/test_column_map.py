"""Column maps, canonical names, unit conversion and range checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from ephys2tx.errors import InputError
from ephys2tx.features.canonical import CANONICAL_FEATURES, check_units, unit_factor
from ephys2tx.features.column_map import (apply_column_map, column_map_from_dict, load_column_map,
                                          resolve_column_map)
from ephys2tx.features.families import HUMAN_IPFX_SCHEMA
from ephys2tx.features.harmonise import HARMONISED_FEATURES, MOUSE_TO_HUMAN, convert_mouse


def test_canonical_names_are_the_human_ipfx_columns():
    assert list(CANONICAL_FEATURES) == HUMAN_IPFX_SCHEMA.columns
    for spec in CANONICAL_FEATURES.values():
        assert spec.low < spec.high


def test_unit_factor():
    assert unit_factor("ms", "s") == pytest.approx(1e-3)
    assert unit_factor("nA", "pA") == pytest.approx(1e3)
    assert unit_factor("V/s", "mV/ms") == pytest.approx(1.0)
    with pytest.raises(InputError, match="cannot be converted"):
        unit_factor("pA", "s")
    with pytest.raises(InputError, match="unknown unit"):
        unit_factor("furlong", "s")


def test_entry_conversion_sign_offset_minus():
    cmap = column_map_from_dict({"columns": [
        {"column": "w", "name": "width_rheo", "unit": "ms"},
        {"column": "ahp", "name": "fast_trough_deltav_rheo", "unit": "mV", "sign": -1},
        {"column": "peak", "minus": "thr", "name": "peak_deltav_rheo", "unit": "mV"},
        {"column": "vb", "name": "v_baseline", "unit": "V", "offset": -2.0},
    ]})
    table = pd.DataFrame({"w": [0.5, 1.0], "ahp": [12.0, 15.0], "peak": [30.0, 20.0],
                          "thr": [-40.0, -35.0], "vb": [-0.07, -0.065]}, index=["a", "b"])
    out, sources = apply_column_map(cmap, table)
    assert out["width_rheo"].tolist() == pytest.approx([5e-4, 1e-3])
    assert out["fast_trough_deltav_rheo"].tolist() == pytest.approx([-12.0, -15.0])
    assert out["peak_deltav_rheo"].tolist() == pytest.approx([70.0, 55.0])
    assert out["v_baseline"].tolist() == pytest.approx([-72.0, -67.0])
    assert sources["peak_deltav_rheo"] == "peak"


def test_missing_column_strict_and_not_strict():
    spec = {"columns": [{"column": "absent", "name": "tau", "unit": "ms"},
                        {"column": "present", "name": "sag", "unit": "1"}]}
    table = pd.DataFrame({"present": [0.1]}, index=["a"])
    with pytest.raises(InputError, match="names column 'absent'"):
        apply_column_map(column_map_from_dict(spec), table)
    out, _ = apply_column_map(column_map_from_dict({**spec, "strict": False}), table)
    assert list(out.columns) == ["sag"]


def test_unknown_canonical_name_suggests():
    with pytest.raises(InputError, match="unknown canonical feature name 'tau_m'.*did you mean"):
        column_map_from_dict({"columns": [{"column": "x", "name": "tau_m", "unit": "ms"}]})


def test_unit_dimension_mismatch():
    with pytest.raises(InputError, match="'pA' .* cannot be converted"):
        column_map_from_dict({"columns": [{"column": "x", "name": "tau", "unit": "pA"}]})


@pytest.mark.parametrize("bad", [
    {"columns": []},
    {"columns": [{"column": "x", "name": "tau", "unit": "s", "sign": 2}]},
    {"columns": [{"column": "x", "name": "tau", "unit": "s", "colour": "red"}]},
    {"columns": [{"column": "x", "name": "tau"}, {"column": "y", "name": "tau"}]},
    {"colums": []},
])
def test_invalid_maps(bad):
    with pytest.raises(InputError):
        column_map_from_dict(bad)


def test_non_numeric_value_is_named():
    cmap = column_map_from_dict({"columns": [{"column": "t", "name": "tau", "unit": "s"}]})
    with pytest.raises(InputError, match="non-numeric value 'fast' \\(cell b\\)"):
        apply_column_map(cmap, pd.DataFrame({"t": ["0.01", "fast"]}, index=["a", "b"]))


def test_shipped_allen_map_reproduces_harmonise():
    """The YAML map and the declarative harmonisation agree on every mapped feature."""
    cmap = load_column_map("allen_celltypes")
    assert sorted(cmap.canonical_names) == sorted(HARMONISED_FEATURES)
    rng = np.random.RandomState(0)
    sources = {m.source for m in MOUSE_TO_HUMAN} | {m.minus for m in MOUSE_TO_HUMAN if m.minus}
    visp = pd.DataFrame(rng.uniform(1, 50, size=(5, len(sources))), columns=sorted(sources))
    ours, _ = apply_column_map(cmap, visp)
    theirs = convert_mouse(visp)[list(HARMONISED_FEATURES)]
    pd.testing.assert_frame_equal(ours[theirs.columns], theirs, check_names=False)


#: IPFX cell-record name -> Allen Cell Types (VISp table) column: the same quantity.
RECORD_TO_ALLEN = {
    "threshold_v_ramp": "Threshold V (ramp) (millivolts)",
    "upstroke_downstroke_ratio_ramp": "Upstroke/downstroke ratio (ramp)",
    "threshold_i_ramp": "Threshold I (ramp) (picoamps)",
    "peak_v_ramp": "Peak V (ramp) (millivolts)",
    "fast_trough_v_ramp": "Fast trough V (ramp) (millivolts)",
    "trough_v_ramp": "Trough V (ramp) (millivolts)",
    "peak_v_short_square": "Peak V (short square) (millivolts)",
    "threshold_v_short_square": "Threshold V (short square) (millivolts)",
    "threshold_v_long_square": "Threshold V (long square) (millivolts)",
    "upstroke_downstroke_ratio_long_square": "Upstroke/downstroke ratio (long square)",
    "peak_v_long_square": "Peak V (long square) (millivolts)",
    "trough_v_long_square": "Trough V (long square) (millivolts)",
    "threshold_i_long_square": "Threshold I (long square) (picoamps)",
    "vrest": "Resting membrane potential (mV)",
    "ri": "Input resistance (MΩ)",
    "tau": "tau",
    "sag": "Sag ratio",
    "f_i_curve_slope": "F I curve slope",
    "adaptation": "Adaptation ratio",
}


def test_ipfx_record_map_agrees_with_the_allen_map():
    """``summary__*`` columns of ``ephys2tx extract`` give the same canonical values as Allen names."""
    record_map, allen_map = load_column_map("ipfx_record"), load_column_map("allen_celltypes")
    rng = np.random.RandomState(1)
    allen = pd.DataFrame(rng.uniform(1, 50, size=(6, len(RECORD_TO_ALLEN))),
                         columns=list(RECORD_TO_ALLEN.values()))
    record = allen.rename(columns={v: f"summary__{k}" for k, v in RECORD_TO_ALLEN.items()})
    record["summary__fast_trough_v_long_square"] = rng.uniform(-70, -50, size=6)
    ours, _ = apply_column_map(record_map, record)
    theirs, _ = apply_column_map(allen_map, allen)  # the Allen AHP column is absent: skipped
    assert sorted(ours.columns) == sorted([*theirs.columns, "fast_trough_deltav_rheo"])
    pd.testing.assert_frame_equal(ours[theirs.columns], theirs)
    np.testing.assert_allclose(ours["fast_trough_deltav_rheo"],
                               record["summary__fast_trough_v_long_square"]
                               - record["summary__threshold_v_long_square"])
    assert resolve_column_map(None, record.columns).name == "ipfx_record"


def test_ipfx_map_is_identity_and_auto_resolution():
    cmap = load_column_map("ipfx")
    assert cmap.canonical_names == HUMAN_IPFX_SCHEMA.columns
    assert resolve_column_map(None, ["tau", "sag", "v_baseline"]).name == "ipfx"
    assert resolve_column_map(None, ["AP width (ms)", "Sag ratio", "tau"]).name == "allen_celltypes"
    with pytest.raises(InputError, match="no column of the table"):
        resolve_column_map(None, ["foo", "bar"])


def test_load_user_yaml(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text(yaml.safe_dump({"name": "lab", "columns": [
        {"column": "Tau (ms)", "name": "tau", "unit": "ms"}]}))
    cmap = load_column_map(path)
    assert cmap.name == "lab" and cmap.strict
    (tmp_path / "bad.yaml").write_text("columns: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_column_map(tmp_path / "bad.yaml")


def test_check_units_catches_wrong_unit_and_suggests_conversion():
    rng = np.random.RandomState(0)
    ok = pd.DataFrame({"tau": rng.uniform(0.005, 0.03, 50), "rheobase_i": rng.uniform(50, 300, 50),
                       "threshold_v_rheo": rng.uniform(-50, -30, 50)})
    assert check_units(ok) == []
    wrong = ok.assign(tau=ok["tau"] * 1000, rheobase_i=ok["rheobase_i"] / 1000,
                      threshold_v_rheo=ok["threshold_v_rheo"] / 1000)
    issues = {i.feature: i for i in check_units(wrong, {"tau": "Tau"})}
    assert set(issues) == {"tau", "rheobase_i", "threshold_v_rheo"}
    assert "multiply by 0.001" in issues["tau"].message() and "unit: ms" in issues["tau"].message()
    assert "'Tau'" in issues["tau"].message()
    assert "unit: nA" in issues["rheobase_i"].message()
    assert "unit: V" in issues["threshold_v_rheo"].message()
    flipped = pd.DataFrame({"peak_deltav_rheo": -rng.uniform(50, 80, 20)})
    assert "sign: -1" in check_units(flipped)[0].message()


def test_check_units_catches_a_column_of_mixed_units():
    """A plausible median does not hide a batch of cells in another unit."""
    from ephys2tx.features.canonical import MixedUnitsIssue, UnitIssue

    rng = np.random.RandomState(0)
    tau = pd.Series(rng.uniform(0.005, 0.03, 40))
    assert check_units(pd.DataFrame({"tau": tau})) == []
    mixed = tau.where(tau.index >= 8, tau * 1000)  # 8 of 40 cells (20%) in ms
    (issue,) = check_units(pd.DataFrame({"tau": mixed}), {"tau": "Tau"})
    assert isinstance(issue, MixedUnitsIssue) and (issue.n_outside, issue.n_values) == (8, 40)
    assert "'Tau'" in issue.message() and "1000 times too large" in issue.message()
    few = tau.where(tau.index >= 2, tau * 1000)  # 2 outliers: not enough to judge
    assert check_units(pd.DataFrame({"tau": few})) == []
    most = tau * 1000  # the median itself is off: the unit issue, not the mixed one
    assert [type(i) for i in check_units(pd.DataFrame({"tau": most}))] == [UnitIssue]
    flipped = pd.DataFrame({"rheobase_i": np.r_[rng.uniform(50, 300, 20), -rng.uniform(50, 300, 5)]})
    assert "sign-flipped" in check_units(flipped)[0].message()


def test_real_tables_pass_the_range_checks(human, mouse_visp):
    assert check_units(human.features) == []
    assert check_units(convert_mouse(mouse_visp.features)[list(HARMONISED_FEATURES)]) == []


# ----------------------------------------------------------------------- expressions and detection

from ephys2tx.features.column_map import SafeExpression, describe_detection, detect_column_map  # noqa: E402
from ephys2tx.features.column_map import column_map_from_dict  # noqa: E402


@pytest.mark.parametrize("text,x,expected", [
    ("1 - 1/x", 1.25, 0.2), ("(x - 1) / (x + 1)", 3.0, 0.5), ("log(x)", np.e, 1.0),
    ("x**2", 3.0, 9.0), ("-x", 2.0, -2.0), ("abs(x) * 2e-3", -5.0, 0.01), ("sqrt(x)", 16, 4.0),
    ("log10(x) + exp(0)", 100.0, 3.0), ("+x", 1.5, 1.5),
])
def test_safe_expressions(text, x, expected):
    assert SafeExpression(text)(np.array([x]))[0] == pytest.approx(expected)


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", "x.real", "y + 1", "open('f')", "lambda: 1", "x if x else 1",
    "[x]", "'a'", "x < 1", "True", "log(x, 2)", "exp(x=1)", "x // 2", "x % 2", "not x", "", "x +",
    "(" * 30 + "x" + ")" * 30 + "+1" * 60, "np.log(x)", "globals()",
])
def test_unsafe_or_invalid_expressions_are_refused(text):
    with pytest.raises(InputError):
        SafeExpression(text)


def test_expression_entries_convert_other_labs_definitions():
    cmap = column_map_from_dict({"name": "lab", "columns": [
        {"column": "Sag (peak/steady)", "name": "sag", "unit": "1", "expr": "1 - 1/x"},
        {"column": "ISI ratio", "name": "adapt_hero", "unit": "1", "expr": "(x - 1) / (x + 1)"}]})
    table = pd.DataFrame({"Sag (peak/steady)": [1.25, 1.0, 0.0], "ISI ratio": [1.5, 1.0, np.nan]})
    out, _ = apply_column_map(cmap, table)
    np.testing.assert_allclose(out["sag"], [0.2, 0.0, np.nan])  # 1/0 -> missing, not inf
    np.testing.assert_allclose(out["adapt_hero"], [0.2, 0.0, np.nan])
    assert "1 - 1/x" in cmap.entries[0].describe()
    with pytest.raises(InputError, match="not allowed"):
        column_map_from_dict({"columns": [{"column": "a", "name": "sag", "expr": "open(x)"}]})


def test_detection_needs_coverage_and_says_what_it_used():
    lab = pd.DataFrame({"Sag ratio": [1.08, 1.1], "Rin": [200.0, 150.0], "Vm": [-70.0, -68.0],
                        "AP hw": [0.6, 0.5], "Tau (ms)": [12.0, 15.0]})
    with pytest.raises(InputError, match="only 1 of the table's 5 numeric columns.*--column-map allen"):
        detect_column_map(lab)
    ipfx = pd.DataFrame({"tau": [0.012, 0.02], "sag": [0.1, 0.2], "v_baseline": [-70.0, -66.0],
                         "note": ["a", "b"]})
    cmap = detect_column_map(ipfx)
    assert cmap.name == "ipfx" and cmap.extra["matched"] == ["sag", "tau", "v_baseline"]
    assert "ipfx" in describe_detection(cmap) and describe_detection(load_column_map("ipfx")) is None


def test_ties_are_broken_by_the_unit_checks():
    seconds = pd.DataFrame({"tau": [0.012, 0.02, 0.015]})  # IPFX: seconds
    assert detect_column_map(seconds).name == "ipfx"
    ms = pd.DataFrame({"tau": [12.0, 20.0, 15.0]})          # Allen VISp: ms
    assert detect_column_map(ms).name == "allen_celltypes"


def test_real_tables_are_detected(data_dir):
    from ephys2tx.data.user_tables import read_user_table

    bridge = read_user_table(data_dir / "mouse_l1_bridge_chartrand2023" / "aibs_mouse_features_E.csv")
    assert detect_column_map(bridge.data).name == "ipfx"
    visp = read_user_table(data_dir / "mouse_visp_gouwens2020" / "VISp_Viewer_ephys.csv")
    assert detect_column_map(visp.data).name == "allen_celltypes"
    human = read_user_table(data_dir / "human_gaba_leedalley2023" / "LeeDalley_ephys_fx.csv")
    assert detect_column_map(human.data).name == "ipfx"


def test_sag_ratio_of_another_definition_is_caught_with_the_fix():
    issues = check_units(pd.DataFrame({"sag": [1.05, 1.08, 1.12]}), {"sag": "Sag ratio"})
    assert len(issues) == 1
    message = issues[0].message()
    assert "1 - 1/x" in message and "multiply" not in message


# ---------------------------------------------------------------- fault hunt 4 (notes/faults/findings4.md)

def test_shipped_maps_read_headers_in_another_case_or_spacing(tmp_path):
    """`TAU`, `Input Resistance`, `v-baseline` are the IPFX columns; a user map stays exact."""
    from ephys2tx.features.column_map import match_table_columns
    from ephys2tx.mapping.query import read_query

    frame = pd.DataFrame({"cell_id": ["a", "b", "c"], "tau": [0.01, 0.02, 0.03],
                          "input_resistance": [200.0, 300.0, 250.0], "v_baseline": [-70.0, -65.0, -72.0]})
    exact = tmp_path / "exact.csv"
    frame.to_csv(exact, index=False)
    loose = tmp_path / "loose.csv"
    frame.rename(columns={"tau": "TAU", "input_resistance": "Input Resistance",
                          "v_baseline": "v-baseline"}).to_csv(loose, index=False)
    for column_map in (None, "ipfx"):
        want, got = read_query(exact, column_map=column_map), read_query(loose, column_map=column_map)
        pd.testing.assert_frame_equal(got.features, want.features)
        assert got.sources["input_resistance"] == "Input Resistance"
    # an exact name wins; two columns of one loose name are ambiguous and left alone
    ipfx = load_column_map("ipfx")
    fitted = match_table_columns(ipfx, ["tau", "TAU", "Sag", "SAG "])
    names = {e.name: e.column for e in fitted.entries}
    assert names["tau"] == "tau" and names["sag"] == "sag"
    strict = column_map_from_dict({"columns": [{"column": "tau", "name": "tau", "unit": "s"}]})
    assert match_table_columns(strict, ["TAU"]) is strict


def test_check_units_sag_in_percent_says_percent_not_another_definition():
    """Sag in % (median 23) was told 'a value near 1 is another definition ... expr: 1 - x'."""
    rng = np.random.default_rng(0)
    sag = pd.Series(rng.uniform(0.05, 0.4, 40))
    (issue,) = check_units(pd.DataFrame({"sag": sag * 100}), {"sag": "Sag (%)"})
    assert "the values look like percent: add `scale: 0.01` to this column's map entry" in issue.message()
    assert "another definition" not in issue.message()
    (ratio,) = check_units(pd.DataFrame({"sag": 1 - sag * 0.3}))  # steady/peak: near 1
    assert "another definition" in ratio.message() and "percent" not in ratio.message()


def test_yaml_aliases_and_a_folder_are_refused(tmp_path):
    """Nine nested aliases in a map's name made `predict` run for ever (str() of 9**9 values, not
    even stopped by SIGTERM); aliases are refused before the map is built. A folder said 'does not exist'."""
    path = tmp_path / "map.yaml"
    path.write_text("name: &n my map\ndescription: *n\ncolumns:\n  - {column: tau, name: tau, unit: s}\n")
    with pytest.raises(InputError, match=r"column map .*map\.yaml uses the YAML alias \*n; write the "
                                         r"values out instead of anchors"):
        load_column_map(path)
    with pytest.raises(InputError, match=r"column map .* is a folder; give a YAML file"):
        load_column_map(tmp_path)
    with pytest.raises(InputError, match=r"--column-map is empty; give a YAML file"):
        load_column_map("")  # Path("") is the current folder
    assert load_column_map("ipfx").entries  # the shipped maps load as before
