"""Shift benchmark: scenarios never leak query cells into training, LOSO selection, a real quick run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from ephys2tx.experiments.shift_benchmark import (ShiftBenchmarkConfig, _codes, _scores, build_scenarios,
                                                 loso_select, run_shift_benchmark)


def test_loso_never_uses_the_held_out_scenario():
    scores = pd.DataFrame({"forest:none": [0.5, 0.5, 0.5], "forest:a": [0.6, 0.6, 0.0],
                           "forest:b": [0.55, 0.55, 0.9]}, index=["s1", "s2", "s3"])
    sel = loso_select(scores)
    # on s3, b wins by far, but s3's choice is made on s1 and s2, where a is better
    assert sel["per_scenario"]["s3"]["choice"] == "forest:a"
    # on s1, the others are s2 (a +0.1, b +0.05) and s3 (a -0.5, b +0.4): b
    assert sel["per_scenario"]["s1"]["choice"] == "forest:b"
    assert sel["overall"]["choice"] == "forest:b"
    assert sel["gains"]["forest:none"] == 0.0
    tie = pd.DataFrame({"forest:none": [0.5, 0.5], "forest:x": [0.5, 0.5]}, index=["s1", "s2"])
    assert loso_select(tie)["overall"]["choice"] == "forest:none"  # ties: the first column


def test_scores_match_sklearn():
    rng = np.random.default_rng(0)
    labels = np.array(["Lamp5", "Pvalb", "Sst", "Vip"])
    truth = labels[rng.choice([0, 3], size=200, p=[0.8, 0.2])]
    pred = labels[rng.integers(0, 4, size=200)]
    t, p = _codes(truth), _codes(pred)
    f1, acc = _scores(t, p, np.unique(t))
    assert f1[0] == pytest.approx(f1_score(truth, pred, labels=["Lamp5", "Vip"], average="macro"))
    assert acc[0] == pytest.approx(np.mean(truth == pred))


def test_scenarios_keep_query_cells_out_of_training(data_dir):
    config = ShiftBenchmarkConfig(data_dir=str(data_dir), rig_tasks=2)
    scenarios = build_scenarios(config)
    names = [s.name for s in scenarios]
    assert names[:5] == ["mouse L1", "mouse L2/3", "mouse L4", "mouse L5", "mouse L6"]
    assert {"human L2", "human L3", "human L4-6", "human acute->culture", "human culture->acute",
            "mouse->human", "bridge (IPFX pipeline)", "synthetic rig (mouse)",
            "synthetic rig (human)"} <= set(names)
    for scen in scenarios:
        for task in scen.tasks:
            assert not set(task.X_train.index) & set(task.X_query.index), scen.name
            assert list(task.X_train.columns) == list(task.X_query.columns)
            assert task.y_query.index.equals(task.X_query.index)
            assert len(task.y_query) >= 40
    bridge = scenarios[names.index("bridge (IPFX pipeline)")].tasks[0]
    assert len(bridge.y_query) > 450 and set(bridge.y_query) <= {"Lamp5", "Vip"}
    assert bridge.X_train.shape[1] >= 15  # the shipped ipfx map reads most harmonised features
    rig = scenarios[names.index("synthetic rig (human)")].tasks
    assert all(8 <= t.X_query.shape[1] <= 15 for t in rig)
    assert rig[0].info["rig"] != rig[1].info["rig"]


@pytest.fixture(scope="module")
def small_run(data_dir):
    config = ShiftBenchmarkConfig(data_dir=str(data_dir), scenarios=("mouse L1", "synthetic rig (mouse)"),
                                  models=("forest",), methods=("none", "em", "cc"), model_methods=(),
                                  layer_methods=("none",), rig_tasks=1, alarm_repeats=1, n_boot=200,
                                  n_permutations=50)
    return run_shift_benchmark(config)


def test_quick_benchmark_on_real_data(small_run):
    """A small real run: the joint EM recovers much of the layer-1 drop; CIs bracket the scores."""
    res = small_run
    by_name = {s["name"]: s for s in res["scenarios"]}
    l1 = by_name["mouse L1"]
    ident = l1["in_distribution"]["forest"]["macro_f1"]
    today = l1["methods"]["forest:none"]
    cc = l1["methods"]["forest:cc"]
    assert ident > 0.9 and today["macro_f1"] < ident - 0.1  # a real drop
    assert cc["macro_f1"] > today["macro_f1"] + 0.05
    assert cc["accuracy"] > 0.85
    for stat in l1["methods"].values():
        lo, hi = stat["macro_f1_ci95"]
        assert lo <= stat["macro_f1"] <= hi
    assert "forest:none+layer" in l1["methods"] and l1["layer_notes"]
    assert l1["alarm"]["level"][0] in ("note", "alarm")
    assert set(res["selection"]["candidates"]) == {"forest:none", "forest:em", "forest:cc", "forest:cc/tied"}
    assert res["summary"]["mean_drop"] > 0
    kinds = {row["kind"]: row for row in res["alarm"]["table"]}
    assert kinds["in-distribution n=200"]["alarm_rate"] == 0.0
    assert kinds["rig shift only n=100"]["marginal_rate"] == 1.0
    from ephys2tx.report.shift_report import benchmark_markdown

    text = benchmark_markdown(res)
    assert "## Shift benchmark" in text and "mouse L1" in text and "LOSO" in text


def test_map_defaults_are_the_selection_output():
    """map's defaults come from shift_defaults.json, which shift_defaults() writes from a run."""
    from ephys2tx.experiments.shift_benchmark import shift_defaults
    from ephys2tx.models import shift_adapt
    from ephys2tx.models.map_models import MAP_MODELS

    saved = shift_adapt._benchmark_defaults()
    assert shift_adapt.DEFAULT_MAP_MODEL == saved["model"] in MAP_MODELS
    assert shift_adapt.AUTO_METHOD == saved["auto_method"] in shift_adapt.ALIGN_METHODS
    assert saved["selected_from"]["candidate"].startswith(f"{saved['model']}:{saved['auto_method']}")
    fake = {"selection": {"overall": {"choice": "ensemble:ccm_mix@30", "gain": 0.1}},
            "layer_selection": {"overall": {"choice": "hgb:cc_mix+layer"}},
            "scenarios": [{"name": "s"}], "config": {"models": ("forest",), "seed": 0, "n_boot": 10}}
    d = shift_defaults(fake)
    assert (d["model"], d["auto_method"], d["mean_relevance"], d["user_prior_mode"], d["covariance"]) == (
        "ensemble", "ccm_mix", 30.0, "em", "auto")
    fake["selection"]["overall"]["choice"] = "hgb:cc_mix/tied"
    d = shift_defaults(fake)
    assert (d["model"], d["auto_method"], d["mean_relevance"], d["covariance"]) == ("hgb", "cc_mix", None, "tied")
    assert shift_adapt.COVARIANCE == (saved.get("covariance") or "auto") in shift_adapt.COVARIANCES


