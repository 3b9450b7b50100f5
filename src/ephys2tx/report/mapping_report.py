"""Outputs of ``ephys2tx map``: predictions, a short report and its figures.

Figure functions return matplotlib Figures (the backend is the caller's
choice: the writer saves them without a display); ``scripts/mapping_figures.py``
draws the figures of ``docs/mapping.md`` with them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ephys2tx.io import write_csv
from ephys2tx.report.figures import subplots

__all__ = ["ood_figure", "proportions_figure",
           "reliability_figure", "shift_figure", "write_mapping_report"]

#: Kind of a ``map`` output folder in its ownership marker (:mod:`ephys2tx.safety`).
MAPPING_OUTPUT_KIND = "mapping"

CLASS_COLOURS = {"Lamp5": "#DA808C", "Pvalb": "#D93137", "Sst": "#F2A93B", "Vip": "#9C60B5"}


def reliability_figure(calibration: dict, title: str):
    """Reliability diagram before and after calibration, with the ECE in the legend."""
    fig, ax = subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for key, colour, label in (("before", "#888888", "before"), ("after", "#1f77b4", "after")):
        curve = calibration[f"reliability_{key}"]
        ax.plot(curve["confidence"], curve["accuracy"], marker="o", color=colour,
                label=f"{label} ({calibration['method'] if key == 'after' else 'raw'}), "
                      f"ECE {calibration[f'ece_{key}']:.3f}")
    ax.set_xlabel("confidence (top class probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    return fig


def _embedding_figure(ref_xy, ref_labels, query_xy, query_pred, title):
    fig, ax = subplots(figsize=(5.4, 4.6))
    for cls, colour in CLASS_COLOURS.items():
        mask = np.asarray(ref_labels) == cls
        ax.scatter(ref_xy[mask, 0], ref_xy[mask, 1], s=4, alpha=0.25, color=colour, linewidths=0,
                   label=f"reference {cls}")
    for cls, colour in CLASS_COLOURS.items():
        mask = np.asarray(query_pred) == cls
        if mask.any():
            ax.scatter(query_xy[mask, 0], query_xy[mask, 1], s=22, marker="X", color=colour,
                       edgecolors="black", linewidths=0.5, label=f"query → {cls}")
    ax.set_xlabel("PC 1 (reference)")
    ax.set_ylabel("PC 2 (reference)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6, frameon=False, markerscale=1.5, loc="best")
    fig.tight_layout()
    return fig


def proportions_figure(proportions: pd.DataFrame, title: str):
    """Bars: share of each class in the query (predicted) and in the reference."""
    fig, ax = subplots(figsize=(4.6, 3.2))
    width = 0.38
    x = np.arange(len(proportions))
    ax.bar(x - width / 2, proportions["query"], width, label="query (predicted)",
           color=[CLASS_COLOURS.get(c, "grey") for c in proportions.index], edgecolor="black")
    ax.bar(x + width / 2, proportions["reference"], width, label="reference", color="lightgrey",
           edgecolor="black")
    ax.set_xticks(x, proportions.index)
    ax.set_ylabel("share of cells")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=130)


def write_mapping_report(out_dir, predictions: pd.DataFrame, *, embedding: tuple[np.ndarray, np.ndarray],
                         reference, model, align, column_map: str, input_path: Path,
                         from_cache: bool, warnings: list, overwrite: bool = False,
                         shift=None) -> Path:
    """Write predictions.csv, report.md and figures to ``out_dir`` atomically (temp dir + rename).

    ``embedding`` is the reference and query coordinates of
    :func:`ephys2tx.mapping.query.embedding_onto_reference` (one row per
    reference cell and per query cell); nothing is computed here.
    """
    from ephys2tx.safety import check_output_dir, staged_output_dir

    out_dir = check_output_dir(out_dir, kind=MAPPING_OUTPUT_KIND, overwrite=overwrite)
    with staged_output_dir(out_dir, MAPPING_OUTPUT_KIND, overwrite=overwrite, command="map") as tmp:
        write_csv(predictions, tmp / "predictions.csv")
        feats = model.features
        ref_xy, q_xy = embedding
        has_pred = predictions["predicted_subclass"].to_numpy() != ""
        _save(_embedding_figure(ref_xy, reference.labels.to_numpy(), q_xy[has_pred],
                                predictions["predicted_subclass"].to_numpy()[has_pred],
                                f"query cells on the {reference.species} reference "
                                f"({len(feats)} features)"), tmp / "embedding.png")
        pred = predictions.loc[has_pred, "predicted_subclass"]
        proportions = pd.DataFrame({
            "query": pred.value_counts(normalize=True).reindex(model.classes, fill_value=0.0),
            "reference": reference.labels.value_counts(normalize=True).reindex(model.classes,
                                                                               fill_value=0.0),
            "query_cells": pred.value_counts().reindex(model.classes, fill_value=0).astype(int)})
        _save(proportions_figure(proportions, "class proportions"), tmp / "proportions.png")
        calib = model.record.get("calibration")
        if calib:
            _save(reliability_figure(calib, f"{reference.species} reference, cross-validated"),
                  tmp / "reliability.png")
        text = _report_markdown(predictions, proportions, model, align, column_map, input_path,
                                from_cache, warnings, reference.species)
        if shift is not None:  # the shift alarm comes first, the shift handling after the summary
            from ephys2tx.report.shift_report import alarm_section, shift_section

            head, _, rest = text.partition("\n## Class proportions")
            text = (head.split("\n", 1)[0] + "\n\n" + alarm_section(shift) + "\n"
                    + head.split("\n", 1)[1].lstrip("\n") + "\n" + shift_section(shift, model.classes)
                    + "\n## Class proportions" + rest)
        (tmp / "report.md").write_text(text, encoding="utf-8")
    return out_dir


def _report_markdown(predictions, proportions, model, align, column_map, input_path, from_cache,
                     warnings, species) -> str:
    cv = model.record.get("cv", {})
    calib = model.record.get("calibration", {})
    n = len(predictions)
    has_pred = predictions["predicted_subclass"] != ""
    flagged = int(predictions["ood_flag"].fillna(False).astype(bool).sum())
    table = proportions.assign(query=lambda t: t["query"].map("{:.1%}".format),
                               reference=lambda t: t["reference"].map("{:.1%}".format))
    lines = [
        f"# Reference mapping of {input_path.name}",
        "",
        f"- reference: {species}, {model.record.get('n_cells', '?')} cells; model: {model.model} on the "
        f"{len(model.features)} features the query provides ({'cached' if from_cache else 'trained now'})",
        f"- column map: {column_map}; alignment: {align or 'none'}",
        f"- cells: {n}; predicted: {int(has_pred.sum())}; flagged out-of-distribution: {flagged} "
        f"(threshold: 5% false alarms on reference cross-validation)",
        f"- reference cross-validation ({cv.get('n_splits', '?')} folds"
        f"{', grouped by donor' if cv.get('grouped_by_donor') else ''}): accuracy "
        f"{cv.get('accuracy', float('nan')):.3f}, macro F1 {cv.get('macro_f1', float('nan')):.3f}",
        f"- calibration ({calib.get('method', '?')}): ECE {calib.get('ece_before', float('nan')):.3f} "
        f"before, {calib.get('ece_after', float('nan')):.3f} after (held-out folds)",
        "",
        "## Class proportions",
        "",
        table.to_markdown(),
        "",
        "![query cells embedded onto the reference](embedding.png)",
        "![class proportions](proportions.png)",
        "![reliability diagram](reliability.png)",
        "",
        f"Features used: {', '.join(model.features)}.",
    ]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- docs figures


def shift_figure(summary: pd.DataFrame, title: str):
    """Macro F1 (mean ± SD over seeds) per alignment condition, one panel per query mix.

    Parameters
    ----------
    summary : DataFrame
        :func:`ephys2tx.experiments.mapping_checks.summarise_shift` output.
    title : str
    """
    queries = list(dict.fromkeys(summary["query"]))
    fig, axes = subplots(1, len(queries), figsize=(4.2 * len(queries), 3.0), sharey=True,
                             squeeze=False)
    colours = ["#4c72b0", "#c44e52", "#55a868", "#8172b2"]
    for ax, query in zip(axes[0], queries):
        part = summary[summary["query"] == query].iloc[::-1]
        y = np.arange(len(part))
        ax.barh(y, part["macro_f1_mean"], xerr=part["macro_f1_std"].fillna(0.0),
                color=colours[: len(part)][::-1], capsize=3)
        for k, (v, sd) in enumerate(zip(part["macro_f1_mean"], part["macro_f1_std"].fillna(0.0))):
            ax.text(v + sd + 0.02, k, f"{v:.3f}", va="center", fontsize=8)
        ax.set_yticks(y, part["condition"])
        ax.set_xlim(0, 1.15)
        ax.set_xlabel("macro F1 on the held-out cells")
        ax.set_title(f"{query} (n seeds = {int(part['n_seeds'].iloc[0])})", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def ood_figure(scores: np.ndarray, held_out_labels: pd.Series, reference_oof_scores: np.ndarray,
               ood_norm: dict, title: str):
    """Histograms of the OOD score: reference cells (out of fold) vs each held-out subclass.

    Parameters
    ----------
    scores : ndarray
        OOD scores of the held-out cells (``model.predict_frame(...)["ood_score"]``).
    held_out_labels : Series
        Their subclasses.
    reference_oof_scores : ndarray
        Out-of-fold OOD scores of the reference cells.
    ood_norm : dict
        The model's ``ood_norm`` (``threshold`` and ``false_alarm_rate``).
    title : str
    """
    scores = np.asarray(scores, dtype=float)
    fig, ax = subplots(figsize=(5.0, 3.2))
    bins = np.linspace(min(reference_oof_scores.min(), np.nanmin(scores)),
                       np.quantile(np.r_[reference_oof_scores, scores[np.isfinite(scores)]], 0.995), 40)
    ax.hist(reference_oof_scores, bins=bins, density=True, alpha=0.5, color="grey",
            label=f"reference subclasses, out of fold (n={len(reference_oof_scores)})")
    for cls, colour in zip(sorted(held_out_labels.unique()), ("#1f77b4", "#d62728", "#2ca02c")):
        mask = held_out_labels.to_numpy() == cls
        ax.hist(scores[mask], bins=bins, density=True, histtype="step", lw=1.6, color=colour,
                label=f"held-out {cls} (n={int(mask.sum())})")
    ax.axvline(ood_norm["threshold"], color="black", ls="--", lw=1,
               label=f"flag threshold ({ood_norm['false_alarm_rate']:.0%} false alarms)")
    ax.set_xlabel("OOD score (z distance + z uncertainty)")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6.5, frameon=False)
    fig.tight_layout()
    return fig
