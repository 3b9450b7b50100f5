"""Shift alarm: nominal false alarms without shift, fires on rig shifts, not on a class mix alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ephys2tx.models.shift_alarm import (_weighted_ks, mmd_permutation_test, ood_alarm,
                                         reference_space, shift_alarm)


def test_mmd_test_false_alarm_rate_and_power():
    rng = np.random.default_rng(0)
    fired = 0
    for rep in range(40):
        X, Y = rng.normal(size=(60, 4)), rng.normal(size=(300, 4))
        _, p, _ = mmd_permutation_test(X, Y, n_permutations=100, random_state=rep)
        fired += p < 0.05
    assert fired <= 6  # 2 expected; P(> 6) < 0.005 under the null
    X = rng.normal(size=(60, 4)) + np.array([0.8, 0, 0, 0])
    _, p, _ = mmd_permutation_test(X, rng.normal(size=(300, 4)), n_permutations=200)
    assert p < 0.01


def test_weighted_ks():
    x = np.array([1.0, 2.0, 3.0])
    assert _weighted_ks(x, x) == 0.0
    assert _weighted_ks(x, x + 10) == 1.0
    y = np.array([1.0, 10.0])
    assert _weighted_ks(x, y, np.array([1.0, 0.0])) == pytest.approx(2 / 3)


def _toy(rng, n, mix, offset=0.0):
    means = np.array([[0.0, 0.0], [3.0, 3.0]])
    y = rng.choice(2, size=n, p=mix)
    X = pd.DataFrame(rng.normal(means[y], 0.7), columns=["peak_deltav_rheo", "v_baseline"])
    X["v_baseline"] += offset
    return X, np.array(["Pvalb", "Sst"])[y]


def _proba(X):
    # exact posteriors of the toy model under the reference mix 50/50
    d0 = ((X.to_numpy() - [0, 0]) ** 2).sum(axis=1)
    d1 = ((X.to_numpy() - [3, 3]) ** 2).sum(axis=1)
    l0, l1 = np.exp(-d0 / (2 * 0.49)), np.exp(-d1 / (2 * 0.49))
    return np.column_stack([l0, l1]) / (l0 + l1)[:, None]


def test_alarm_levels_on_a_toy_reference():
    rng = np.random.default_rng(1)
    R, yr = _toy(rng, 800, [0.5, 0.5])
    same, _ = _toy(rng, 200, [0.5, 0.5])
    ok = shift_alarm(same, R, yr, proba=_proba(same), classes=["Pvalb", "Sst"], n_permutations=100)
    assert ok.level == "ok" and not ok.fired
    mix, _ = _toy(rng, 200, [0.1, 0.9])
    note = shift_alarm(mix, R, yr, proba=_proba(mix), classes=["Pvalb", "Sst"], n_permutations=100)
    assert note.level == "note" and note.class_mix["Sst"] > 0.8
    rig, _ = _toy(rng, 200, [0.5, 0.5], offset=1.5)
    alarm = shift_alarm(rig, R, yr, proba=_proba(rig), classes=["Pvalb", "Sst"], n_permutations=100)
    assert alarm.fired and "SHIFT ALARM" in alarm.message
    assert alarm.per_feature.index[0] == "v_baseline"
    flags = np.r_[np.ones(60, bool), np.zeros(140, bool)]
    by_ood = shift_alarm(same, R, yr, proba=_proba(same), classes=["Pvalb", "Sst"], ood_flags=flags,
                         n_permutations=100)
    assert by_ood.fired and "out of distribution" in by_ood.message
    assert set(by_ood.as_dict()) >= {"level", "p_marginal", "p_beyond_label_shift", "per_feature"}


def test_a_small_query_without_a_detected_shift_says_the_test_is_weak():
    """5 cells: 'no shift detected' alone read as evidence of no shift."""
    rng = np.random.default_rng(1)
    R, yr = _toy(rng, 800, [0.5, 0.5])
    few, _ = _toy(rng, 5, [0.5, 0.5])
    small = shift_alarm(few, R, yr, proba=_proba(few), classes=["Pvalb", "Sst"], n_permutations=100)
    assert small.level == "ok" and "With 5 cells the test has little power" in small.message
    many, _ = _toy(rng, 200, [0.5, 0.5])
    ok = shift_alarm(many, R, yr, proba=_proba(many), classes=["Pvalb", "Sst"], n_permutations=100)
    assert ok.level == "ok" and "little power" not in ok.message


def test_reference_space_drops_mostly_missing_features():
    R = pd.DataFrame({"a": np.arange(1.0, 11.0), "b": np.arange(10.0)})
    Q = pd.DataFrame({"a": [1.0, 2.0, np.nan], "b": [np.nan, np.nan, 1.0]})
    Zq, Zr, feats = reference_space(Q, R)
    assert feats == ["a"] and np.isfinite(Zq).all() and Zr.shape == (10, 1)


def test_ood_alarm():
    assert ood_alarm(np.r_[np.ones(40, bool), np.zeros(60, bool)]).fired
    assert not ood_alarm(np.r_[np.ones(5, bool), np.zeros(95, bool)]).fired


def test_alarm_on_real_mouse_cells(data_dir):
    """Held-out reference cells: no alarm; the same cells through a rig: alarm."""
    from ephys2tx.features.rig_shift import RigShift, apply_rig_shift
    from ephys2tx.mapping import fit_reference_model, reference_data
    from ephys2tx.models.shift_adapt import reference_prior

    ref = reference_data("mouse", data_dir)
    feats = ["v_baseline", "input_resistance", "tau", "width_rheo", "peak_deltav_rheo", "sag",
             "upstroke_downstroke_ratio_rheo", "rheobase_i"]
    rng = np.random.default_rng(0)
    held = rng.choice(len(ref.labels), size=200, replace=False)
    train = np.setdiff1d(np.arange(len(ref.labels)), held)
    X, y = ref.features[feats].iloc[train], ref.labels.iloc[train]
    model = fit_reference_model(X, y, species="mouse", n_estimators=30, n_splits=3)
    cols = [f"prob_{c}" for c in model.classes]

    def alarm(Q):
        fr = model.predict_frame(Q)
        return shift_alarm(Q, X, y, proba=fr[cols].to_numpy(), classes=model.classes,
                           reference_prior=reference_prior(model), ood_flags=fr["ood_flag"],
                           n_permutations=100)

    Q = ref.features[feats].iloc[held]
    assert alarm(Q).level == "ok"
    shifted = apply_rig_shift(Q, RigShift(ljp_mv=-12.0, resistance_factor=1.8, kinetics_factor=1.4))
    assert alarm(shifted).fired


def _large_query(rng, n):
    R, yr = _toy(rng, 800, [0.5, 0.5])
    Q, _ = _toy(rng, n, [0.3, 0.7], offset=0.3)
    return Q, R, yr


def test_per_feature_ks_reads_a_fixed_subsample_of_a_large_query_only():
    """Up to MAX_KS_QUERY cells nothing is subsampled (the same report as with no bound); above,
    a seeded subsample: the same report for the same seed, KS within the documented bound of
    the all-cells value, and the same decision (the tests that decide do not read the KS)."""
    from ephys2tx.models.shift_alarm import MAX_KS_QUERY

    assert MAX_KS_QUERY == 20_000
    rng = np.random.default_rng(3)
    Q, R, yr = _large_query(rng, 5000)
    args = dict(proba=_proba(Q), classes=["Pvalb", "Sst"], n_permutations=100, random_state=7)
    small = shift_alarm(Q, R, yr, max_ks_query=5000, **args)
    exact = shift_alarm(Q, R, yr, max_ks_query=None, **args)
    pd.testing.assert_frame_equal(small.per_feature, exact.per_feature)
    assert repr(small.as_dict() | {"params": None}) == repr(exact.as_dict() | {"params": None})

    sub = shift_alarm(Q, R, yr, max_ks_query=1000, **args)
    again = shift_alarm(Q, R, yr, max_ks_query=1000, **args)
    pd.testing.assert_frame_equal(sub.per_feature, again.per_feature)  # fixed seed
    other = shift_alarm(Q, R, yr, max_ks_query=1000, **{**args, "random_state": 8})
    assert not other.per_feature["ks"].equals(sub.per_feature["ks"])  # it is a subsample
    # the MMD and OOD tests (the decision) are untouched by the KS subsample
    for key in ("level", "mmd2", "p_marginal", "p_beyond_label_shift", "class_mix"):
        assert getattr(sub, key) == getattr(exact, key), key
    pd.testing.assert_series_equal(sub.per_feature["median_shift_sd"].sort_index(),
                                   exact.per_feature["median_shift_sd"].sort_index())
    # DKW: |KS(sub) - KS(all)| <= sup|F_sub - F_all| < eps w.p. 1 - 2 exp(-2 n eps^2); n=1000, p=1e-4
    eps = np.sqrt(np.log(2 / 1e-4) / (2 * 1000))
    for col in ("ks", "ks_beyond_label_shift"):
        gap = (sub.per_feature[col] - exact.per_feature[col].reindex(sub.per_feature.index)).abs()
        assert (gap < eps).all() and gap.max() > 0, (col, gap.max())
    assert sub.params["max_ks_query"] == 1000


def test_ks_subsample_keeps_the_alarm_and_the_most_shifted_feature_on_a_rig_shift():
    rng = np.random.default_rng(4)
    R, yr = _toy(rng, 800, [0.5, 0.5])
    rig, _ = _toy(rng, 30_000, [0.5, 0.5], offset=1.5)
    args = dict(proba=_proba(rig), classes=["Pvalb", "Sst"], n_permutations=100)
    sub = shift_alarm(rig, R, yr, **args)  # the default bound: 20,000 of 30,000 cells
    exact = shift_alarm(rig, R, yr, max_ks_query=None, **args)
    assert sub.fired and exact.fired and sub.message == exact.message
    assert sub.per_feature.index[0] == exact.per_feature.index[0] == "v_baseline"
    np.testing.assert_allclose(sub.per_feature["ks"], exact.per_feature["ks"].reindex(sub.per_feature.index),
                               atol=0.02)
