"""Missing-value codes on the real tables: every rule's count, restated with plain pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ephys2tx.data.datasets import DATASET_FILES
from ephys2tx.data.missing_codes import (
    MISSING_CODE_RULES,
    VISP_RAMP_BLOCK,
    MissingCodeRule,
    mask_missing_codes,
    rule_columns,
)
from ephys2tx.features.families import HUMAN_IPFX_SCHEMA, MOUSE_VISP_SCHEMA
from ephys2tx.features.harmonise import HARMONISED_FEATURES, convert_mouse


def _raw(data_dir, dataset, role) -> pd.DataFrame:
    return pd.read_csv(data_dir / DATASET_FILES[dataset][role].relpath, encoding="utf-8-sig",
                       low_memory=False)


@pytest.fixture(scope="module")
def visp_raw(data_dir) -> pd.DataFrame:
    """The VISp features as published (ephys + the 3 features of the metadata file)."""
    meta = _raw(data_dir, "mouse_visp", "meta")
    table = _raw(data_dir, "mouse_visp", "ephys").merge(
        meta[["Cell ID", "AP maximum rate of rise (Upstroke) (mV/ms)", "Latency", "tau",
              "T type subclass"]], on="Cell ID")
    return table.set_index(table["Cell ID"].astype(str))


@pytest.fixture(scope="module")
def human_raw(data_dir) -> pd.DataFrame:
    table = _raw(data_dir, "human", "ephys")
    return table.set_index(table["specimen_id"].astype(str))[HUMAN_IPFX_SCHEMA.columns]


@pytest.fixture(scope="module")
def bridge_raw(data_dir) -> pd.DataFrame:
    table = _raw(data_dir, "mouse_l1_bridge", "ephys")
    cols = [c for c in HUMAN_IPFX_SCHEMA.columns if c in table.columns]
    return table.set_index(table["cell_name"].astype(str))[cols]


def _counts(table) -> dict[str, tuple[int, int]]:
    counts = mask_missing_codes(table)[1]
    return {r.rule: (r.n_values, r.n_cells) for r in counts.itertuples()}


# --------------------------------------------------------------------------- counts per rule


def test_visp_counts_per_rule(visp_raw):
    """Each rule's count equals a plain-pandas restatement of it on the published VISp table."""
    t = visp_raw[MOUSE_VISP_SCHEMA.columns]
    block = (t[list(VISP_RAMP_BLOCK)] == 0).all(axis=1)
    assert int(block.sum()) == 273
    fast_troughs = [f"Fast trough V ({s}) (millivolts)" for s in ("ramp", "long square", "short square")]
    zero_troughs = (t[fast_troughs] == 0) & ~np.outer(block, [True, False, False])
    ratios = [c for c in t.columns if c.startswith("Upstroke/downstroke ratio")]
    negative_ratio = (t[ratios] <= 0) & ~np.outer(block, [c.endswith("(ramp)") for c in ratios])
    expected = {
        "ramp_without_spike": (6 * 273, 273),
        "zero_spike_or_rest_voltage": (int(zero_troughs.to_numpy().sum()), 5),
        "zero_threshold_current": (0, 0),  # 0 pA only inside the ramp code
        "nonpositive_updown_ratio": (int(negative_ratio.to_numpy().sum()), 1),
        "nonpositive_duration": (int((t["Avg ISI"] <= 0).sum() + (t["tau"] <= 0).sum()), 130),
        "nonpositive_input_resistance": (int((t["Input resistance (MΩ)"] <= 0).sum()), 1),
        "undefined_adaptation": (int((t["Adaptation ratio"] == 0).sum()), 368),
    }
    assert expected["zero_spike_or_rest_voltage"][0] == 5
    assert expected["nonpositive_duration"][0] == 130  # 129 ISIs of 0 ms, 1 tau of 0 ms
    assert _counts(t) == expected


