"""End-to-end: `ephys2tx run --quick` on the real human data writes a complete results folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ephys2tx import CLASSES
from ephys2tx.cli import main
from ephys2tx.study import REFERENCE_MODEL, StudyConfig, run_study

MODELS = ("logreg", "spca_rf")


def _run_cli(data_dir, out, n_splits, *extra):
    args = ["run", "--data-dir", str(data_dir), "--quick", "--species", "human",
            "--model", MODELS[0], "--model", MODELS[1], "--out", str(out), *extra]
    if n_splits is not None:
        args += ["--n-splits", str(n_splits)]
    return main(args)


def _check_results(out, human, n_splits):
    records = [r for r in json.loads((out / "metrics.json").read_text()) if "section" not in r]
    assert {(r["split"], r["model"]) for r in records} == {
        (s, m) for s in ("stratified", "donor") for m in MODELS}
    for r in records:
        assert r["species"] == "human"
        assert r["n_cells"] == human.n_cells == 664
        assert r["classes"] == list(CLASSES)
        assert r["n_folds"] == n_splits and r["n_repeats"] == 1
        for metric in ("accuracy", "macro_f1"):
            stats = r[metric]
            assert set(stats) >= {"mean", "sd", "ci95_corrected_t", "pooled_oof",
                                  "pooled_oof_ci95_cell_bootstrap"}
            lo, hi = stats["pooled_oof_ci95_cell_bootstrap"]
            assert 0 <= lo <= stats["pooled_oof"] <= hi <= 1
            assert stats["sd"] >= 0
            lo, hi = stats["ci95_corrected_t"]  # of the fold mean (2 folds: wide)
            assert lo <= stats["mean"] <= hi, (r["model"], r["split"], metric, stats)
        assert r["macro_f1"]["mean"] > 0.5  # well above the 4-class chance level
        assert set(r["per_class_f1"]) == set(CLASSES)
        cm = np.asarray(r["confusion_matrix"])
        assert cm.shape == (4, 4)
        np.testing.assert_array_equal(cm.sum(axis=1), [human.class_counts()[c] for c in CLASSES])
        if r["model"] != REFERENCE_MODEL:
            pair = r["paired_vs_reference"]
            assert pair["reference"] == REFERENCE_MODEL
            assert pair["holm_family_size"] == 1 and pair["p_holm"] == pair["p_corrected_t"]
            assert "p_boot" not in pair
    report = (out / "report.md").read_text()
    assert "## Results" in report and "## Data and QC" in report
    assert "## Findings (generated from the numbers above)" in report
    assert "missing-value code -> NaN: undefined_isi_cv" in report  # the QC table lists each rule
    for name in ("confusion_human_stratified.png", "confusion_human_donor.png",
                 "fold_scores_human.png", "embedding_spca_human.png"):
        path = out / "figures" / name
        assert path.is_file() and path.stat().st_size > 1000, name
        assert f"figures/{name}" in report
    assert not [p for p in out.parent.iterdir() if ".staging-" in p.name]


def test_quick_run_end_to_end(data_dir, human, tmp_path):
    """The quick run with 2 folds (~25 s on an idle 2-core machine)."""
    out = tmp_path / "results"
    assert _run_cli(data_dir, out, 2) == 0
    _check_results(out, human, 2)


@pytest.mark.slow
def test_quick_run_end_to_end_default_folds(data_dir, human, tmp_path):
    """The exact documented quick command (2 folds by default)."""
    from ephys2tx.safety import MARKER

    out = tmp_path / "results"
    out.mkdir()
    (out / "stale.txt").write_text("from a previous run")
    (out / MARKER).write_text('{"created_by": "ephys2tx", "kind": "study"}')  # a run's own folder
    assert _run_cli(data_dir, out, None) == 2  # exists: refused up front without --overwrite
    assert _run_cli(data_dir, out, None, "--overwrite") == 0
    _check_results(out, human, 2)
    assert not (out / "stale.txt").exists()  # the folder was replaced, not merged


def test_run_study_shares_folds_and_is_deterministic(human):
    """Folds respect donors, and the same config gives the same records twice."""
    config = StudyConfig.quick_config(species=("human",), models=("logreg",), n_splits=2,
                                      split_schemes=("donor",), n_boot=50, seed=5)
    first = run_study(config, datasets={"human": human})
    assert [(r["split"], r["model"]) for r in first.records] == [("donor", "logreg")]
    cv = first.species["human"].cv[("donor", "logreg")]
    groups = human.groups.to_numpy()
    for fold in cv.folds:
        assert not set(groups[fold.train]) & set(groups[fold.test])
    assert list(first.table()["model"]) == ["logreg"]
    second = run_study(config, datasets={"human": human})
    for ra, rb in zip(first.records, second.records):
        ra.pop("fit_seconds_mean"), rb.pop("fit_seconds_mean")
    assert first.records == second.records


def test_report_has_attention_and_transfer_sections(human, mouse_visp, tmp_path):
    """A tiny study with the family model and the transfer designs fills every report section."""
    from ephys2tx.report.writer import write_results

    config = StudyConfig.quick_config(
        species=("human",), models=("hgb", "bilstm", "transfer_b", "transfer_b_human", "transfer_d"),
        n_splits=2, split_schemes=("stratified",), n_boot=50)
    result = run_study(config, datasets={"human": human, "mouse": mouse_visp})
    records = {r["model"]: r for r in result.records}
    assert records["transfer_d"]["paired_vs_same_architecture"]["reference"] == "hgb"
    assert records["transfer_b"]["paired_vs_same_architecture"]["reference"] == "transfer_b_human"
    best = max(("hgb", "bilstm"), key=lambda m: records[m]["macro_f1"]["mean"])
    assert records["transfer_b"]["paired_vs_best_human_only"]["reference"] == best
    assert set(records["transfer_d"]["by_condition"]) == {"acute", "culture"}
    out = write_results(result, tmp_path / "results")
    report = (out / "report.md").read_text()
    assert "## Mouse → human transfer" in report
    for name in ("attention_human.png", "transfer_folds.png", "shared_embedding.png"):
        assert (out / "figures" / name).stat().st_size > 1000, name
        assert f"figures/{name}" in report
    attention = pd.read_csv(out / "attention_human.csv", index_col=0)
    assert len(attention) == human.n_cells  # every cell, from the fold that did not see it
    np.testing.assert_allclose(attention.sum(axis=1), 1, rtol=1e-5)


def test_run_on_an_extracted_feature_table(nwb_set, tmp_path, capsys):
    """The raw-data route: `ephys2tx extract` output -> `ephys2tx run --features --labels`."""
    from ephys2tx.features.nwb import extract_features

    good = nwb_set["good"]
    table = extract_features([p for p, _ in good], tmp_path / "features.parquet",
                             workers=1).features_path
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"cell_id": [p.stem for p, _ in good],
                  "subclass": [label for _, label in good]}).to_csv(labels, index=False)
    base = ["run", "--features", str(table), "--species", "mouse", "--quick", "--model", "rf",
            "--model", "logreg", "--n-splits", "2"]
    out = tmp_path / "results"
    assert main(base + ["--labels", str(labels), "--out", str(out)]) == 0
    # one record per split x model; "section" entries (library warnings outside the folds) aside
    records = [r for r in json.loads((out / "metrics.json").read_text()) if "section" not in r]
    assert {(r["split"], r["model"]) for r in records} == {("stratified", "rf"), ("stratified", "logreg")}
    for r in records:  # two kinds of generated cells; no donors, so no donor split
        assert r["classes"] == ["Pvalb", "Sst"] and r["n_cells"] == len(good)
        assert np.asarray(r["confusion_matrix"]).sum() == len(good)

    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "unlabelled")]) == 2
    assert "no labels to learn from" in capsys.readouterr().err
    assert not (tmp_path / "unlabelled").exists()


def test_quick_runs_each_model_family_once_per_its_block():
    """The quick look (no --model) runs the models of QUICK_BLOCK_MODELS in each block; the full
    run every model in every block."""
    from ephys2tx.models.registry import (BASELINE_MODELS, BILSTM_MODELS, QUICK_BLOCK_MODELS,
                                          TRANSFER_MODELS)
    from ephys2tx.study import _species_models, default_models

    quick = StudyConfig.quick_config()
    assert quick.n_splits == 2 and quick.n_repeats == 1
    single, transfer = default_models(quick=True)
    blocks = {(sp, s): _species_models(sp, s, quick, single, transfer)
              for sp in ("mouse", "human", "mouse_5class") for s in ("stratified", "donor")}
    for key, models in blocks.items():
        assert models == QUICK_BLOCK_MODELS.get(key, ())
        assert not models or models[0] == REFERENCE_MODEL
    assert set().union(*blocks.values()) == set(single) | set(transfer)
    full = StudyConfig()
    assert (full.n_splits, full.n_repeats) == (5, 3)
    single, transfer = default_models(quick=False)
    assert _species_models("human", "donor", full, single, transfer) == (
        BASELINE_MODELS + BILSTM_MODELS + TRANSFER_MODELS)
    assert _species_models("mouse", "donor", full, single, transfer) == BASELINE_MODELS + BILSTM_MODELS


def test_donor_species_limits_the_donor_grouped_folds(human, mouse_visp):
    """The quick look scores donor-grouped folds on human cells only."""
    config = StudyConfig.quick_config(models=("logreg",), n_splits=2, n_boot=20, transfer=False)
    assert config.donor_species == ("human",)
    result = run_study(config, datasets={"human": human, "mouse": mouse_visp})
    assert {(r["species"], r["split"]) for r in result.records} == {
        ("mouse", "stratified"), ("human", "stratified"), ("human", "donor"),
        ("mouse_5class", "stratified")}
    full = StudyConfig(models=("logreg",), n_splits=2, n_repeats=1, n_boot=20, transfer=False)
    result = run_study(full, datasets={"human": human, "mouse": mouse_visp})
    assert {(r["species"], r["split"]) for r in result.records} == {
        (sp, s) for sp in ("mouse", "human", "mouse_5class") for s in ("stratified", "donor")}


def test_five_class_block_and_holm_families(human, mouse_visp):
    """`mouse_5class` scores Sncg as a fifth class with its own models; Holm runs per block."""
    config = StudyConfig.quick_config(species=("mouse_5class",), models=("spca_rf", "rf", "logreg"),
                                      n_splits=2, n_boot=20)
    result = run_study(config, datasets={"mouse": mouse_visp})
    records = {r["model"]: r for r in result.records}
    assert set(records) == {"spca_rf", "rf", "logreg"}
    for r in records.values():
        assert r["classes"] == ["Lamp5", "Pvalb", "Sst", "Vip", "Sncg"]
        assert set(r["per_class_f1"]) == set(r["classes"])
        assert np.asarray(r["confusion_matrix"]).shape == (5, 5)
        assert sum(r["class_counts"].values()) == r["n_cells"]
        assert r["n_cells"] + r["lockbox_excluded"]["n_cells"] == mouse_visp.n_cells + 276
        assert 200 < r["class_counts"]["Sncg"] < 276  # the Sncg cells outside the lockbox
    pairs = [records[m]["paired_vs_reference"] for m in ("rf", "logreg")]
    assert all(p["holm_family_size"] == 2 for p in pairs)
    from ephys2tx.evaluation.stats import holm

    assert [p["p_holm"] for p in pairs] == holm([p["p_corrected_t"] for p in pairs])
    # The table carries both intervals beside each estimate.
    table = result.table()
    assert {"CI95 fold mean (corr. t)", "macro-F1 pooled OOF [CI95 cell boot.]", "Holm p",
            f"Δ vs {REFERENCE_MODEL} fold mean [CI95 corr. t]"} <= set(table.columns)
    # A model outside the block's set is not run on it (the transfer designs, the networks).
    config = StudyConfig.quick_config(species=("mouse_5class",), models=("bilstm",), n_splits=2)
    assert run_study(config, datasets={"mouse": mouse_visp}).records == []


def test_generated_findings_follow_the_numbers():
    """The report's prose is derived from the CIs: a made-up record gives the expected words."""
    from ephys2tx.report.writer import findings_markdown
    from ephys2tx.study import StudyResult, ci_verdict

    assert (ci_verdict([0.01, 0.02]), ci_verdict([-0.02, -0.01]), ci_verdict([-0.01, 0.02])) == (
        "above 0", "below 0", "includes 0")

    def record(model, mean, pair=None):
        rec = {"species": "human", "split": "donor", "model": model, "n_cells": 100, "n_folds": 15,
               "macro_f1": {"mean": mean, "ci95_corrected_t": [mean - 0.05, mean + 0.05]}}
        if pair:
            rec["paired_vs_reference"] = {"reference": REFERENCE_MODEL, "holm_family_size": 2,
                                          "pooled_oof_diff": 0.0,
                                          "pooled_oof_diff_ci95_cell_bootstrap": [0.0, 0.0], **pair}
        return rec

    records = [record(REFERENCE_MODEL, 0.7),
               record("hgb", 0.8, {"mean_diff": 0.1, "ci95_corrected_t": [0.02, 0.18], "p_holm": 0.01}),
               record("rf", 0.72, {"mean_diff": 0.02, "ci95_corrected_t": [0.01, 0.03],
                                   "p_holm": 0.2})]
    text = findings_markdown(StudyResult(config=StudyConfig(), records=records, species={},
                                         seconds=0.0))
    assert "better shown for `hgb` − `spca_rf` +0.100 [+0.020, +0.180] (CI above 0; Holm p = 0.010)" in text
    # rf's CI excludes 0, but not after Holm: it is not called a difference.
    assert "no difference shown for `rf`" in text


