"""Write a study's results folder: metrics.json, figures and report.md, atomically.

The folder is built under a temporary name beside the destination and renamed
into place only when complete, so a failed run leaves no partial results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ephys2tx.io import write_json
from ephys2tx.report import figures
from ephys2tx.evaluation.selection import MOUSE_LOCKBOX_FRACTION
from ephys2tx.models.registry import DESCRIPTIONS, TRANSFER_MODELS
from ephys2tx.study import (
    REFERENCE_MODEL,
    TABLE_LEGEND,
    StudyResult,
    ci_verdict,
    config_dict,
    format_delta,
    format_interval,
)

#: Significance level of the generated findings (Holm-adjusted corrected t tests).
ALPHA = 0.05


def results_markdown_table(result: StudyResult) -> str:
    """The results table, as Markdown (also printed by the CLI)."""
    return result.table().to_markdown(index=False)


def _shown(pair: dict) -> bool:
    """A difference is *shown* when its corrected CI excludes 0 and its Holm p < :data:`ALPHA`."""
    return pair["p_holm"] < ALPHA and ci_verdict(pair["ci95_corrected_t"]) != "includes 0"


def _comparison(model: str, pair: dict) -> str:
    """One generated clause: the fold-mean Δ, its corrected CI and where it lies, Holm p."""
    return (f"`{model}` − `{pair['reference']}` {format_delta(pair)} "
            f"(CI {ci_verdict(pair['ci95_corrected_t'])}; Holm p = {pair['p_holm']:.3f})")


def findings_markdown(result: StudyResult) -> str:
    """What the numbers support, written from them (never by hand).

    A difference is called *shown* only when its corrected resampled t CI
    excludes 0 and its Holm-adjusted p-value is below :data:`ALPHA`; every
    other difference is listed as not shown.
    """
    lines = []
    n_folds = sorted({r["n_folds"] for r in result.records})
    if n_folds and n_folds[0] < 10:
        lines.append(f"Corrected t intervals rest on J − 1 degrees of freedom (here J = "
                     f"{', '.join(map(str, n_folds))} folds): with so few folds the estimated "
                     "spread, and so each interval's width, is itself uncertain.\n")
    for sp, split in dict.fromkeys((r["species"], r["split"]) for r in result.records):
        recs = [r for r in result.records if (r["species"], r["split"]) == (sp, split)]
        best = max(recs, key=lambda r: r["macro_f1"]["mean"])
        f1 = best["macro_f1"]
        text = (f"- **{sp}, {split}** ({best['n_cells']} cells, {best['n_folds']} folds): highest "
                f"fold-mean macro-F1 `{best['model']}` {f1['mean']:.3f} "
                f"{format_interval(f1['ci95_corrected_t'])} (corrected t).")
        pairs = [(r["model"], r["paired_vs_reference"]) for r in recs if r.get("paired_vs_reference")]
        if pairs:
            up = [_comparison(m, p) for m, p in pairs if _shown(p) and p["mean_diff"] > 0]
            down = [_comparison(m, p) for m, p in pairs if _shown(p) and p["mean_diff"] < 0]
            rest = [f"`{m}`" for m, p in pairs if not _shown(p)]
            text += (f" Against `{REFERENCE_MODEL}` (Holm over {pairs[0][1]['holm_family_size']}): "
                     f"better shown for {'; '.join(up) or 'none'}; worse shown for "
                     f"{'; '.join(down) or 'none'}; no difference shown for "
                     f"{', '.join(rest) or 'none'}.")
        lines.append(text)
        for r in recs:
            if r["model"] not in TRANSFER_MODELS or r["model"].endswith("_human"):
                continue
            twin, best = r.get("paired_vs_same_architecture"), r.get("paired_vs_best_human_only")
            same = twin and best and twin["reference"] == best["reference"]
            for pair, what in ((best, "the best human-only model" + (", its twin" if same else "")),
                               (None if same else twin, "its human-only twin")):
                if pair:
                    lines.append(
                        f"  - transfer vs {what}: {_comparison(r['model'], pair)}; cell bootstrap "
                        f"of the pooled out-of-fold Δ (models held fixed) "
                        f"{format_delta(pair, 'pooled')}: difference "
                        f"{'shown' if _shown(pair) else 'not shown'}.")
    return "\n".join(lines)


def selections_markdown(result: StudyResult) -> str:
    """The choices each nested model made, per species and split (counts over outer folds)."""
    rows = [{"species": r["species"], "split": r["split"], "model": r["model"],
             "picked (number of outer folds)": ", ".join(f"{k}: {v}"
                                                         for k, v in r["selection"].items())}
            for r in result.records if r.get("selection")]
    return pd.DataFrame(rows).to_markdown(index=False) if rows else ""


def _qc_markdown(result: StudyResult) -> str:
    parts = []
    for sp, res in result.species.items():
        ds = res.dataset
        rows = pd.DataFrame(ds.qc_report)[["step", "n_before", "n_after", "n_dropped", "detail"]]
        parts.append(f"**{sp}** ({ds.name}): {ds.n_cells} cells after QC, "
                     f"{', '.join(f'{k} {v}' for k, v in ds.class_counts().items())}; "
                     f"{0 if ds.groups is None else ds.groups.nunique()} donors.\n\n"
                     + rows.to_markdown(index=False))
    return "\n\n".join(parts)


def _donor_scope(cfg) -> str:
    if cfg.donor_species is None or set(cfg.species) <= set(cfg.donor_species):
        return ""
    return "; donor-grouped folds for " + " and ".join(cfg.donor_species) + " cells only"


def _methods(result: StudyResult) -> str:
    cfg = result.config
    lockbox = ""
    if any(r.get("lockbox_excluded") for r in result.records):
        lockbox = (f" Mouse scores exclude the lockbox animals ({MOUSE_LOCKBOX_FRACTION:.0%} of "
                   "animals, drawn by a hash of the animal id), on whose cells alone the BiLSTM "
                   "defaults were chosen.")
    return (
        "Cells are labelled with their transcriptomic subclass (mouse: `T type subclass`; human: "
        "`Revised_subclass_label`, LAMP5/PAX6/Other → Lamp5; `mouse_5class`: the mouse cells with "
        "Sncg as a fifth subclass, as in Gouwens et al. 2020). Inputs are the electrophysiology "
        "summary features only; Cre line, t-type and assignment probabilities are never inputs; "
        "values a table uses as missing-value codes (e.g. 0 mV thresholds, 0 ms ISIs) are missing "
        "(see Data and QC). "
        f"Each model is evaluated by {cfg.n_repeats}× repeated {cfg.n_splits}-fold cross-validation, "
        "stratified by subclass and, separately, grouped by donor (no donor in both training and "
        f"test{_donor_scope(cfg)}). Every split scheme uses the same folds for every model. Median "
        "imputation, standardisation, per-family sparse PCA and SMOTE are fitted on the training "
        "rows of each fold only (they are steps of the estimator that is cloned and fitted per "
        "fold). Model choices never see the cells they are scored on: on human cells, the boosting "
        "iterations (`hgb`) and the alignment of design (d) are chosen per outer fold by an inner "
        "3-fold cross-validation of that fold's training rows (nested; the picks are listed "
        f"below).{lockbox} "
        "Two estimates, each with the interval of the same quantity: the mean of the per-fold "
        "scores with a 95% corrected resampled t interval (Nadeau & Bengio 2003, including "
        "training-set variance), and the pooled out-of-fold score (every cell's prediction by the "
        "model that did not see it, averaged over repeats) with a 95% percentile bootstrap over "
        f"cells ({cfg.n_boot} resamples; models held fixed). "
        f"Δ is the paired difference with `{REFERENCE_MODEL}` on the same folds, in both forms; "
        "its corrected t test is Holm-adjusted over all comparisons with the reference of a species "
        "and split (the transfer comparisons form their own Holm families per split). The Gouwens "
        "2020 replication standardises the features, reduces each feature family with sparse PCA "
        "(keeping components whose adjusted variance is ≥ 1% of the family's variance, as the "
        "Allen drcme code does) and classifies with a class-balanced random forest."
    )


def _warnings_markdown(result: StudyResult) -> str:
    """The warnings the libraries issued during the study (counted, not printed on the terminal)."""
    lines = result.warning_lines()
    if not lines:
        return "The libraries issued no warning during the study."
    return ("Warnings the libraries issued during the study (e.g. scikit-learn's "
            "`ConvergenceWarning`: an iterative fit stopped at its iteration limit), counted per "
            "model over its fold fits (`library_warnings` in metrics.json) rather than printed; "
            "the scores above are those of the fits as they ended:\n\n"
            + "\n".join(f"- {line}" for line in lines))


def transfer_table(result: StudyResult) -> pd.DataFrame:
    """Human macro-F1 of the transfer designs and baselines, with paired differences."""
    rows = []
    for r in result.records:
        if r["species"] != "human":
            continue
        is_transfer = r["model"] in TRANSFER_MODELS and not r["model"].endswith("_human")
        f1 = r["macro_f1"]
        cond = r.get("by_condition", {})
        twin, best = r.get("paired_vs_same_architecture"), r.get("paired_vs_best_human_only")
        rows.append({
            "split": r["split"], "model": r["model"],
            "kind": "transfer" if is_transfer else "human only",
            "macro-F1 (fold mean ± sd)": f"{f1['mean']:.3f} ± {f1['sd']:.3f}",
            "CI95 fold mean (corr. t)": format_interval(f1["ci95_corrected_t"]),
            "Δ vs twin, fold mean [CI95 corr. t]": (
                format_delta(twin) + (f" ({twin['reference']})" if twin else "")),
            "Holm p (twin)": f"{twin['p_holm']:.3f}" if twin else "—",
            "Δ vs twin, pooled OOF [CI95 cell boot.]": format_delta(twin, "pooled"),
            "Δ vs best human-only, fold mean [CI95 corr. t]": (
                format_delta(best) + (f" ({best['reference']})" if best else "")),
            "Holm p (best)": f"{best['p_holm']:.3f}" if best else "—",
            "Δ vs best human-only, pooled OOF [CI95 cell boot.]": format_delta(best, "pooled"),
            **{f"macro-F1 {k}": f"{v['macro_f1']:.3f} (n={v['n_cells']})" for k, v in cond.items()},
        })
    return pd.DataFrame(rows)


def transfer_comparison_markdown(result: StudyResult) -> str:
    """The transfer designs' rows of :func:`transfer_table` (empty without transfer designs)."""
    table = transfer_table(result)
    if table.empty:
        return ""
    return table[table["kind"] == "transfer"].to_markdown(index=False)