def test_ramp_code_is_class_dependent(visp_raw):
    """Why it matters: as a number the code would flag Pvalb cells (13.3% vs Lamp5 0.8%)."""
    block = (visp_raw[list(VISP_RAMP_BLOCK)] == 0).all(axis=1)
    share = block.groupby(visp_raw["T type subclass"]).mean()
    assert share["Pvalb interneuron"] == pytest.approx(0.133, abs=0.001)
    assert share["Lamp5 interneuron"] == pytest.approx(0.008, abs=0.001)


def test_human_and_bridge_counts_per_rule(human_raw, bridge_raw):
    isi_cv = [c for c in human_raw.columns if c.startswith("isi_cv_")]
    assert _counts(human_raw) == {
        "zero_spike_or_rest_voltage": (0, 0), "zero_spike_voltage_difference": (0, 0),
        "zero_threshold_current": (0, 0),
        "nonpositive_updown_ratio": (int((human_raw.filter(like="upstroke_downstroke") <= 0)
                                         .to_numpy().sum()), 1),
        "nonpositive_duration": (0, 0),
        "nonpositive_input_resistance": (int((human_raw["input_resistance"] <= 0).sum()), 2),
        "undefined_adaptation": (0, 0),
        "undefined_isi_cv": (int((human_raw[isi_cv] == 0).to_numpy().sum()),
                             int((human_raw[isi_cv] == 0).any(axis=1).sum())),
    }
    assert _counts(human_raw)["undefined_isi_cv"] == (50, 38)
    counts = _counts(bridge_raw)
    assert counts["undefined_isi_cv"] == (23, 20)
    assert counts["nonpositive_input_resistance"] == (2, 2)
    assert sum(n for n, _ in counts.values()) == 25


def test_isi_cv_zero_is_a_two_spike_sweep(data_dir, human_raw):
    """The evidence of ``undefined_isi_cv``: a zero CV always comes with 2 spikes and no adaptation."""
    full = _raw(data_dir, "human", "ephys")
    zero = full["isi_cv_hero"] == 0
    assert int(zero.sum()) == 34
    assert (full.loc[zero, "avg_rate_hero"] == 2).all()
    assert full.loc[zero, "adapt_hero"].isna().all()


# --------------------------------------------------------------------------- no rule on plausible values


def test_rules_only_mask_coded_values(visp_raw, human_raw, bridge_raw):
    """Every masked value was 0 (or negative for a <= 0 rule), and nothing else changed."""
    for table in (visp_raw[MOUSE_VISP_SCHEMA.columns], human_raw, bridge_raw):
        masked, _ = mask_missing_codes(table)
        changed = masked.isna() & table.notna()
        assert (table.to_numpy()[changed.to_numpy()] <= 0).all()
        kept = ~changed
        np.testing.assert_array_equal(masked.to_numpy()[kept.to_numpy()],
                                      table.to_numpy()[kept.to_numpy()])


def test_measured_zeros_are_kept(visp_raw, human_raw):
    """Zeros that are measurements stay: clipped areas, counts, quantised differences, peaks."""
    masked_h, _ = mask_missing_codes(human_raw)
    for col, n in (("sag_area", 301), ("sag_area_depol", 346), ("total_inductive_phase_chirp", 126),
                   ("trough_slowdeltav_hero", 5), ("trough_slowdeltav_rheo", 1)):
        assert int((masked_h[col] == 0).sum()) == n == int((human_raw[col] == 0).sum()), col
    masked_m, _ = mask_missing_codes(visp_raw[MOUSE_VISP_SCHEMA.columns])
    assert int((masked_m["Rebound APs (number)"] == 0).sum()) == 4221
    assert int((masked_m["Peak V (ramp) (millivolts)"] == 0).sum()) == 2  # outside the ramp code
    assert int((masked_m["F I curve slope"] == 0).sum()) == 1