def test_candidate_names_round_trip():
    from ephys2tx.experiments.shift_benchmark import _candidates, parse_candidate

    assert parse_candidate("hgb:ccm_mix@100/tied") == ("hgb", "ccm_mix", 100.0, "tied")
    assert parse_candidate("forest:cc") == ("forest", "cc", None, "auto")
    assert parse_candidate("ensemble:ccm@30") == ("ensemble", "ccm", 30.0, "auto")
    config = ShiftBenchmarkConfig(models=("forest",), methods=("none", "cc", "ccm_mix"), mean_relevances=(10.0, 100.0))
    names = _candidates(config)
    assert names == ["forest:none", "forest:cc", "forest:cc/tied", "forest:ccm_mix@10", "forest:ccm_mix@10/tied",
                     "forest:ccm_mix@100", "forest:ccm_mix@100/tied"]
    assert all(parse_candidate(n)[3] in ("auto", "tied") for n in names)


def test_joint_em_uses_the_installed_covariance_default(monkeypatch):
    """fit_alignment without a covariance uses shift_defaults.json's choice (COVARIANCE)."""
    from ephys2tx.models import shift_adapt

    rng = np.random.default_rng(0)
    n = 600
    y = np.repeat(["Lamp5", "Pvalb", "Sst", "Vip"], n // 4)
    X = pd.DataFrame(rng.normal(size=(n, 3)) + (pd.Series(y).factorize()[0][:, None] * 1.5),
                     columns=["a", "b", "c"])
    for cov in ("tied", "full"):
        monkeypatch.setattr(shift_adapt, "COVARIANCE", cov)
        res = shift_adapt.fit_alignment(X.iloc[:100], X, y, ["Lamp5", "Pvalb", "Sst", "Vip"])
        assert res.params["covariance"] == cov


def test_the_study_hook_writes_the_section(small_run, tmp_path):
    import json

    from ephys2tx.experiments.shift_benchmark import benchmark_for_study
    from ephys2tx.report.writer import write_results
    from ephys2tx.study import StudyConfig, StudyResult

    assert benchmark_for_study(StudyConfig(models=("rf",))) is None  # --model: the named models only
    assert benchmark_for_study(StudyConfig(feature_table="x.parquet", species=("mouse",))) is None
    result = StudyResult(config=StudyConfig(species=()), records=[], species={}, seconds=1.0, shift=small_run)
    out = write_results(result, tmp_path / "results")
    report = (out / "report.md").read_text()
    assert "## Shift benchmark" in report and "mouse L1" in report
    records = json.loads((out / "metrics.json").read_text())
    assert records[-1]["section"] == "shift_benchmark"
    assert records[-1]["selection"]["overall"]["choice"] == small_run["selection"]["overall"]["choice"]


def test_training_variance_refits_on_donor_resamples(monkeypatch):
    """Mechanics (synthetic): the full-side Δ is the direct Δ, each refit sees a donor subset."""
    from ephys2tx.experiments import shift_benchmark as sb

    rng = np.random.default_rng(0)
    classes = ["Lamp5", "Pvalb", "Sst", "Vip"]
    n = 240
    y = pd.Series(np.repeat(classes, n // 4), index=[f"c{i}" for i in range(n)])
    centres = {c: rng.normal(0, 2, 4) for c in classes}
    X = pd.DataFrame([centres[c] + rng.normal(0, 1, 4) for c in y], index=y.index,
                     columns=["a", "b", "c", "d"])
    groups = pd.Series([f"donor{i % 12}" for i in range(n)], index=y.index, dtype="string")
    query = rng.random(n) < 0.3
    task = sb.Task(X[~query], y[~query], X[query] + 0.5, y[query])
    scen = sb.Scenario("toy", "toy", "toy", [task])
    seen = []
    real_fit = sb._fit

    def spy_fit(kind, Xt, yt, config, seed):
        seen.append(set(groups.reindex(Xt.index)))
        return real_fit(kind, Xt, yt, config, seed)

    monkeypatch.setattr(sb, "build_scenarios", lambda config: [scen])
    monkeypatch.setattr(sb, "_training_groups", lambda config: groups)
    monkeypatch.setattr(sb, "_fit", spy_fit)
    config = ShiftBenchmarkConfig(n_estimators=20, seed=0)
    res = sb.delta_training_variance(config, candidate="hgb:em", baseline="forest:none", n_refits=3)
    row = res["rows"][0]
    assert len(row["refit_deltas"]) == 3 and row["n_train_groups"] == 12
    assert row["ci95"][0] <= row["delta"] <= row["ci95"][1]
    # the full training side: the same Δ as scoring the two refitted models directly
    from ephys2tx.models.shift_adapt import adapt_predict

    fits = {k: real_fit(k, task.X_train, task.y_train, config, 0) for k in ("forest", "hgb")}
    truth = _codes(task.y_query)
    labels = np.unique(truth)
    a = sb._pred_codes(classes, adapt_predict(fits["hgb"], task.X_query, task.X_train, task.y_train,
                                              "em").proba)
    b = sb._pred_codes(classes, adapt_predict(fits["forest"], task.X_query, task.X_train, task.y_train,
                                              "none").proba)
    assert row["delta"] == pytest.approx(_scores(truth, a, labels)[0][0] - _scores(truth, b, labels)[0][0])
    # two fits (forest, hgb) per replicate: the first pair on every donor, the refits on fewer
    assert seen[0] == seen[1] == set(groups)
    assert all(len(s) < 12 for s in seen[2:])
    with pytest.raises(ValueError, match="n_refits"):
        sb.delta_training_variance(config, candidate="hgb:em", n_refits=1)


def test_training_variance_does_not_depend_on_workers(monkeypatch):
    """Every draw is made before the fits: 2 worker processes give the serial result exactly."""
    from ephys2tx.experiments import shift_benchmark as sb

    rng = np.random.default_rng(1)
    classes = ["Lamp5", "Pvalb", "Sst", "Vip"]
    y = pd.Series(np.repeat(classes, 40), index=[f"c{i}" for i in range(160)])
    centres = {c: rng.normal(0, 2, 3) for c in classes}
    X = pd.DataFrame([centres[c] + rng.normal(0, 1, 3) for c in y], index=y.index, columns=["a", "b", "c"])
    groups = pd.Series([f"d{i % 8}" for i in range(160)], index=y.index, dtype="string")
    query = rng.random(160) < 0.3
    scen = sb.Scenario("toy", "toy", "toy", [sb.Task(X[~query], y[~query], X[query] - 0.4, y[query])])
    monkeypatch.setattr(sb, "build_scenarios", lambda config: [scen])
    monkeypatch.setattr(sb, "_training_groups", lambda config: groups)
    config = ShiftBenchmarkConfig(n_estimators=10, seed=3)
    seen = []
    serial = sb.delta_training_variance(config, candidate="forest:em", n_refits=2,
                                        progress=lambda d, done, total: seen.append((done, total)))
    parallel = sb.delta_training_variance(config, candidate="forest:em", n_refits=2, n_jobs=2)
    assert serial["rows"] == parallel["rows"] and serial["mean"] == parallel["mean"]
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)


def test_training_variance_enters_the_report(small_run):
    """The run's shift table gets the training-variance column for the chosen default, and the prose its mean."""
    import copy

    from ephys2tx.report.shift_report import benchmark_markdown, benchmark_table

    res = copy.deepcopy(small_run)
    assert "Δ [CI95 training variance]" not in benchmark_table(res).columns
    choice = res["selection"]["overall"]["choice"]
    res["training_variance"] = {
        "candidate": choice, "baseline": "forest:none", "n_refits": 3, "t_quantile": 4.3, "seconds": 2.0,
        "rows": [{"scenario": "mouse L1", "delta": 0.1, "refit_deltas": [0.1, 0.2, 0.0], "sd": 0.1,
                  "ci95": [-0.33, 0.53], "n_train_groups": 9}],
        "mean": {"delta": 0.1, "ci95": [-0.33, 0.53], "scenarios_better": 1, "n_scenarios": 1}}
    table = benchmark_table(res).set_index("scenario")
    assert table.loc["mouse L1", "Δ [CI95 training variance]"] == "+0.100 [-0.33, +0.53]"
    assert table.loc["synthetic rig (mouse)", "Δ [CI95 training variance]"] == "—"
    text = benchmark_markdown(res)
    assert "Mean Δ over these 1 scenarios +0.100 [-0.330, +0.530]" in text
    assert "shown better (interval above 0) in 0, shown worse in 0" in text
    res["training_variance"]["candidate"] = "something:else"  # another candidate's Δ is not shown
    assert "Δ [CI95 training variance]" not in benchmark_table(res).columns