def test_a_split_check_after_qc_says_what_qc_dropped(human):
    """A table whose rows QC dropped as duplicates left one class: the error said only 'has only
    class ...', which reads as a labelling fault; it now names the QC steps that dropped cells."""
    from dataclasses import replace

    from ephys2tx.errors import InputError

    pvalb = human.labels.index[human.labels == "Pvalb"][:5]
    step = {"step": "drop exact duplicate feature rows", "n_before": 60, "n_after": 5,
            "n_dropped": 55, "detail": "55 cells whose features equal an earlier cell's"}
    one_class = replace(human.subset(pvalb), qc_report=[step])
    config = StudyConfig.quick_config(species=("human",), models=("logreg",), n_splits=2,
                                      split_schemes=("stratified",), n_boot=50, seed=0)
    with pytest.raises(InputError, match=r"the human cells \(human, after QC dropped 55 cell\(s\), 55 "
                                         r"by 'drop exact duplicate feature rows'\) has only class "
                                         r"'Pvalb'"):
        run_study(config, datasets={"human": one_class})


def test_cells_left_out_for_an_unknown_label_are_named(human):
    """Labels such as 'Lamp5/Pax6' were held out like Sncg without a word on the terminal."""
    from dataclasses import replace

    cells = human.labels.index
    held_labels = pd.Series(["Lamp5/Pax6"] * 3 + ["Sncg"] * 2 + ["lamp 5"], index=cells[:6])
    held = replace(human.subset(cells[:6]), labels=held_labels)
    dataset = replace(human.subset(cells[6:]), held_out=held)
    config = StudyConfig.quick_config(species=("human",), models=("logreg",), n_splits=2,
                                      split_schemes=("stratified",), n_boot=50, seed=0)
    result = run_study(config, datasets={"human": dataset})
    assert result.unknown_label_notes() == [
        "note: 4 human cell(s) were left out for a label that is not a subclass ephys2tx knows "
        "('Lamp5/Pax6': 3, 'lamp 5': 1); rename them to one of Lamp5, Pvalb, Sst, Vip to use them."]
    assert replace(result, species={"human": replace(result.species["human"], dataset=replace(
        dataset, held_out=held.subset(cells[3:5])))}).unknown_label_notes() == []  # Sncg only


def test_library_warnings_are_listed_per_model_for_the_report():
    """s8: the counted library warnings reach report.md (Methods) and the terminal's one note."""
    from ephys2tx.report.writer import _warnings_markdown
    from ephys2tx.study import StudyResult

    conv = {"ConvergenceWarning": {"count": 6, "example": "lbfgs failed to converge"}}
    result = StudyResult(config=None, records=[
        {"species": "human", "split": "stratified", "model": "logreg", "library_warnings": conv},
        {"species": "human", "split": "stratified", "model": "rf"}], species={}, seconds=0.0,
        library_warnings={"RuntimeWarning": {"count": 1, "example": ""}})
    assert result.warning_totals() == {"ConvergenceWarning": 6, "RuntimeWarning": 1}
    text = _warnings_markdown(result)
    assert '- human · stratified · logreg: 6 ConvergenceWarning (e.g. "lbfgs failed to converge")' in text
    assert "- outside the fold fits: 1 RuntimeWarning" in text and "rf" not in text
    quiet = StudyResult(config=None, records=[{"species": "human", "split": "donor", "model": "rf"}],
                        species={}, seconds=0.0)
    assert quiet.warning_totals() == {}
    assert _warnings_markdown(quiet) == "The libraries issued no warning during the study."