def test_plausible_values_never_fire():
    """Values inside each feature's range (IPFX and VISp names) are never masked."""
    rng = np.random.default_rng(0)
    n = 200
    plausible = pd.DataFrame({
        "threshold_v_ramp": rng.uniform(-60, -20, n), "v_baseline": rng.uniform(-80, -50, n),
        "peak_deltav_rheo": rng.uniform(20, 90, n), "fast_trough_deltav_rheo": rng.uniform(-40, -2, n),
        "rheobase_i": rng.uniform(5, 400, n), "upstroke_downstroke_ratio_hero": rng.uniform(1, 6, n),
        "mean_isi_hero": rng.uniform(0.005, 0.5, n), "tau": rng.uniform(0.005, 0.07, n),
        "input_resistance": rng.uniform(40, 900, n), "adapt_hero": rng.uniform(-0.1, 0.9, n),
        "isi_cv_hero": rng.uniform(0.01, 2, n), "sag_area": np.zeros(n),
        "Threshold V (ramp) (millivolts)": rng.uniform(-60, -20, n),
        "Peak V (ramp) (millivolts)": rng.uniform(-5, 60, n),
        "Fast trough V (ramp) (millivolts)": rng.uniform(-70, -30, n),
        "Trough V (ramp) (millivolts)": rng.uniform(-70, -30, n),
        "Upstroke/downstroke ratio (ramp)": rng.uniform(1, 6, n),
        "Threshold I (ramp) (picoamps)": rng.uniform(5, 600, n),
        "Avg ISI": rng.uniform(3, 900, n), "Adaptation ratio": rng.uniform(-0.1, 0.9, n),
    })
    masked, counts = mask_missing_codes(plausible)
    pd.testing.assert_frame_equal(masked, plausible)
    assert counts["n_values"].sum() == 0


def test_joint_code_needs_the_whole_block():
    """A single 0 among the ramp columns is not the joint code; all six at 0 is."""
    row = {c: 2.0 if "ratio" in c else 100.0 if "picoamps" in c else -40.0 for c in VISP_RAMP_BLOCK}
    partial = pd.DataFrame([{**row, "Peak V (ramp) (millivolts)": 0.0}])
    assert mask_missing_codes(partial)[0].notna().all().all()
    full = pd.DataFrame([{c: 0.0 for c in VISP_RAMP_BLOCK}])
    assert mask_missing_codes(full)[0].isna().all().all()
    missing_one = full.drop(columns=VISP_RAMP_BLOCK[1])  # the block is incomplete: rule off
    assert "ramp_without_spike" not in rule_columns(missing_one.columns)


def test_non_numeric_entries_are_left_for_validation():
    table = pd.DataFrame({"tau": ["0", "abc", 0.01], "other": ["x", "y", "z"]})
    masked, counts = mask_missing_codes(table)
    assert pd.isna(masked.loc[0, "tau"]) and masked.loc[1, "tau"] == "abc"
    assert masked["other"].tolist() == ["x", "y", "z"]
    assert counts.set_index("rule").loc["nonpositive_duration", "n_values"] == 1


# --------------------------------------------------------------------------- one code, every path


def test_loaders_mask_before_qc(mouse_visp, human, bridge):
    """The loaded tables hold no code, and each QC report carries one line per rule."""
    for ds in (mouse_visp, human, bridge):
        _, counts = mask_missing_codes(ds.features)
        assert counts["n_values"].sum() == 0, ds.name
        rules = [s for s in ds.qc_report if s.get("rule")]
        assert [s["rule"] for s in rules] == list(rule_columns(ds.features.columns))
        # The masking comes before the missingness QC that it feeds.
        steps = [s["step"] for s in ds.qc_report]
        assert max(steps.index(s["step"]) for s in rules) < next(
            i for i, s in enumerate(steps) if s.startswith("drop cells missing"))
    visp_rules = {s["rule"]: s for s in mouse_visp.qc_report if s.get("rule")}
    assert (visp_rules["ramp_without_spike"]["n_cells"], visp_rules["undefined_adaptation"]["n_cells"],
            visp_rules["nonpositive_duration"]["n_values"]) == (273, 368, 130)