def _transfer_section(result: StudyResult, fold_table: pd.DataFrame, fig_dir: Path) -> str:
    if not any(r["model"] in TRANSFER_MODELS for r in result.records):
        return ""
    lines = ["## Mouse → human transfer",
             "Human cells are split by the folds above; all mouse cells are training data in every "
             "fold. Each design is paired, on the same folds, with the same architecture trained on "
             "human cells only and with the best human-only model of that split (highest mean "
             "macro-F1 among the non-transfer models, a choice made on the scored folds that "
             "favours the baseline). Each kind of comparison is Holm-adjusted over the designs of "
             "a split. "
             "Per-class F1 is in `metrics.json`; the condition columns are the out-of-fold "
             "macro-F1 of acute-slice and slice-culture cells.",
             transfer_table(result).to_markdown(index=False)]
    designs = [m for m in TRANSFER_MODELS if not m.endswith("_human")]
    human_rows = fold_table.query("species == 'human'")
    single_best = {r["split"]: r["paired_vs_best_human_only"]["reference"]
                   for r in result.records if r.get("paired_vs_best_human_only")}
    baselines = ["transfer_a_human", "transfer_b_human", *sorted(set(single_best.values()))]
    fig = figures.transfer_folds_figure(human_rows, designs, baselines,
                                        "human macro-F1 per fold: transfer vs human-only")
    fig.savefig(fig_dir / "transfer_folds.png", dpi=120)
    lines.append("![transfer per fold](figures/transfer_folds.png)")
    if result.shared_embedding is not None:
        figures.embedding_figure(result.shared_embedding,
                                 "shared embedding of design (b): mouse and human cells",
                                 marker_column="species").savefig(
            fig_dir / "shared_embedding.png", dpi=120)
        lines.append("![shared embedding](figures/shared_embedding.png)")
    return "\n\n".join(lines)


