"""Outputs of ``ephys2tx map``: predictions, a short report and its figures.

Also the measured figures of ``docs/map_your_cells.md``: run
``python -m ephys2tx.report.mapping_report --out docs/figures`` to recompute,
on the real data, the calibration (ECE before/after, reliability diagrams) per
species, the OOD AUROC on the mouse held-out subclasses and the shift
experiment, and to redraw the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ephys2tx.errors import InputError  # noqa: E402

__all__ = ["embedding_onto_reference", "ood_evaluation", "proportions_figure",
           "reliability_figure", "shift_figure", "write_mapping_report"]

CLASS_COLOURS = {"Lamp5": "#DA808C", "Pvalb": "#D93137", "Sst": "#F2A93B", "Vip": "#9C60B5"}


def reliability_figure(calibration: dict, title: str):
    """Reliability diagram before and after calibration, with the ECE in the legend."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
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


def embedding_onto_reference(reference_features: pd.DataFrame, query_features: pd.DataFrame
                             ) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA of the standardised reference, with the query projected onto it."""
    from sklearn.decomposition import PCA

    med = reference_features.median()
    ref = reference_features.fillna(med)
    mean, sd = ref.mean(), ref.std().replace(0, 1.0)
    z_ref = ((ref - mean) / sd).clip(-10, 10).to_numpy()
    z_q = ((query_features[reference_features.columns].fillna(med) - mean) / sd).clip(-10, 10).to_numpy()
    n_comp = min(2, z_ref.shape[1])
    pca = PCA(n_components=n_comp, random_state=0).fit(z_ref)
    a, b = pca.transform(z_ref), pca.transform(z_q)
    if n_comp == 1:
        a, b = np.column_stack([a, np.zeros(len(a))]), np.column_stack([b, np.zeros(len(b))])
    return a, b


def _embedding_figure(ref_xy, ref_labels, query_xy, query_pred, title):
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
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
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
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


def write_mapping_report(out_dir, predictions: pd.DataFrame, *, query_features: pd.DataFrame,
                         reference, model, align, column_map: str, input_path: Path,
                         from_cache: bool, warnings: list, overwrite: bool = False) -> Path:
    """Write predictions.csv, report.md and figures to ``out_dir`` atomically (temp dir + rename)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise InputError(f"output {out_dir} already exists; choose another path or pass --overwrite.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)
        predictions.to_csv(tmp / "predictions.csv", index=False)
        feats = model.features
        ref_xy, q_xy = embedding_onto_reference(reference.features[feats], query_features[feats])
        has_pred = predictions["predicted_subclass"].to_numpy() != ""
        fig = _embedding_figure(ref_xy, reference.labels.to_numpy(), q_xy[has_pred],
                                predictions["predicted_subclass"].to_numpy()[has_pred],
                                f"query cells on the {reference.species} reference "
                                f"({len(feats)} features)")
        fig.savefig(tmp / "embedding.png", dpi=130)
        plt.close(fig)
        pred = predictions.loc[has_pred, "predicted_subclass"]
        proportions = pd.DataFrame({
            "query": pred.value_counts(normalize=True).reindex(model.classes, fill_value=0.0),
            "reference": reference.labels.value_counts(normalize=True).reindex(model.classes,
                                                                               fill_value=0.0),
            "query_cells": pred.value_counts().reindex(model.classes, fill_value=0).astype(int)})
        fig = proportions_figure(proportions, "class proportions")
        fig.savefig(tmp / "proportions.png", dpi=130)
        plt.close(fig)
        calib = model.record.get("calibration")
        if calib:
            fig = reliability_figure(calib, f"{reference.species} reference, cross-validated")
            fig.savefig(tmp / "reliability.png", dpi=130)
            plt.close(fig)
        (tmp / "report.md").write_text(_report_markdown(
            predictions, proportions, model, align, column_map, input_path, from_cache, warnings,
            reference.species), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
        f"- reference: {species}, {model.record.get('n_cells', '?')} cells; model: forest on the "
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


def ood_evaluation(model, held_out_features: pd.DataFrame, held_out_labels: pd.Series,
                   reference_oof_scores: np.ndarray) -> dict:
    """AUROC and flag rates of the OOD score: held-out subclasses vs in-distribution OOF cells."""
    from sklearn.metrics import roc_auc_score

    out = model.predict_frame(held_out_features)
    scores = out["ood_score"].to_numpy()
    ok = np.isfinite(scores)
    result = {"auroc": float(roc_auc_score(np.r_[np.zeros(len(reference_oof_scores)), np.ones(ok.sum())],
                                           np.r_[reference_oof_scores, scores[ok]])),
              "flag_rate_in_distribution": float(np.mean(reference_oof_scores > model.ood_norm["threshold"])),
              "flag_rate_held_out": float(np.mean(scores[ok] > model.ood_norm["threshold"]))}
    for cls in sorted(held_out_labels.unique()):
        mask = (held_out_labels.to_numpy() == cls) & ok
        result[f"flag_rate_{cls}"] = float(np.mean(scores[mask] > model.ood_norm["threshold"]))
        result[f"auroc_{cls}"] = float(roc_auc_score(
            np.r_[np.zeros(len(reference_oof_scores)), np.ones(mask.sum())],
            np.r_[reference_oof_scores, scores[mask]]))
    return result


def shift_figure(table: pd.DataFrame, title: str):
    """Bars of macro F1 per shift/alignment condition."""
    fig, ax = plt.subplots(figsize=(5.4, 3.2))
    colours = ["#4c72b0", "#c44e52", "#55a868", "#8172b2"]
    ax.barh(table["condition"][::-1], table["macro_f1"][::-1], color=colours[: len(table)][::-1])
    for y, v in enumerate(table["macro_f1"][::-1]):
        ax.text(v + 0.01, y, f"{v:.3f}", va="center", fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("macro F1 on the held-out 30%")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    """Recompute the figures of docs/map_your_cells.md on the real data and print them."""
    from ephys2tx.mapping import fit_reference_model, reference_data, shift_experiment

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", default="docs/figures")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for species in ("mouse", "human"):
        ref = reference_data(species, args.data_dir)
        model = fit_reference_model(ref.features, ref.labels, species=species, groups=ref.groups)
        cal, cv = model.record["calibration"], model.record["cv"]
        print(f"{species}: forest ({len(model.features)} features, {len(ref.labels)} cells), "
              f"CV accuracy {cv['accuracy']:.3f}, macro F1 {cv['macro_f1']:.3f}; "
              f"ECE before {cal['ece_before']:.4f}, after ({cal['method']}) {cal['ece_after']:.4f}")
        fig = reliability_figure(cal, f"{species} reference ({'donor-grouped ' if cv['grouped_by_donor'] else ''}5-fold CV)")
        fig.savefig(out / f"map_reliability_{species}.png", dpi=130)
        plt.close(fig)
        if ref.held_out_features is not None:
            res = ood_evaluation(model, ref.held_out_features, ref.held_out_labels,
                                 model.diagnostics["oof_ood_scores"])
            print(f"{species} OOD (held-out {', '.join(sorted(ref.held_out_labels.unique()))}, "
                  f"{len(ref.held_out_labels)} cells): " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()))
        table = shift_experiment(species, args.data_dir, reference=ref)
        print(f"{species} shift experiment:\n{table.to_string(index=False, float_format='%.3f')}")
        fig = shift_figure(table, f"{species}: held-out 30%, per-feature gain 1.4 + offset 0.8 SD")
        fig.savefig(out / f"map_shift_{species}.png", dpi=130)
        plt.close(fig)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
