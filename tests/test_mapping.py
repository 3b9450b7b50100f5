"""Train -> save -> load -> predict, calibration, OOD and map on the real reference tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ephys2tx import CLASSES
from ephys2tx.errors import InputError
from ephys2tx.mapping import (cache_key, fit_reference_model, load_reference_model, map_cells,
                              reference_data, save_reference_model, train)
from ephys2tx.models.calibration import cross_fitted_calibration, expected_calibration_error
from ephys2tx.experiments.mapping_checks import ood_evaluation

pytestmark = pytest.mark.usefixtures("one_torch_thread", "one_openmp_thread")


@pytest.fixture(scope="module")
def human_ref(data_dir):
    return reference_data("human", data_dir)


@pytest.fixture(scope="module")
def mouse_ref(data_dir):
    return reference_data("mouse", data_dir)


@pytest.fixture(scope="module")
def human_forest(human_ref):
    return fit_reference_model(human_ref.features, human_ref.labels, species="human",
                               groups=human_ref.groups, n_estimators=40, random_state=0)


@pytest.fixture(scope="module")
def mouse_forest(mouse_ref):
    return fit_reference_model(mouse_ref.features, mouse_ref.labels, species="mouse",
                               groups=mouse_ref.groups, n_estimators=40, random_state=0)


def test_reference_data_in_canonical_names(human_ref, mouse_ref):
    from ephys2tx.features.canonical import CANONICAL_FEATURES

    assert set(human_ref.features.columns) <= set(CANONICAL_FEATURES)
    assert set(mouse_ref.features.columns) <= set(human_ref.features.columns)
    assert mouse_ref.features.shape[1] == 21
    assert set(mouse_ref.held_out_labels.unique()) == {"Sncg", "Sst Chodl"}
    assert set(human_ref.labels.unique()) == set(CLASSES)


def test_forest_round_trip_on_real_human_table(human_forest, human_ref, tmp_path):
    path = save_reference_model(human_forest, tmp_path / "model", checksums=human_ref.checksums)
    meta = json.loads((path / "model.json").read_text())
    assert meta["training_checksums"] == human_ref.checksums
    mapping = meta["extra"]["mapping"]
    assert mapping["features"] == list(human_ref.features.columns)
    assert mapping["classes"] == list(CLASSES)
    assert 0.5 < mapping["record"]["cv"]["macro_f1"] <= 1.0
    loaded = load_reference_model(path)
    sample = human_ref.features.iloc[::7]
    pd.testing.assert_frame_equal(loaded.predict_frame(sample), human_forest.predict_frame(sample))
    # predictions are mostly right on the training cells, probabilities sum to one
    out = loaded.predict_frame(sample)
    prob = out[[f"prob_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(prob.sum(1), 1.0)
    assert (out["predicted_subclass"] == human_ref.labels.loc[sample.index]).mean() > 0.8


def test_bilstm_round_trip_on_real_human_table(human_ref, tmp_path):
    model = fit_reference_model(human_ref.features, human_ref.labels, species="human",
                                model="bilstm", groups=human_ref.groups, n_splits=2, max_epochs=2)
    path = save_reference_model(model, tmp_path / "bilstm", checksums=human_ref.checksums)
    assert (path / "weights.safetensors").is_file()
    sample = human_ref.features.iloc[:50]
    pd.testing.assert_frame_equal(load_reference_model(path).predict_frame(sample),
                                  model.predict_frame(sample), rtol=1e-5)


@pytest.mark.parametrize("method", ["isotonic", "temperature"])
@pytest.mark.parametrize("which", ["human_forest", "mouse_forest"])
def test_calibration_lowers_ece_on_held_out_folds(which, method, request):
    """Each fold's calibrator is fitted on the other folds' out-of-fold probabilities."""
    model = request.getfixturevalue(which)
    diag = model.diagnostics
    before = expected_calibration_error(diag["oof_proba"], diag["codes"])
    after = expected_calibration_error(
        cross_fitted_calibration(diag["oof_proba"], diag["codes"], diag["fold_ids"], method),
        diag["codes"])
    assert after < 0.8 * before, (before, after)
    if method == model.record["calibration"]["method"]:  # what train records and the report shows
        assert model.record["calibration"]["ece_after"] == pytest.approx(after)
        assert model.record["calibration"]["ece_before"] == pytest.approx(before)


def test_ood_flags_held_out_subclasses(mouse_forest, mouse_ref):
    res = ood_evaluation(mouse_forest, mouse_ref.held_out_features, mouse_ref.held_out_labels,
                         mouse_forest.diagnostics["oof_ood_scores"])
    assert res["flag_rate_in_distribution"] == pytest.approx(0.05, abs=0.005)
    assert res["auroc"] > 0.7
    assert res["flag_rate_held_out"] > 2 * res["flag_rate_in_distribution"]


def test_docs_figures_only_render_given_results(mouse_forest, mouse_ref):
    """The figure functions of docs/mapping.md draw what they are given (no model inside)."""
    from matplotlib.figure import Figure

    from ephys2tx.report.mapping_report import ood_figure, reliability_figure

    oof = mouse_forest.diagnostics["oof_ood_scores"]
    scores = mouse_forest.predict_frame(mouse_ref.held_out_features)["ood_score"].to_numpy()
    fig = ood_figure(scores, mouse_ref.held_out_labels, oof, mouse_forest.ood_norm, "ood")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.lines[0].get_xdata()[0] == pytest.approx(mouse_forest.ood_norm["threshold"])
    assert len(ax.patches) > 0 and ax.get_legend() is not None
    assert isinstance(reliability_figure(mouse_forest.record["calibration"], "rel"), Figure)


def test_query_embedding_onto_the_reference(human_ref):
    from ephys2tx.mapping.query import embedding_onto_reference

    ref = human_ref.features.iloc[:, :5]
    query = ref.iloc[:7].copy()
    query.iloc[0, 0] = np.nan  # filled with the reference median
    ref_xy, query_xy = embedding_onto_reference(ref, query)
    assert ref_xy.shape == (len(ref), 2) and query_xy.shape == (7, 2)
    np.testing.assert_allclose(query_xy[1:], ref_xy[1:7], atol=1e-9)  # same cells, same place
    one_xy, _ = embedding_onto_reference(ref.iloc[:, :1], query.iloc[:, :1])
    assert one_xy.shape == (len(ref), 2) and np.all(one_xy[:, 1] == 0)


def test_predict_frame_keeps_all_nan_rows(human_forest, human_ref):
    frame = human_ref.features.iloc[:3].copy()
    frame.iloc[1] = np.nan
    out = human_forest.predict_frame(frame)
    assert list(out.index) == list(frame.index)
    assert out["predicted_subclass"].iloc[1] == "" and np.isnan(out["confidence"].iloc[1])
    assert out["predicted_subclass"].iloc[0] in CLASSES
    assert out["n_features"].iloc[1] == 0



def test_predicting_and_assembling_leave_their_inputs_as_they_were(human_forest, human_ref):
    """predict_frame reads its features without converting a second copy, and assemble_output
    copies the predictions once: neither writes into what it was given."""
    from ephys2tx.mapping.query import Query, assemble_output

    frame = human_ref.features.iloc[:20][human_forest.features].copy()
    frame.iloc[3] = np.nan
    before = frame.copy()
    out = human_forest.predict_frame(frame)
    pd.testing.assert_frame_equal(frame, before)
    kept = out.copy()
    query = Query(ids=frame.index, id_column="specimen", features=frame, sources={},
                  column_map="ipfx", warnings=[])
    table = assemble_output(query, out)
    pd.testing.assert_frame_equal(out, kept)
    assert list(table.columns) == ["specimen", *out.columns]
    assert isinstance(table.index, pd.RangeIndex) and table.index.start == 0
    assert table["specimen"].tolist() == [str(i) for i in frame.index]
    pd.testing.assert_frame_equal(table.drop(columns="specimen"), out.reset_index(drop=True))
    assert not np.shares_memory(table["confidence"].to_numpy(), out["confidence"].to_numpy())


def test_predict_frame_reads_columns_by_name_or_refuses(human_forest, human_ref):
    """Reordered and extra columns are matched by name. An array (columns by position), a table
    with none of the features (all rows came back empty), a repeated feature (pandas' 'cannot
    reindex'), text (no column named) and True/False (read as 1.0) are refused by name."""
    frame = human_ref.features[human_forest.features].iloc[:5]
    want = human_forest.predict_frame(frame)
    pd.testing.assert_frame_equal(human_forest.predict_frame(frame[frame.columns[::-1]].assign(x=1)), want)
    first = human_forest.features[0]
    cases = {
        r"reads features by column name: pass a pandas DataFrame .*got ndarray": frame.to_numpy(),
        r"none of the model's \d+ features .* is a column of the table to predict": frame.set_axis(
            [f"c{i}" for i in range(frame.shape[1])], axis=1),
        rf"has 2 columns named '{first}'": pd.concat([frame, frame[[first]]], axis=1),
        rf"feature '{first}' of the table to predict has non-numeric value 'x' \(cell ": frame.assign(
            **{first: "x"}),
        rf"feature '{first}' of the table to predict is True/False": frame.assign(**{first: True}),
    }
    for pattern, bad in cases.items():
        with pytest.raises(InputError, match=pattern):
            human_forest.predict_frame(bad)
    numeric_text = frame.astype(str)  # numbers as text (and 'nan') are still read as numbers
    pd.testing.assert_frame_equal(human_forest.predict_frame(numeric_text), want)


def test_cache_key_depends_on_features_and_data():
    a = cache_key("mouse", ["tau", "sag"], {"f": "1"})
    assert a == cache_key("mouse", ["sag", "tau"], {"f": "1"})
    assert a != cache_key("mouse", ["tau"], {"f": "1"})
    assert a != cache_key("mouse", ["tau", "sag"], {"f": "2"})
    assert a != cache_key("human", ["tau", "sag"], {"f": "1"})


def test_map_partial_features_with_cache(data_dir, tmp_path):
    root = data_dir / "mouse_visp_gouwens2020"
    ephys = pd.read_csv(root / "VISp_Viewer_ephys.csv")
    meta = pd.read_csv(root / "VISp_Viewer_meta.csv")
    table = ephys.merge(meta[["Cell ID", "tau", "T type subclass"]], on="Cell ID").sample(300, random_state=0)
    truth = table.pop("T type subclass").str.replace(" interneuron", "")
    query = table[["Cell ID", "Threshold V (long square) (millivolts)", "Peak V (long square) (millivolts)",
                   "AP width (ms)", "Input resistance (MΩ)", "tau", "Sag ratio", "F I curve slope",
                   "Threshold I (long square) (picoamps)"]]
    path = tmp_path / "query.xlsx"
    query.to_excel(path, index=False)
    kwargs = dict(data_dir=data_dir, cache_dir=tmp_path / "cache", n_estimators=20)
    first = map_cells(path, "mouse", tmp_path / "out1", **kwargs)
    assert sorted(first.features) == sorted(["threshold_v_rheo", "peak_deltav_rheo", "width_rheo",
                                             "input_resistance", "tau", "sag", "fi_fit_slope",
                                             "rheobase_i"])
    assert not first.from_cache
    for name in ("predictions.csv", "report.md", "embedding.png", "proportions.png", "reliability.png"):
        assert (tmp_path / "out1" / name).is_file()
    pred = pd.read_csv(tmp_path / "out1" / "predictions.csv")
    assert pred["Cell ID"].astype(str).tolist() == table["Cell ID"].astype(str).tolist()
    in_classes = truth.isin(CLASSES).to_numpy()
    assert (pred["predicted_subclass"].to_numpy()[in_classes] == truth.to_numpy()[in_classes]).mean() > 0.75
    second = map_cells(path, "mouse", tmp_path / "out2", align="quantile", **kwargs)
    assert second.from_cache
    with pytest.raises(InputError, match="already exists"):
        map_cells(path, "mouse", tmp_path / "out1", **kwargs)


def test_transfer_model_round_trip_on_real_tables(human, mouse_visp, tmp_path):
    """``--model transfer``: human cells + mouse source cells -> model directory -> same predictions.

    Quick version on a stratified share of both tables (``train`` uses them whole).
    """
    human_x = human.features.groupby(human.labels, group_keys=False).apply(lambda t: t.iloc[::4])
    mouse_x = mouse_visp.features.iloc[::8]
    fitted = fit_reference_model(human_x, human.labels.loc[human_x.index], species="human",
                                 model="transfer", n_splits=2, max_epochs=2, random_state=0,
                                 source=(mouse_x, mouse_visp.labels.loc[mouse_x.index]))
    assert fitted.record["source_cells"] == len(mouse_x)
    path = save_reference_model(fitted, tmp_path / "transfer",
                                checksums={**human.checksums, **mouse_visp.checksums})
    meta = json.loads((path / "model.json").read_text())
    assert meta["estimator_class"].endswith("MousePriorClassifier")  # design (d), the study's best
    assert set(meta["training_checksums"]) == set(human.checksums) | set(mouse_visp.checksums)
    loaded = load_reference_model(path)
    sample = human.features.iloc[::5]
    pd.testing.assert_frame_equal(loaded.predict_frame(sample), fitted.predict_frame(sample),
                                  check_exact=True)
    pd.testing.assert_frame_equal(loaded.estimator.mouse_view(sample),
                                  fitted.estimator.mouse_view(sample), check_exact=True)


def test_transfer_needs_source_cells(human):
    with pytest.raises(InputError, match="needs the mouse source cells"):
        fit_reference_model(human.features, human.labels, species="human", model="transfer")


@pytest.mark.slow
def test_train_transfer_on_the_full_tables(data_dir, tmp_path):
    result = train("human", "transfer", tmp_path / "m", data_dir=data_dir, n_splits=3)
    assert result.model.record["source_cells"] > 3000
    assert result.model.record["cv"]["macro_f1"] > 0.6
    ref = reference_data("human", data_dir)
    pd.testing.assert_frame_equal(load_reference_model(result.path).predict_frame(ref.features),
                                  result.model.predict_frame(ref.features), check_exact=True)


def test_train_rejects_before_loading_anything(tmp_path):
    with pytest.raises(InputError, match="transfer predicts human"):
        train("mouse", "transfer", tmp_path / "m", data_dir=tmp_path / "no_data")
    with pytest.raises(InputError, match="unknown calibration"):
        train("human", "forest", tmp_path / "m", calibration="platt", data_dir=tmp_path / "no_data")
    assert not (tmp_path / "m").exists()


def test_same_seed_gives_byte_identical_predictions(data_dir, human, tmp_path):
    """Two maps with fresh caches (all fitting redone) write the same predictions.csv bytes."""
    cells = human.features[["tau", "sag", "input_resistance", "v_baseline", "width_rheo"]]
    path = tmp_path / "query.csv"
    cells.iloc[::3].rename_axis("cell_id").reset_index().to_csv(path, index=False)
    outputs = []
    for k in range(2):
        map_cells(path, "human", tmp_path / f"out{k}", data_dir=data_dir,
                  cache_dir=tmp_path / f"cache{k}", n_estimators=30)
        outputs.append((tmp_path / f"out{k}" / "predictions.csv").read_bytes())
    assert outputs[0] == outputs[1]
    warm = map_cells(path, "human", tmp_path / "out_warm", data_dir=data_dir,
                     cache_dir=tmp_path / "cache0", n_estimators=30)
    assert warm.from_cache
    assert (tmp_path / "out_warm" / "predictions.csv").read_bytes() == outputs[0]


def test_forest_probabilities_do_not_depend_on_threads(human_forest, human_ref):
    """Large inputs are predicted in row blocks on threads; every row equals the serial result."""
    from ephys2tx.mapping import stable_predict_proba

    X = np.tile(human_ref.features.to_numpy(float), (15, 1))  # > 8192 rows: the threaded path
    est = human_forest.estimator
    threaded = stable_predict_proba(est, X, "forest")
    serial = np.vstack([est.predict_proba(X[i:i + 1000]) for i in range(0, len(X), 1000)])
    assert est.get_params()["forest__n_jobs"] == 1
    assert threaded.tobytes() == serial.tobytes()


def test_non_finite_features_never_reach_the_model(human_forest, human_ref):
    X = human_ref.features.iloc[:5].copy()
    X.iloc[2, 0] = np.inf
    with pytest.raises(InputError, match="has the value inf"):
        human_forest.predict_frame(X)
    X.iloc[2, 0] = 1e300
    with pytest.raises(InputError, match="1e\\+300"):
        human_forest.predict_frame(X)


@pytest.mark.parametrize("weights", ["dict", "scaler"])
def test_weights_that_are_no_classifier_are_refused(weights, human_forest, tmp_path):
    """A model folder whose skops file (sha256 updated) holds no classifier is a user error."""
    import skops.io as sio
    from sklearn.preprocessing import StandardScaler

    from ephys2tx.io import sha256_file

    path = save_reference_model(human_forest, tmp_path / "model")
    n = len(human_forest.features)
    obj = {"a": 1} if weights == "dict" else StandardScaler().fit(np.arange(2.0 * n).reshape(2, n))
    sio.dump(obj, path / "model.skops")
    meta = json.loads((path / "model.json").read_text())
    meta["weights_sha256"] = sha256_file(path / "model.skops")
    (path / "model.json").write_text(json.dumps(meta))
    name = "dict" if weights == "dict" else "StandardScaler"
    with pytest.raises(InputError, match=rf"model\.json field mapping\.model is 'forest', but the "
                                         rf"saved weights hold a {name}, not a classifier"):
        load_reference_model(path)


@pytest.mark.parametrize("edit, match", [
    (lambda mp: mp["ood_norm"].update(distance_sd="x"),
     r"key extra\.mapping\.ood_norm\.distance_sd is 'x'; it must be a finite number > 0"),
    (lambda mp: mp.update(ood_norm={}), r"ood_norm needs the finite numbers"),
    (lambda mp: mp["ood_norm"].update(threshold=float("nan")),
     r"key extra\.mapping\.ood_norm\.threshold is nan; it must be a finite number"),
    (lambda mp: mp["ood"].update(means=[[1.0, 2.0]]), r"missing or bad calibration/OOD field \(ValueError"),
    (lambda mp: mp["ood"].update(precision=[[1.0]]), r"missing or bad calibration/OOD field \(ValueError"),
    (lambda mp: mp["calibrator"].update(thresholds=[[[0.0, 1.0], [0.0, 1.0]]]),
     r"has a bad calibration/OOD field: expected 1 classes, got 4"),
    (lambda mp: mp["calibrator"].update(method="magic"), r"unknown calibration method 'magic'"),
])
def test_calibration_and_ood_fields_that_do_not_fit_are_refused_at_load(edit, match, human_forest,
                                                                         tmp_path):
    """Edited OOD/calibration fields of model.json were internal errors (KeyError, a matmul shape
    error, a TypeError) in the middle of `predict`; they are InputErrors naming the file at load."""
    path = save_reference_model(human_forest, tmp_path / "model")
    meta = json.loads((path / "model.json").read_text())
    edit(meta["extra"]["mapping"])
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=match) as info:
        load_reference_model(path)
    assert str(path / "model.json") in str(info.value)


def test_read_query_refuses_a_force_that_is_not_true_or_false(tmp_path):
    """force="no" (a true string) turned every unit check into a warning."""
    from ephys2tx.mapping.query import read_query

    path = tmp_path / "cells.csv"
    path.write_text("cell_id,tau\na,20.0\n")  # tau in ms under its IPFX name (seconds)
    with pytest.raises(InputError, match=r"force must be True or False, got 'no'"):
        read_query(path, force="no")