def build_report(result: StudyResult, out: Path) -> None:
    """Write metrics, figures and report.md into the (new, empty) folder ``out``."""
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True)
    shift = [] if result.shift is None else [{"section": "shift_benchmark", **result.shift}]
    outside = ([{"section": "library_warnings_outside_folds", **result.library_warnings}]
               if result.library_warnings else [])
    write_json(out / "metrics.json", result.records + shift + outside)
    sections: list[str] = []
    fold_rows = []
    for sp, res in result.species.items():
        for (scheme, model), cv in res.cv.items():
            for s in cv.fold_scores:
                fold_rows.append({"species": sp, "split": scheme, "model": model,
                                  "repeat": s["repeat"], "fold": s["fold"],
                                  "n_train": s["n_train"], "n_test": s["n_test"],
                                  "macro_f1": s["macro_f1"], "accuracy": s["accuracy"],
                                  "selected": s.get("selection", {}).get("selected", "")})
    fold_table = pd.DataFrame(fold_rows)
    fold_table.to_csv(out / "fold_scores.csv", index=False)

    for sp, res in result.species.items():
        sp_lines = [f"## {sp.capitalize()}"]
        for scheme in result.config.split_schemes:
            recs = [r for r in result.records if r["species"] == sp and r["split"] == scheme]
            if not recs:
                continue
            name = f"confusion_{sp}_{scheme}.png"
            fig = figures.confusion_figure(recs, f"{sp}, {scheme} {result.config.n_splits}-fold CV")
            fig.savefig(fig_dir / name, dpi=120)
            sp_lines.append(f"![confusion matrices, {sp} {scheme}](figures/{name})")
        name = f"fold_scores_{sp}.png"
        figures.fold_scores_figure(fold_table.query("species == @sp"),
                                   f"{sp}: macro-F1 per fold").savefig(fig_dir / name, dpi=120)
        sp_lines.append(f"![fold scores {sp}](figures/{name})")
        if res.embedding is not None:
            name = f"embedding_spca_{sp}.png"
            figures.embedding_figure(
                res.embedding, f"{sp}: sPCA space ({res.embedding_method}), all cells"
            ).savefig(fig_dir / name, dpi=120)
            sp_lines.append(f"![sPCA embedding {sp}](figures/{name})")
        for (scheme, model), cv in res.cv.items():
            if cv.oof_attention is None or model != "bilstm" or scheme != "stratified":
                continue
            name = f"attention_{sp}.png"
            figures.attention_figure(cv.oof_attention, res.dataset.labels, cv.family_importance,
                                     f"{sp}: attention over feature families (out-of-fold)"
                                     ).savefig(fig_dir / name, dpi=120)
            cv.oof_attention.to_csv(out / f"attention_{sp}.csv")
            if cv.family_importance is not None:
                cv.family_importance.to_csv(out / f"family_importance_{sp}.csv", index=False)
            sp_lines.append(f"![attention {sp}](figures/{name})")
        sections.append("\n\n".join(sp_lines))
    transfer = _transfer_section(result, fold_table, fig_dir)
    if transfer:
        sections.append(transfer)
    if result.shift is not None:
        from ephys2tx.report.shift_report import benchmark_markdown

        sections.append(benchmark_markdown(result.shift))
    models = list(dict.fromkeys(r["model"] for r in result.records))
    model_lines = "\n".join(f"- `{m}`: {DESCRIPTIONS.get(m, '')}" for m in models)
    checks = {k: v for res in result.species.values() for k, v in res.dataset.checksums.items()}
    report = "\n\n".join([
        "# ephys2tx study report",
        f"ephys2tx {result.version}; run took {result.seconds:.0f} s; "
        f"{'quick mode' if result.config.quick else 'full run'}.",
        "## Methods", _methods(result), "### Models", model_lines,
        "### Library warnings", _warnings_markdown(result),
        "## Data and QC", _qc_markdown(result),
        "## Results", results_markdown_table(result), TABLE_LEGEND,
        "## Findings (generated from the numbers above)", findings_markdown(result),
        *([f"### Nested choices\n\n{sel}"] if (sel := selections_markdown(result)) else []),
        *sections,
        "## Configuration", "```json\n" + json.dumps(config_dict(result.config), indent=2) + "\n```",
        "## Data files (sha256)", "\n".join(f"- `{k}`: `{v}`" for k, v in sorted(checks.items())),
    ])
    (out / "report.md").write_text(report + "\n")


def write_results(result: StudyResult, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the results folder atomically and return its path.

    Parameters
    ----------
    result : StudyResult
    out_dir : path-like
        Destination folder (checked with :func:`ephys2tx.safety.check_output_dir`).
        An existing folder is replaced, once the new one is complete, only if
        ``overwrite`` and only if it is a results folder written by ephys2tx.
    overwrite : bool
    """
    from ephys2tx.safety import check_output_dir, staged_output_dir
    from ephys2tx.study import STUDY_OUTPUT_KIND, study_inputs

    out = check_output_dir(out_dir, kind=STUDY_OUTPUT_KIND, overwrite=overwrite,
                           inputs=study_inputs(result.config))
    with staged_output_dir(out, STUDY_OUTPUT_KIND, overwrite=overwrite, command="run") as staging:
        build_report(result, staging)
    return out
