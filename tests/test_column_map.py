"""Column maps, canonical names, unit conversion and range checks."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize("feature, values, unit", [
    ("rheobase_i", (1e-10, 1e-9), "A"),  # s8: amperes had no hint at all (no x1e12, no unit A)
    ("threshold_i_ramp", (1e-9, 1e-9), "A"),  # x1e9 reaches 1 pA too; 1000 pA is the likely one
    ("threshold_v_rheo", (-0.05, -0.03), "V"),
    ("tau", (5.0, 30.0), "ms"),
    ("input_resistance", (1e8, 4e8), "Ω"),
])
def test_a_median_off_by_a_unit_prefix_names_the_likely_unit(feature, values, unit):
    from ephys2tx.features.canonical import CANONICAL_FEATURES, unit_factor

    column = pd.DataFrame({feature: np.random.RandomState(0).uniform(*values, 40)})
    (issue,) = check_units(column)
    expected = CANONICAL_FEATURES[feature].unit
    assert f"the values look like {unit}, not {expected}: set `unit: {unit}`" in issue.message()
    converted = column[feature] * unit_factor(unit, expected)  # the suggestion fixes the column
    assert check_units(converted.to_frame()) == []


def test_mixed_units_some_cells_in_amperes():
    rng = np.random.RandomState(0)
    current = np.r_[rng.uniform(50, 300, 30), rng.uniform(1e-10, 3e-10, 6)]
    (issue,) = check_units(pd.DataFrame({"rheobase_i": current}))
    assert "those values look 1e+12 times too small" in issue.message()


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


# ------------------------------------------------------------------ fault hunt 7 (notes/s7/faults1.md)

_GOOD = "columns:\n  - {column: tau, name: tau, unit: s}\n"

BAD_MAP_FILES = {
    "same column mapped twice": (
        _GOOD + "  - {column: tau, name: sag, unit: '1'}\n",
        r"reads column 'tau' twice \(as tau and as sag\)"),
    "key repeated at the top": (
        "name: a\nname: b\n" + _GOOD, r"map\.yaml, line 2: the column map repeats the key 'name' \(first on line 1\)"),
    "columns repeated": (
        _GOOD + "columns:\n  - {column: sag, name: sag, unit: '1'}\n",
        r"line 3: the column map repeats the key 'columns' \(first on line 1\); YAML keeps only the last"),
    "key repeated in an entry": (
        "columns:\n  - column: tau\n    name: tau\n    unit: s\n    unit: ms\n",
        r"line 5: the column map repeats the key 'unit' \(first on line 4\)"),
    "scale 1e999": (_GOOD.replace("unit: s}", "unit: s, scale: 1e999}"),
                    r"column 'tau': 'scale' must be a finite number of magnitude <= 1e\+15, got inf"),
    "offset huge integer": (_GOOD.replace("unit: s}", "unit: s, offset: 99999999999999999999999999999}"),
                            r"column 'tau': 'offset' must be a finite number .*got 99999999999999999999999999999"),
    "scale integer too large for a float": (_GOOD.replace("unit: s}", "unit: s, scale: " + "9" * 400 + "}"),
                                            r"'scale' must be a finite number .*got 9+\.\.\.9+"),
    "scale 1e-300": (_GOOD.replace("unit: s}", "unit: s, scale: 1e-300}"),
                     r"column 'tau': 'scale' 1e-300 is so small that every value would be about the offset"),
    "offset .nan": (_GOOD.replace("unit: s}", "unit: s, offset: .nan}"), r"'offset' must be a finite number"),
    "expr without x": (_GOOD.replace("unit: s}", "unit: s, expr: '2'}"),
                       r"column 'tau': 'expr' '2' does not use x, so every cell would get the same value"),
    "expr x*0": (_GOOD.replace("unit: s}", "unit: s, expr: 'x*0'}"),
                 r"'expr' 'x\*0' gives 0 for every one of 13 different test values"),
    "expr x-x": (_GOOD.replace("unit: s}", "unit: s, expr: 'x-x'}"), r"'expr' 'x-x' gives 0 for every one"),
    "expr x**(10**400)": (_GOOD.replace("unit: s}", "unit: s, expr: 'x**(10**400)'}"),
                          r"gives 0 for every one of \d+ different test values"),
    "scale as text": (_GOOD.replace("unit: s}", "unit: s, scale: 'two'}"),
                      r"'scale' must be a number, got text \('two'\)"),
    "sign as text": (_GOOD.replace("unit: s}", "unit: s, sign: 'minus'}"), r"column 'tau': 'sign' must be a number"),
    "offset a list": (_GOOD.replace("unit: s}", "unit: s, offset: [0]}"), r"'offset' must be a number, got a list"),
    "scale a boolean": (_GOOD.replace("unit: s}", "unit: s, scale: true}"),
                        r"column 'tau': 'scale' must be a number, got true/false"),
    "sign a boolean": (_GOOD.replace("unit: s}", "unit: s, sign: true}"), r"'sign' must be a number, got true/false"),
    "offset empty": (_GOOD.replace("unit: s}", "unit: s, offset: }"), r"'offset' must be a number, got empty"),
    "strict as text": ("strict: 'no'\n" + _GOOD, r"'strict' must be true or false \(unquoted\), got 'no'"),
    "strict a number": ("strict: 0\n" + _GOOD, r"'strict' must be true or false"),
    "name a list": ("name: [lab]\n" + _GOOD, r"'name' must be text"),
    "description a mapping": ("description: {a: 1}\n" + _GOOD, r"'description' must be text"),
    "unit empty": ("columns:\n  - {column: tau, name: tau, unit: }\n", r"'unit' must be a unit such as 's'"),
    "a list at the top": ("- {column: tau, name: tau, unit: s}\n", r"must be a YAML mapping with a 'columns' list"),
    "a null document": ("---\n...\n", r"map\.yaml holds no value"),
    "only comments": ("# a map\n\n# to do\n", r"map\.yaml is empty"),
    "tabs": ("columns:\n\t- {column: tau, name: tau, unit: s}\n",
             r"not valid YAML, line 2, column 1: .*\(YAML indents with spaces, not tabs\)"),
    "two documents": ("name: a\n---\nname: b\n", r"line 2, column 1: expected a single document in the stream "
                                                r"but found another document"),
    "anchors and aliases": ("description: &d [x]\nname: *d\n" + _GOOD, r"line 1: the column map uses a YAML anchor"),
    "a billion laughs": ("\n".join(["description:", "  - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                                   + [f"  - &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")])
                         + "\n" + _GOOD.replace("unit: s}", "unit: s, scale: *i}"),
                         r"line 2: the column map uses a YAML anchor"),
    "a python tag": ("columns: !!python/object/apply:os.system ['true']\n", r"line 1, column 10: .*tag"),
    "a table given as the map": ("cell_id,tau,sag\n1,0.01,0.1\n", r"it holds text \('cell_id,tau,sag 1,0\.01,0\.1'\) "
                                                                r"\(is it a table\?\)"),
    "columns a mapping": ("columns:\n  tau: tau\n", r"needs a non-empty 'columns' list \(it holds a mapping"),
    "an entry as text": ("columns:\n  - tau\n", r"entry 1 must be a mapping with 'column', 'name' and 'unit', "
                                                  r"got text \('tau'\)"),
    "not a reference feature": ("columns:\n  - {column: tau, name: membrane_tau, unit: s}\n",
                                r"unknown canonical feature name 'membrane_tau'"),
}


@pytest.mark.parametrize("case", list(BAD_MAP_FILES))
def test_bad_map_files_are_refused_naming_the_file_and_key(case, tmp_path):
    text, pattern = BAD_MAP_FILES[case]
    path = tmp_path / "map.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=pattern) as info:
        load_column_map(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert len(str(info.value)) < 600


def test_numbers_with_an_exponent_are_numbers(tmp_path):
    """``scale: 1e-3`` is a number (YAML 1.2), not the text '1e-3' (YAML 1.1), now that text is refused."""
    path = tmp_path / "map.yaml"
    path.write_text(_GOOD.replace("unit: s}", "unit: ms, scale: 1e-3, offset: -2E+0}"))
    entry = load_column_map(path).entries[0]
    assert entry.scale == 0.001 and entry.offset == -2.0 and entry.factor == pytest.approx(1e-6)


def test_names_are_read_without_surrounding_blanks(tmp_path):
    """Table headers are read stripped; a map naming ' tau ' reads the column 'tau'."""
    cmap = column_map_from_dict({"columns": [{"column": " tau ", "name": "tau ", "unit": "s", "minus": " v "}]})
    assert (cmap.entries[0].column, cmap.entries[0].name, cmap.entries[0].minus) == ("tau", "tau", "v")
    out, _ = apply_column_map(cmap, pd.DataFrame({"tau": [3.0], "v": [1.0]}))
    assert out["tau"].tolist() == [2.0]


def test_a_strict_map_names_the_column_that_differs_only_in_case():
    cmap = column_map_from_dict({"columns": [{"column": "Input Resistance", "name": "input_resistance",
                                              "unit": "MOhm"}]})
    with pytest.raises(InputError, match=r"names column 'Input Resistance' .*; the table has "
                                         r"'input_resistance', which differs in case or blanks"):
        apply_column_map(cmap, pd.DataFrame({"input_resistance": [100.0]}))


def test_an_expr_constant_on_the_table_values_is_refused():
    """``abs(x)/x + 1`` gives two values on the test values (0 and 2), but on a table whose
    values are all positive every cell would get 2: refused when the map is applied."""
    cmap = column_map_from_dict({"columns": [{"column": "r", "name": "sag", "unit": "1",
                                              "expr": "abs(x)/x + 1"}]})
    with pytest.raises(InputError, match=r"column 'r': 'expr' 'abs\(x\)/x \+ 1' gives 2 for every one of 3 "
                                         r"different values of the table"):
        apply_column_map(cmap, pd.DataFrame({"r": [1.0, 2.0, 3.0, np.nan]}))
    ok = apply_column_map(cmap, pd.DataFrame({"r": [-1.0, 2.0, 3.0]}))[0]  # two values: allowed
    assert ok["sag"].tolist() == [0.0, 2.0, 2.0]


def test_a_column_name_in_another_unicode_form_is_the_same_column():
    """'Säg' typed with a precomposed ä (NFC) in the table and a + combining ¨ (NFD) in the map
    look the same in every message: they are read as the same column."""
    import unicodedata

    nfc, nfd = (unicodedata.normalize(form, "Säg τ") for form in ("NFC", "NFD"))
    assert nfc != nfd
    cmap = column_map_from_dict({"columns": [{"column": nfd, "name": "sag", "unit": "1"}]})
    out, sources = apply_column_map(cmap, pd.DataFrame({nfc: [0.1, 0.2]}))
    assert out["sag"].tolist() == [0.1, 0.2] and sources == {"sag": nfd}


def test_an_empty_column_map_name_is_refused():
    with pytest.raises(InputError, match="the column map name is empty"):
        load_column_map(" ")


def test_a_column_name_yaml_reads_as_a_number_asks_for_quotes(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("columns:\n  - {column: 1, name: tau, unit: s}\n")
    with pytest.raises(InputError, match=r"entry 1 needs a 'column' string \(got 1\); quote names"):
        load_column_map(path)


def test_a_shipped_map_name_is_the_shipped_map_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ipfx").mkdir()  # e.g. the user's ipfx output folder
    assert load_column_map("ipfx").name == "ipfx" and len(load_column_map("ipfx").entries) == 93
    (tmp_path / "allen_celltypes").write_text("name: mine\ncolumns:\n  - {column: t, name: tau, unit: s}\n")
    assert load_column_map("allen_celltypes").name == "mine"  # a file of that name is read


def test_cells_an_expr_turns_into_missing_are_counted():
    """``sqrt(x - 0.2)`` on values below 0.2: those cells become missing, no longer silently."""
    from ephys2tx.features.column_map import expr_losses

    cmap = column_map_from_dict({"columns": [
        {"column": "f", "name": "fi_fit_slope", "unit": "Hz/pA", "expr": "sqrt(x - 0.2)"},
        {"column": "t", "name": "tau", "unit": "s", "expr": "x * 2"}]})
    table = pd.DataFrame({"f": [0.1, 0.5, 0.15, np.nan, 1.0], "t": [0.01] * 5})
    notes = expr_losses(cmap, table, where="cells.csv")
    assert notes == ["column map <memory>, column 'f': expr 'sqrt(x - 0.2)' gives no finite value for 2 of 4 "
                     "cells of cells.csv (e.g. x = 0.1); they are read as missing for fi_fit_slope."]
    assert np.isnan(apply_column_map(cmap, table)[0]["fi_fit_slope"]).sum() == 3


def test_typographic_quotes_around_a_column_name_are_pointed_out():
    cmap = column_map_from_dict({"columns": [{"column": "\u201cAP width (ms)\u201d", "name": "width_rheo",
                                              "unit": "ms"}]})
    with pytest.raises(InputError, match=r"the table has 'AP width \(ms\)': the quotes in the map are "
                                         r"typographic ones"):
        apply_column_map(cmap, pd.DataFrame({"AP width (ms)": [1.0]}))


def test_quoted_numbers_are_read_as_numbers(tmp_path):
    """``scale: '2'`` and ``sign: '-1'`` are the numbers 2 and -1 (YAML quotes them as text)."""
    path = tmp_path / "map.yaml"
    path.write_text(_GOOD.replace("unit: s}", "unit: s, scale: '2', sign: ' -1'}"), encoding="utf-8")
    entry = load_column_map(path).entries[0]
    assert (entry.scale, entry.sign) == (2.0, -1.0)
def test_check_units_sag_in_percent_says_percent_not_another_definition():
    """Sag in % (median 23) was told 'a value near 1 is another definition ... expr: 1 - x'."""
    rng = np.random.default_rng(0)
    sag = pd.Series(rng.uniform(0.05, 0.4, 40))
    (issue,) = check_units(pd.DataFrame({"sag": sag * 100}), {"sag": "Sag (%)"})
    assert "the values look like percent: set `unit: \"%\"` in this column's map entry" in issue.message()
    assert "another definition" not in issue.message()
    (ratio,) = check_units(pd.DataFrame({"sag": 1 - sag * 0.3}))  # steady/peak: near 1
    assert "another definition" in ratio.message() and "percent" not in ratio.message()


def test_a_folder_and_an_empty_name_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"folder"):
        load_column_map(tmp_path)
    with pytest.raises(InputError, match=r"empty"):
        load_column_map("")  # Path("") is the current folder
    assert load_column_map("ipfx").entries  # the shipped maps load as before


def test_float_columns_are_read_without_a_copy_and_never_written():
    """apply_column_map reads float64 columns as read-only views (no copy per column); its
    output is new arrays, equal to those of a table with the same values as text."""
    from ephys2tx.features.column_map import _numeric_column

    table = pd.DataFrame({"tau": [0.01, np.nan, 0.02], "v_baseline": [-70.0, -65.0, 0.0],
                          "sag": [0.1, 0.2, 0.3]})
    before = table.copy()
    view = _numeric_column(table, "tau", "t")
    assert np.shares_memory(view, table["tau"].to_numpy()) and not view.flags.writeable
    cmap = load_column_map("ipfx")
    canonical, _ = apply_column_map(cmap, table)
    as_text, _ = apply_column_map(cmap, table.astype(str).replace("nan", ""))
    pd.testing.assert_frame_equal(canonical, as_text)
    pd.testing.assert_frame_equal(table, before)
    assert not any(np.shares_memory(canonical[c].to_numpy(), table[c].to_numpy()) for c in table)


@pytest.mark.parametrize("declared, values, feature, expected", [
    ("V", (-75.0, -60.0), "v_baseline", "the values look like mV, not V: set `unit: mV`"),  # was uV
    ("ms", (0.005, 0.03), "tau", "the values look like s, not ms: set `unit: s`"),  # had no unit
    ("nA", (50.0, 300.0), "rheobase_i", "the values look like pA, not nA: set `unit: pA`"),
    ("MOhm", (0.1, 0.4), "input_resistance", "the values look like GΩ, not MOhm: set `unit: GΩ`"),
])
def test_a_unit_hint_names_the_unit_to_set_in_the_map(tmp_path, declared, values, feature, expected):
    """A column mapped with the wrong unit: the hint names the unit relative to the one the map
    gave (before: relative to the canonical unit, e.g. `set unit: uV` for mV values mapped as V)."""
    from ephys2tx.mapping.query import read_query

    rng = np.random.RandomState(0)
    pd.DataFrame({"cell_id": [f"c{i}" for i in range(30)], "X": rng.uniform(*values, 30)}).to_csv(
        tmp_path / "cells.csv", index=False)
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(
        {"name": "lab", "columns": [{"column": "X", "name": feature, "unit": declared}]}))
    with pytest.raises(InputError, match=re.escape(expected)):
        read_query(tmp_path / "cells.csv", column_map=str(tmp_path / "lab.yaml"))
    fixed = {"name": "lab", "columns": [{"column": "X", "name": feature,
                                         "unit": expected.rsplit("`unit: ", 1)[1].rstrip("`")}]}
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(fixed, allow_unicode=True))
    assert read_query(tmp_path / "cells.csv", column_map=str(tmp_path / "lab.yaml")).features.notna().all().all()


@pytest.mark.parametrize("ratio", [(0.9, 1.3), (1.5, 3.0)])
def test_an_isi_ratio_mapped_as_adaptation_index_names_the_expr(ratio):
    """An ISI ratio (about 1) read as IPFX adaptation: the message had no fix at all."""
    column = pd.DataFrame({"adapt_hero": np.random.RandomState(0).uniform(*ratio, 40)})
    (issue,) = check_units(column)
    assert "set `expr: (x - 1) / (x + 1)`" in issue.message()
    fixed = (column - 1) / (column + 1)
    assert check_units(fixed) == []


def test_a_table_two_maps_read_one_column_each_is_told_the_coverage():
    """A lab table whose 'AP width (ms)' is Allen naming and 'Sag' IPFX naming, among 8 other
    columns: it was told the maps 'fit equally well (AP width (ms))', as if one were right."""
    rng = np.random.RandomState(0)
    lab = pd.DataFrame({"AP width (ms)": rng.uniform(0.3, 1.0, 5), "Sag": rng.uniform(0.02, 0.2, 5),
                        **{f"Feature {i}": rng.uniform(0, 1, 5) for i in range(8)}})
    with pytest.raises(InputError, match=r"only 1 of the table's 10 numeric columns match the shipped "
                                         r"maps allen_celltypes or ipfx \(map allen_celltypes: AP "
                                         r"width \(ms\); map ipfx: Sag\); it is not applied"):
        detect_column_map(lab)
    both = pd.DataFrame({"AP width (ms)": [0.5, 0.6], "Sag": [0.1, 0.05]})  # full coverage: a tie
    with pytest.raises(InputError, match="fit the shipped maps allen_celltypes and ipfx equally well"):
        detect_column_map(both)


def test_a_percentage_is_a_unit():
    """`unit: "%"` (a sag or adaptation in percent) was an unknown unit; the percent hint said
    to add `scale: 0.01` and now names the unit, which the map reads."""
    cmap = column_map_from_dict({"name": "lab", "columns": [
        {"column": "Sag (%)", "name": "sag", "unit": "%"}]})
    out, _ = apply_column_map(cmap, pd.DataFrame({"Sag (%)": [5.0, 20.0]}))
    np.testing.assert_allclose(out["sag"], [0.05, 0.2])
    assert check_units(out) == []
    with pytest.raises(InputError, match="unit '%' .*cannot be converted"):
        column_map_from_dict({"columns": [{"column": "t", "name": "tau", "unit": "%"}]})


def test_numeric_columns_a_given_map_does_not_read_are_named():
    """With --column-map, a numeric column no entry reads ('Max number of APs') was dropped
    silently (only a detected map said what it ignores); text columns are not named."""
    cmap = column_map_from_dict({"name": "lab", "columns": [
        {"column": "Tau (ms)", "name": "tau", "unit": "ms"},
        {"column": "Peak (mV)", "minus": "Thr (mV)", "name": "peak_deltav_rheo", "unit": "mV"}]})
    table = pd.DataFrame({"Tau (ms)": [12.0], "Peak (mV)": [20.0], "Thr (mV)": [-40.0],
                          "Max number of APs": [31.0], "Layer": ["L1"]})
    assert describe_detection(cmap, table) == (
        "column map lab does not read 1 numeric column(s) of the table (Max number of APs); a column "
        "that is a reference feature (`ephys2tx features` lists them) needs an entry in the map.")
    assert describe_detection(cmap, table.drop(columns="Max number of APs")) is None
    assert describe_detection(cmap) is None


@pytest.mark.parametrize("feature", ["fast_trough_deltav_rheo", "fast_trough_deltav_short_square",
                                     "trough_deltav_rheo"])
def test_an_ahp_depth_mapped_without_its_sign_is_caught(feature):
    """A lab's 'Afterhyperpolarization (mV)' is a positive depth; mapped without `sign: -1`
    (median +13 mV) it passed the range [-80, 60] silently, and read as the IPFX trough minus
    threshold (reference medians -12 to -25 mV) it inverted the feature."""
    depth = pd.DataFrame({feature: np.random.RandomState(0).uniform(5, 25, 40)})
    (issue,) = check_units(depth, {feature: "Afterhyperpolarization (mV)"})
    assert "the sign looks flipped: add `sign: -1`" in issue.message()
    assert check_units(-depth) == []


def test_the_shared_tables_pass_the_unit_checks(data_dir):
    """The plausible ranges flag none of the reference tables read through their shipped maps."""
    from ephys2tx.mapping.query import read_query

    for table, cmap in [("mouse_l1_bridge_chartrand2023/aibs_mouse_features_E.csv", "ipfx"),
                        ("human_gaba_leedalley2023/LeeDalley_ephys_fx.csv", "ipfx"),
                        ("mouse_visp_gouwens2020/VISp_Viewer_ephys.csv", "allen_celltypes")]:
        query = read_query(data_dir / table, column_map=cmap)
        assert check_units(query.features) == [], table
