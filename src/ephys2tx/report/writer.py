"""Write a study's results folder: metrics.json, figures and report.md, atomically.

The folder is built under a temporary name beside the destination and renamed
into place only when complete, so a failed run leaves no partial results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ephys2tx.atomic import replace_atomically, staged_directory
from ephys2tx.report import figures
from ephys2tx.study import REFERENCE_MODEL, StudyResult, config_dict
from ephys2tx.models.registry import DESCRIPTIONS


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def dump_json(data, path: Path) -> None:
    """Write JSON to ``path`` atomically."""
    text = json.dumps(data, indent=2, default=_json_default, ensure_ascii=False)
    replace_atomically(path, lambda handle: handle.write(text.encode()))


def results_markdown_table(result: StudyResult) -> str:
    """The results table, as Markdown (also printed by the CLI)."""
    return result.table().to_markdown(index=False)


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
    return (
        "Cells are labelled with their transcriptomic subclass (mouse: `T type subclass`; human: "
        "`Revised_subclass_label`, LAMP5/PAX6/Other → Lamp5). Inputs are the electrophysiology "
        "summary features only; Cre line, t-type and assignment probabilities are never inputs. "
        f"Each model is evaluated by {cfg.n_repeats}× repeated {cfg.n_splits}-fold cross-validation, "
        "stratified by subclass and, separately, grouped by donor (no donor in both training and "
        f"test{_donor_scope(cfg)}). Every split scheme uses the same folds for every model. Median imputation, "
        "standardisation, per-family sparse PCA and SMOTE are fitted on the training rows of each "
        "fold only (they are steps of the estimator that is cloned and fitted per fold). "
        "Scores are mean ± sd over folds; the 95% CI is a percentile bootstrap "
        f"({cfg.n_boot} resamples of cells) of the repeat-averaged out-of-fold macro-F1. "
        f"Δ is the paired difference with `{REFERENCE_MODEL}` on the same folds (mean over folds) "
        "with a bootstrap 95% CI over cells. The Gouwens 2020 replication standardises the "
        "features, reduces each feature family with sparse PCA (keeping components whose "
        "adjusted variance is ≥ 1% of the family's variance, as the Allen drcme code does) and "
        "classifies with a class-balanced random forest."
    )


def _fmt(stat: dict | None) -> str:
    if not stat:
        return "—"
    return f"{stat['mean_diff']:+.3f} [{stat['ci95'][0]:+.3f}, {stat['ci95'][1]:+.3f}]"


def transfer_table(result: StudyResult) -> pd.DataFrame:
    """Human macro-F1 of the transfer designs and baselines, with paired differences."""
    from ephys2tx.models.registry import TRANSFER_MODELS

    rows = []
    for r in result.records:
        if r["species"] != "human":
            continue
        is_transfer = r["model"] in TRANSFER_MODELS and not r["model"].endswith("_human")
        f1 = r["macro_f1"]
        cond = r.get("by_condition", {})
        rows.append({
            "split": r["split"], "model": r["model"],
            "kind": "transfer" if is_transfer else "human only",
            "macro_f1": f"{f1['mean']:.3f} ± {f1['sd']:.3f}",
            "ci95": f"[{f1['ci95'][0]:.3f}, {f1['ci95'][1]:.3f}]",
            "Δ vs same architecture, human only": _fmt(r.get("paired_vs_same_architecture")),
            "Δ vs best human-only": (_fmt(r.get("paired_vs_best_human_only"))
                                     + (f" ({r['paired_vs_best_human_only']['reference']})"
                                        if r.get("paired_vs_best_human_only") else "")),
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
    from ephys2tx.models.registry import TRANSFER_MODELS

    if not any(r["model"] in TRANSFER_MODELS for r in result.records):
        return ""
    lines = ["## Mouse → human transfer",
             "Human cells are split by the folds above; all mouse cells are training data in every "
             "fold. Each design is paired, on the same folds, with the same architecture trained on "
             "human cells only and with the best human-only model of that split (highest mean "
             "macro-F1 among the non-transfer models, a choice that favours the baseline). "
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
    dump_json(result.records + shift, out / "metrics.json")
    sections: list[str] = []
    fold_rows = []
    for sp, res in result.species.items():
        for (scheme, model), cv in res.cv.items():
            for s in cv.fold_scores:
                fold_rows.append({"species": sp, "split": scheme, "model": model,
                                  "repeat": s["repeat"], "fold": s["fold"],
                                  "macro_f1": s["macro_f1"], "accuracy": s["accuracy"]})
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
    import matplotlib.pyplot as plt

    plt.close("all")
    models = list(dict.fromkeys(r["model"] for r in result.records))
    model_lines = "\n".join(f"- `{m}`: {DESCRIPTIONS.get(m, '')}" for m in models)
    checks = {k: v for res in result.species.values() for k, v in res.dataset.checksums.items()}
    report = "\n\n".join([
        "# ephys2tx study report",
        f"ephys2tx {result.version}; run took {result.seconds:.0f} s; "
        f"{'quick mode' if result.config.quick else 'full run'}.",
        "## Methods", _methods(result), "### Models", model_lines,
        "## Data and QC", _qc_markdown(result),
        "## Results", results_markdown_table(result),
        *sections,
        "## Configuration", "```json\n" + json.dumps(config_dict(result.config), indent=2) + "\n```",
        "## Data files (sha256)", "\n".join(f"- `{k}`: `{v}`" for k, v in sorted(checks.items())),
    ])
    (out / "report.md").write_text(report + "\n")


def write_results(result: StudyResult, out_dir: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write the results folder atomically and return its path.

    Parameters
    ----------
    result : StudyResult
    out_dir : path-like
        Destination folder. An existing folder is replaced only once the new
        one is complete (and only if ``overwrite``).
    overwrite : bool
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        from ephys2tx.errors import InputError

        raise InputError(f"output folder {out} exists; pass --overwrite or choose another --out.")
    with staged_directory(out) as staging:
        build_report(result, staging)
    return out
