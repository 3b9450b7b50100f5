"""Synthetic rig: each distortion touches only its kind of feature, by the documented amount."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ephys2tx.features.rig_shift import (RANGES, RigShift, apply_rig_shift, dirichlet_label_shift,
                                         feature_kind, prior_scales, sample_feature_subset,
                                         sample_rig_shift)


@pytest.mark.parametrize("name,kind", [
    ("threshold_v_rheo", "voltage"), ("v_baseline", "voltage"), ("vm_for_sag", "voltage"),
    ("peak_deltav_rheo", "other"), ("fast_trough_deltav_rheo", "other"),
    ("input_resistance", "resistance"), ("tau", "time_constant"), ("rheobase_i", "current"),
    ("fi_fit_slope", "fi_slope"), ("width_rheo", "width"), ("upstroke_rheo", "rate"),
    ("upstroke_downstroke_ratio_rheo", "other"), ("sag", "sag"), ("adapt_hero", "adaptation"),
])
def test_feature_kinds(name, kind):
    assert feature_kind(name) == kind


def test_apply_rig_shift_moves_what_a_rig_moves():
    X = pd.DataFrame({"v_baseline": [-70.0, -65.0], "peak_deltav_rheo": [60.0, 55.0],
                      "input_resistance": [100.0, 200.0], "rheobase_i": [100.0, 50.0],
                      "tau": [0.01, 0.02], "width_rheo": [0.0005, 0.001], "upstroke_rheo": [300.0, 200.0],
                      "sag": [0.1, 0.2], "adapt_hero": [0.05, np.nan]})
    shift = RigShift(ljp_mv=-12.0, resistance_factor=2.0, tau_factor=0.5, kinetics_factor=1.25,
                     sag_factor=1.0, sag_steady_state=True, adapt_factor=1.0, adapt_n_isi=3)
    out = apply_rig_shift(X, shift)
    np.testing.assert_allclose(out["v_baseline"], X["v_baseline"] - 12.0)
    np.testing.assert_allclose(out["peak_deltav_rheo"], X["peak_deltav_rheo"])  # relative: unchanged
    np.testing.assert_allclose(out["input_resistance"], X["input_resistance"] * 2.0)
    np.testing.assert_allclose(out["rheobase_i"], X["rheobase_i"] / 2.0)
    np.testing.assert_allclose(out["tau"], X["tau"] * 0.5)
    np.testing.assert_allclose(out["width_rheo"], X["width_rheo"] * 1.25)
    np.testing.assert_allclose(out["upstroke_rheo"], X["upstroke_rheo"] / 1.25)
    np.testing.assert_allclose(out["sag"], X["sag"] / (1 - X["sag"]))
    a = 0.05
    r = ((1 + a) / (1 - a)) ** 2
    np.testing.assert_allclose(out["adapt_hero"].iloc[0], (r - 1) / (r + 1))
    assert np.isnan(out["adapt_hero"].iloc[1])
    np.testing.assert_allclose(apply_rig_shift(X, RigShift()), X)


def test_sampled_rigs_stay_in_the_documented_ranges():
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = sample_rig_shift(rng)
        assert RANGES["ljp_mv"][0] <= s.ljp_mv <= RANGES["ljp_mv"][1]
        for key in ("resistance", "tau", "kinetics", "sag", "adapt"):
            lo, hi = RANGES[f"{key}_factor"]
            assert lo <= getattr(s, f"{key}_factor") <= hi
        assert s.adapt_n_isi in (0, 2, 3, 4)


def test_feature_subset_and_dirichlet_label_shift():
    rng = np.random.default_rng(1)
    names = [f"f{i}" for i in range(21)]
    sizes = {len(sample_feature_subset(names, rng)) for _ in range(100)}
    assert min(sizes) >= 8 and max(sizes) <= 15 and len(sizes) > 3
    assert sample_feature_subset(names[:5], rng) == names[:5]
    labels = pd.Series(np.repeat(["a", "b", "c"], [500, 300, 200]),
                       index=[f"c{i}" for i in range(1000)])
    mixes = []
    for _ in range(20):
        ids = dirichlet_label_shift(labels, rng)
        assert len(ids) >= 40 and ids.is_unique and set(ids) <= set(labels.index)
        mixes.append(labels.loc[ids].value_counts(normalize=True).reindex(["a", "b", "c"], fill_value=0))
    assert np.std([m["a"] for m in mixes]) > 0.1  # the class mix really varies


def test_prior_scales_follow_the_ranges():
    table = prior_scales(["v_baseline", "tau", "sag", "peak_deltav_rheo"])
    assert table.loc["v_baseline", "offset_sd"] == pytest.approx(7.5)
    assert table.loc["tau", "log_factor_sd"] == pytest.approx(np.log(4) / 4)
    assert np.isnan(table.loc["peak_deltav_rheo", "offset_sd"])
    assert table.loc["sag", "log_scale_sd"] > table.loc["peak_deltav_rheo", "log_scale_sd"]