def test_harmonised_mouse_features_are_missing_where_human_ones_would_be(visp_raw, mouse_visp):
    """Converting the masked VISp table equals masking the converted raw table (IPFX names),
    except for one fast trough whose 0 mV code is hidden once threshold is subtracted."""
    raw = visp_raw[MOUSE_VISP_SCHEMA.columns]
    harmonised = list(HARMONISED_FEATURES)
    masked_first = convert_mouse(mask_missing_codes(raw)[0])[harmonised]
    converted_first = mask_missing_codes(convert_mouse(raw))[0][harmonised]
    assert masked_first.isna().sum().sum() > 273 * 5
    differ = masked_first.isna() != converted_first.isna()
    assert int(differ.to_numpy().sum()) == 1
    assert list(differ.any()[differ.any()].index) == ["fast_trough_deltav_ramp"]
    assert (converted_first.isna() <= masked_first.isna()).all().all()
    loaded = convert_mouse(mouse_visp.features)[harmonised]
    pd.testing.assert_frame_equal(loaded, masked_first.loc[loaded.index])


def test_user_tables_are_masked_in_both_namings(tmp_path, visp_raw):
    """`map`/`predict` read user tables with the same rules: a VISp-named table's ramp code is NaN."""
    from ephys2tx.mapping import read_query

    cells = visp_raw[(visp_raw[list(VISP_RAMP_BLOCK)] == 0).all(axis=1)].head(3)
    path = tmp_path / "cells.csv"
    cells[MOUSE_VISP_SCHEMA.columns].rename_axis("Cell ID").to_csv(path)
    query = read_query(path, column_map="allen_celltypes")
    ramp = [c for c in query.features.columns if c.endswith("_ramp")]
    assert len(ramp) == 6 and query.features[ramp].isna().all().all()


def test_rule_table_is_well_formed():
    names = [r.name for r in MISSING_CODE_RULES]
    assert len(set(names)) == len(names)
    for rule in MISSING_CODE_RULES:
        assert rule.code in ("zero", "nonpositive", "all_zero") and rule.why
        assert rule_columns(list(HUMAN_IPFX_SCHEMA.columns) + list(MOUSE_VISP_SCHEMA.columns),
                            [rule]), rule.name  # every rule applies to some real column
    with pytest.raises(ValueError, match="unknown"):
        mask_missing_codes(pd.DataFrame({"tau": [0.0]}), [MissingCodeRule("x", "odd", ("tau",))])


def test_codes_are_read_alike_from_float_columns_and_from_mixed_ones():
    """Float64 columns are read without ``apply(pd.to_numeric)``; the masked table and the
    counts are those of that route (which the mixed table, with a text column, still takes)."""
    from ephys2tx.data.missing_codes import _as_floats

    rng = np.random.default_rng(0)
    floats = pd.DataFrame({"threshold_v_rheo": rng.choice([0.0, -40.0, np.nan, -35.5], 200),
                           "tau": rng.choice([0.0, -1.0, 12.0, np.nan], 200),
                           "input_resistance": rng.choice([-3.0, 150.0, 0.0], 200)})
    mixed = floats.assign(tau=floats["tau"].astype(object).where(floats["tau"] != 12.0, "12"))
    for frame in (floats, mixed):
        cols = list(frame.columns)
        slow = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        np.testing.assert_array_equal(_as_floats(frame, cols), slow)
    masked, counts = mask_missing_codes(floats)
    masked_mixed, counts_mixed = mask_missing_codes(mixed)
    pd.testing.assert_frame_equal(counts, counts_mixed)
    assert counts["n_values"].sum() > 50
    pd.testing.assert_frame_equal(masked.drop(columns="tau"), masked_mixed.drop(columns="tau"))
    assert floats["tau"].eq(0.0).any()  # the input is left as it was
