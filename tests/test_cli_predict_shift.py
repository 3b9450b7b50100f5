"""``ephys2tx predict`` under shift: --align auto|none|em, the user prior, the shift alarm."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ephys2tx import CLASSES

from conftest import run_cli as _run


@pytest.fixture(scope="module")
def model_dir(human_forest_dir):
    return human_forest_dir


@pytest.fixture(scope="module")
def pvalb_cells(human, tmp_path_factory):
    """60 real human Pvalb cells (a query whose class mix is far from the training mix)."""
    ids = human.labels.index[human.labels == "Pvalb"][:60]
    path = tmp_path_factory.mktemp("q") / "pvalb.csv"
    human.features.loc[ids].rename_axis("cell_id").reset_index().to_csv(path, index=False)
    return path


def _predict(model_dir, path, tmp_path, capsys, *args, name="p.csv"):
    code, out, err = _run(["predict", "--model", model_dir, "--input", path, "--column-map", "ipfx",
                           "--out", tmp_path / name, *args], capsys)
    return code, out, err, (pd.read_csv(tmp_path / name) if code == 0 else None)


def test_em_re_estimates_the_class_mix_and_keeps_the_unadapted_call(model_dir, pvalb_cells, tmp_path,
                                                                    capsys):
    code, _, err, em = _predict(model_dir, pvalb_cells, tmp_path, capsys, "--align", "em", name="em.csv")
    assert code == 0, err
    assert "estimated class mix of the query (EM): " in err
    code, _, err, none = _predict(model_dir, pvalb_cells, tmp_path, capsys, "--align", "none",
                                  name="none.csv")
    assert code == 0, err
    assert "predicted_subclass_unadapted" not in none.columns
    pd.testing.assert_series_equal(em["predicted_subclass_unadapted"], none["predicted_subclass"],
                                   check_names=False)
    np.testing.assert_allclose(em[[f"prob_{c}" for c in CLASSES]].sum(axis=1), 1.0, atol=1e-9)
    # an all-Pvalb query: EM moves the class mix towards Pvalb
    assert em["prob_Pvalb"].mean() > none["prob_Pvalb"].mean() + 0.05
    assert (em["predicted_subclass"] == "Pvalb").mean() >= (none["predicted_subclass"] == "Pvalb").mean()


def test_em_is_the_label_shift_em_of_map(model_dir, human):
    from ephys2tx.mapping.reference import load_reference_model
    from ephys2tx.models.label_shift import em_prior
    from ephys2tx.models.predict_shift import predict_with_shift
    from ephys2tx.models.shift_adapt import reference_prior

    model = load_reference_model(model_dir)
    X = human.features.iloc[::7]
    outcome = predict_with_shift(model, X, align="em")
    base = model.predict_frame(X)[[f"prob_{c}" for c in model.classes]].to_numpy(float)
    expected = em_prior(base, reference_prior(model))
    np.testing.assert_allclose(outcome.predictions[[f"prob_{c}" for c in model.classes]], expected.proba)
    np.testing.assert_allclose(outcome.adapt.class_mix, expected.prior)
    assert outcome.adapt.method == "em" and outcome.adapt.requested == "em"


def test_auto_says_what_it_chose(model_dir, pvalb_cells, tmp_path, capsys):
    from ephys2tx.models.predict_shift import PREDICT_AUTO_METHOD
    from ephys2tx.models.shift_adapt import AUTO_MIN_CELLS

    code, _, err, pred = _predict(model_dir, pvalb_cells, tmp_path, capsys)
    assert code == 0, err
    assert f"--align auto chose {PREDICT_AUTO_METHOD}: 60 cells" in err
    assert ("predicted_subclass_unadapted" in pred.columns) == (PREDICT_AUTO_METHOD != "none")
    small = tmp_path / "small.csv"
    pd.read_csv(pvalb_cells).iloc[:AUTO_MIN_CELLS - 1].to_csv(small, index=False)
    code, _, err, pred = _predict(model_dir, small, tmp_path, capsys, name="small_out.csv")
    assert code == 0, err
    assert f"--align auto chose none: only {AUTO_MIN_CELLS - 1} cells" in err
    assert "predicted_subclass_unadapted" not in pred.columns


def test_a_user_prior_replaces_the_estimated_mix_and_the_em_call_is_kept(model_dir, pvalb_cells,
                                                                         tmp_path, capsys):
    prior = "Lamp5=0.7,Vip=0.1,Sst=0.1,Pvalb=0.1"
    code, _, err, em = _predict(model_dir, pvalb_cells, tmp_path, capsys, "--align", "em", "--prior", prior,
                                name="em.csv")
    assert code == 0, err
    code, _, _, em_free = _predict(model_dir, pvalb_cells, tmp_path, capsys, "--align", "em",
                                   name="em_free.csv")
    code, _, _, none = _predict(model_dir, pvalb_cells, tmp_path, capsys, "--align", "none", "--prior", prior,
                                name="none.csv")
    assert "explicit class prior (--prior)" in err
    pd.testing.assert_series_equal(em["predicted_subclass_no_prior"], em_free["predicted_subclass"],
                                   check_names=False)
    pd.testing.assert_series_equal(em["predicted_subclass"], none["predicted_subclass"])
    assert (em["predicted_subclass"] == "Lamp5").sum() >= (em["predicted_subclass_no_prior"] == "Lamp5").sum()


def test_the_cautious_candidates_run_from_the_command_line(model_dir, pvalb_cells, tmp_path, capsys):
    code, _, err, cautious = _predict(model_dir, pvalb_cells, tmp_path, capsys, "--align", "em@300",
                                      name="c.csv")
    assert code == 0, err
    code, _, err, tested = _predict(model_dir, pvalb_cells, tmp_path, capsys, "--align", "em_test@100",
                                    name="t.csv")
    assert code == 0, err
    assert "class-mix test (likelihood ratio, Saerens et al. 2002): chi2 = " in err
    assert "predicted_subclass_unadapted" in cautious.columns and "predicted_subclass_unadapted" in tested
    # 300 pseudo-cells of the training mix hold the 60-cell query's mix back more than 100 do
    assert cautious["prob_Pvalb"].mean() < tested["prob_Pvalb"].mean()


def test_an_unknown_align_is_refused(model_dir, pvalb_cells, tmp_path, capsys):
    code, _, err, _ = _predict(model_dir, pvalb_cells, tmp_path, capsys, "--align", "ot")
    assert code == 2 and "unknown --align 'ot'" in err and "Traceback" not in err
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.slow
def test_predict_shift_benchmark_runs_and_selects_leave_one_scenario_out(data_dir):
    """Two real scenarios, a small forest: the benchmark's scores, CIs and LOSO selection."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_predict_shift.py"
    spec = importlib.util.spec_from_file_location("bench_predict_shift", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.run(data_dir, scenarios=("human L2", "bridge (IPFX pipeline)"), n_boot=50, n_estimators=20)
    from ephys2tx.models.predict_shift import PREDICT_CANDIDATES

    by_name = {s["name"]: s for s in res["scenarios"]}
    bridge = by_name["bridge (IPFX pipeline)"]["methods"]
    assert set(bridge) == {*PREDICT_CANDIDATES, "none+layer"}
    lo, hi = bridge["em"]["macro_f1_ci95"]
    assert lo <= bridge["em"]["macro_f1"] <= hi
    # the bridge cells are almost all Lamp5 and Vip: re-estimating the class mix helps a lot
    assert bridge["em"]["macro_f1"] > bridge["none"]["macro_f1"] + 0.05
    assert by_name["bridge (IPFX pipeline)"]["n_missing_features"] == 2  # read through the ipfx map
    # leave-one-scenario-out: each scenario's choice is the best candidate on the other scenario
    for name, other in (("human L2", "bridge (IPFX pipeline)"), ("bridge (IPFX pipeline)", "human L2")):
        m = by_name[other]["methods"]
        gains = [m[c]["macro_f1"] - m["none"]["macro_f1"] for c in PREDICT_CANDIDATES]
        assert res["loso"][name]["choice"] == PREDICT_CANDIDATES[int(np.argmax(gains))]
    table = bench.results_table(res)
    assert list(table["scenario"]) == ["human L2", "bridge (IPFX pipeline)", "mean"]
    assert bench.defaults(res)["auto_method"] in PREDICT_CANDIDATES


# ----------------------------------------------------------------------------- shift alarm


@pytest.fixture(scope="module")
def held_in_cells(human, tmp_path_factory):
    """Every 4th real human cell, all features, and the same cells through a simulated other rig."""
    table = human.features.iloc[::4].rename_axis("cell_id").reset_index()
    folder = tmp_path_factory.mktemp("rig")
    table.to_csv(folder / "cells.csv", index=False)
    shifted = table.copy()
    shifted[["v_baseline", "threshold_v_rheo"]] += 14.0  # a liquid-junction offset
    shifted[["tau", "input_resistance"]] *= 2.0
    shifted.to_csv(folder / "shifted.csv", index=False)
    return folder / "cells.csv", folder / "shifted.csv"


def test_train_stores_a_bounded_float32_sample_of_its_cells(model_dir, human):
    from ephys2tx.mapping.reference import load_reference_model
    from ephys2tx.models.persistence import load_reference_sample
    from ephys2tx.models.predict_shift import MAX_REFERENCE_ROWS, reference_frames

    arrays = load_reference_sample(model_dir)
    model = load_reference_model(model_dir)
    assert arrays["X"].dtype == np.float32 and len(arrays["X"]) <= MAX_REFERENCE_ROWS
    X, labels = reference_frames(arrays, model)
    assert list(X.columns) == model.features and len(X) == len(human.labels)  # 664 < 1000: all cells
    assert pd.Series(labels).value_counts().to_dict() == human.labels.value_counts().to_dict()


def test_reference_sample_is_stratified_and_bounded():
    from ephys2tx.models.predict_shift import reference_sample

    rng = np.random.default_rng(0)
    y = rng.choice(CLASSES, size=4000, p=[0.1, 0.4, 0.3, 0.2])
    X = pd.DataFrame(rng.normal(size=(4000, 3)), columns=["a", "b", "c"])
    sample = reference_sample(X, y, CLASSES, random_state=0)
    assert sample["X"].shape == (1000, 3) and sample["X"].dtype == np.float32
    share = np.bincount(sample["y"], minlength=4) / 1000
    np.testing.assert_allclose(share, [np.mean(y == c) for c in CLASSES], atol=0.002)
    with pytest.raises(ValueError, match="outside the model's classes"):
        reference_sample(X, np.append(y[:-1], "Sncg"), CLASSES)


def test_a_shifted_query_fires_one_loud_alarm_before_adaptation(model_dir, held_in_cells, tmp_path, capsys):
    cells, shifted = held_in_cells
    code, _, err, _ = _predict(model_dir, cells, tmp_path, capsys, name="a.csv")
    assert code == 0, err
    assert "SHIFT ALARM" not in err and "shift check: no shift detected" in err
    code, _, err, _ = _predict(model_dir, shifted, tmp_path, capsys, "--align", "em", name="b.csv")
    assert code == 0, err
    alarm = [line for line in err.splitlines() if "SHIFT ALARM" in line]
    assert len(alarm) == 1
    assert "beyond a class-mix difference" in alarm[0] and "v_baseline" in alarm[0]
    assert "report.md" not in alarm[0] and "ephys2tx map" in alarm[0]


def test_a_model_folder_without_a_sample_still_predicts_and_says_so(model_dir, held_in_cells, tmp_path, capsys):
    import json
    import shutil

    old = tmp_path / "old_model"
    shutil.copytree(model_dir, old)
    meta = json.loads((old / "model.json").read_text())
    del meta["reference_sample_file"], meta["reference_sample_sha256"]
    (old / "model.json").write_text(json.dumps(meta))
    (old / "reference_sample.npz").unlink()
    _, shifted = held_in_cells
    code, _, err, pred = _predict(old, shifted, tmp_path, capsys)
    assert code == 0, err
    assert "stores no sample of its training cells" in err and "counts OOD cells only" in err
    new = _predict(model_dir, shifted, tmp_path, capsys, name="new.csv")[3]
    pd.testing.assert_frame_equal(pred, new)  # the predictions do not depend on the sample


def test_a_sample_that_does_not_fit_the_model_is_refused(model_dir, held_in_cells, tmp_path, capsys):
    import json
    import shutil

    from ephys2tx.models.persistence import sha256_file

    bad = tmp_path / "bad_model"
    shutil.copytree(model_dir, bad)
    arrays = dict(np.load(bad / "reference_sample.npz"))
    arrays["X"] = arrays["X"][:, :5]
    np.savez(bad / "reference_sample.npz", **arrays)
    meta = json.loads((bad / "model.json").read_text())
    meta["reference_sample_sha256"] = sha256_file(bad / "reference_sample.npz")
    (bad / "model.json").write_text(json.dumps(meta))
    code, _, err, _ = _predict(bad, held_in_cells[0], tmp_path, capsys)
    assert code == 2 and "reference_sample.npz does not fit" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- missing features


@pytest.mark.parametrize("kept, loud", [(80, False), (50, True)])
def test_missing_model_features_are_named_and_many_recommend_map(kept, loud, model_dir, human, tmp_path,
                                                                 capsys):
    """93 model features: 13 absent (under a third) are named; 43 absent (over a third) recommend map."""
    from ephys2tx.mapping.reference import load_reference_model

    features = load_reference_model(model_dir).features
    path = tmp_path / "few.csv"
    human.features.iloc[::9][features[:kept]].rename_axis("cell_id").reset_index().to_csv(path, index=False)
    code, _, err, pred = _predict(model_dir, path, tmp_path, capsys, "--align", "none")
    assert code == 0, err
    absent = features[kept:]
    line = next(line for line in err.splitlines() if "features are absent" in line)
    assert line.startswith(f"warning: {len(absent)} of the model's {len(features)} features are absent")
    assert ", ".join(absent[:6]) + ", ..." in line and absent[6] not in line
    assert ("more than a third of the model's features are missing" in err) == loud
    assert ("use `ephys2tx map`" in err) == loud
    assert pred["predicted_subclass"].isin(CLASSES).all()  # still predicted, from the medians
