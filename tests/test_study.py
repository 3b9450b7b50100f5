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
    records = json.loads((out / "metrics.json").read_text())
    assert {(r["split"], r["model"]) for r in records} == {
        (s, m) for s in ("stratified", "donor") for m in MODELS}
    for r in records:
        assert r["species"] == "human"
        assert r["n_cells"] == human.n_cells == 665
        assert r["classes"] == list(CLASSES)
        assert r["n_folds"] == n_splits and r["n_repeats"] == 1
        for metric in ("accuracy", "macro_f1"):
            stats = r[metric]
            assert set(stats) >= {"mean", "sd", "ci95"}
            lo, hi = stats["ci95"]
            assert 0 <= lo <= hi <= 1
            assert stats["sd"] >= 0
            assert lo <= stats["mean"] <= hi, (r["model"], r["split"], metric, stats)
        assert r["macro_f1"]["mean"] > 0.5  # well above the 4-class chance level
        assert set(r["per_class_f1"]) == set(CLASSES)
        cm = np.asarray(r["confusion_matrix"])
        assert cm.shape == (4, 4)
        np.testing.assert_array_equal(cm.sum(axis=1), [human.class_counts()[c] for c in CLASSES])
        if r["model"] != REFERENCE_MODEL:
            assert r["paired_vs_reference"]["reference"] == REFERENCE_MODEL
    report = (out / "report.md").read_text()
    assert "## Results" in report and "## Data and QC" in report
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
    """The exact documented quick command (3 folds by default)."""
    from ephys2tx.safety import MARKER

    out = tmp_path / "results"
    out.mkdir()
    (out / "stale.txt").write_text("from a previous run")
    (out / MARKER).write_text('{"created_by": "ephys2tx", "kind": "study"}')  # a run's own folder
    assert _run_cli(data_dir, out, None) == 2  # exists: refused up front without --overwrite
    assert _run_cli(data_dir, out, None, "--overwrite") == 0
    _check_results(out, human, 3)
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
    records = json.loads((out / "metrics.json").read_text())
    assert {(r["split"], r["model"]) for r in records} == {("stratified", "rf"), ("stratified", "logreg")}
    for r in records:  # two kinds of generated cells; no donors, so no donor split
        assert r["classes"] == ["Pvalb", "Sst"] and r["n_cells"] == len(good)
        assert np.asarray(r["confusion_matrix"]).sum() == len(good)

    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "unlabelled")]) == 2
    assert "no labels to learn from" in capsys.readouterr().err
    assert not (tmp_path / "unlabelled").exists()


def test_donor_species_limits_the_donor_grouped_folds(human, mouse_visp):
    """The quick look scores donor-grouped folds on human cells only."""
    config = StudyConfig.quick_config(models=("logreg",), n_splits=2, n_boot=20, transfer=False)
    assert config.donor_species == ("human",)
    result = run_study(config, datasets={"human": human, "mouse": mouse_visp})
    assert {(r["species"], r["split"]) for r in result.records} == {
        ("mouse", "stratified"), ("human", "stratified"), ("human", "donor")}
    full = StudyConfig(models=("logreg",), n_splits=2, n_repeats=1, n_boot=20, transfer=False)
    result = run_study(full, datasets={"human": human, "mouse": mouse_visp})
    assert {(r["species"], r["split"]) for r in result.records} == {
        (sp, s) for sp in ("mouse", "human") for s in ("stratified", "donor")}
