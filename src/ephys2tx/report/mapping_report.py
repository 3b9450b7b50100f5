"""Outputs of ``ephys2tx map``: predictions, a short report and its figures.

Also the measured figures of ``docs/mapping.md``: run
``python -m ephys2tx.report.mapping_report --out docs/figures`` to recompute,
on the real data, the calibration (ECE before/after, reliability diagrams) per
species, the OOD AUROC on the mouse held-out subclasses (with a histogram) and
the shift experiment (mean and SD over seeds), and to redraw the figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ephys2tx.data.user_tables import write_csv  # noqa: E402
from ephys2tx.errors import InputError  # noqa: E402

__all__ = ["embedding_onto_reference", "ood_evaluation", "ood_figure", "proportions_figure",
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


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_mapping_report(out_dir, predictions: pd.DataFrame, *, query_features: pd.DataFrame,
                         reference, model, align, column_map: str, input_path: Path,
                         from_cache: bool, warnings: list, overwrite: bool = False,
                         shift=None) -> Path:
    """Write predictions.csv, report.md and figures to ``out_dir`` atomically (temp dir + rename)."""
    from ephys2tx.mapping import MAPPING_OUTPUT_KIND
    from ephys2tx.safety import check_output_dir, staged_output_dir

    out_dir = check_output_dir(out_dir, kind=MAPPING_OUTPUT_KIND, overwrite=overwrite)
    with staged_output_dir(out_dir, MAPPING_OUTPUT_KIND, overwrite=overwrite, command="map") as tmp:
        write_csv(predictions, tmp / "predictions.csv")
        feats = model.features
        ref_xy, q_xy = embedding_onto_reference(reference.features[feats], query_features[feats])
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


def shift_figure(summary: pd.DataFrame, title: str):
    """Macro F1 (mean ± SD over seeds) per alignment condition, one panel per query mix.

    Parameters
    ----------
    summary : DataFrame
        :func:`ephys2tx.mapping.summarise_shift` output.
    title : str
    """
    queries = list(dict.fromkeys(summary["query"]))
    fig, axes = plt.subplots(1, len(queries), figsize=(4.2 * len(queries), 3.0), sharey=True,
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


def ood_figure(model, held_out_features: pd.DataFrame, held_out_labels: pd.Series,
               reference_oof_scores: np.ndarray, title: str):
    """Histograms of the OOD score: reference cells (out of fold) vs each held-out subclass."""
    scores = model.predict_frame(held_out_features)["ood_score"].to_numpy()
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    bins = np.linspace(min(reference_oof_scores.min(), np.nanmin(scores)),
                       np.quantile(np.r_[reference_oof_scores, scores[np.isfinite(scores)]], 0.995), 40)
    ax.hist(reference_oof_scores, bins=bins, density=True, alpha=0.5, color="grey",
            label=f"reference subclasses, out of fold (n={len(reference_oof_scores)})")
    for cls, colour in zip(sorted(held_out_labels.unique()), ("#1f77b4", "#d62728", "#2ca02c")):
        mask = held_out_labels.to_numpy() == cls
        ax.hist(scores[mask], bins=bins, density=True, histtype="step", lw=1.6, color=colour,
                label=f"held-out {cls} (n={int(mask.sum())})")
    ax.axvline(model.ood_norm["threshold"], color="black", ls="--", lw=1,
               label=f"flag threshold ({model.ood_norm['false_alarm_rate']:.0%} false alarms)")
    ax.set_xlabel("OOD score (z distance + z uncertainty)")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6.5, frameon=False)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    """Recompute the figures of docs/mapping.md on the real data and print the measured figures."""
    from ephys2tx.mapping import (fit_reference_model, reference_data, shift_experiment,
                                  summarise_shift)

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", default="docs/figures")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", type=int, default=5, help="Seeds of the shift experiment.")
    parser.add_argument("--networks", action="store_true",
                        help="Also calibrate the BiLSTM and the transfer model on the human reference.")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for species in ("mouse", "human"):
        ref = reference_data(species, args.data_dir)
        model = fit_reference_model(ref.features, ref.labels, species=species, groups=ref.groups)
        cal, cv = model.record["calibration"], model.record["cv"]
        print(_fit_line(model))
        grouped = "donor-grouped " if cv["grouped_by_donor"] else ""
        _save(reliability_figure(cal, f"{species} reference ({grouped}{cv['n_splits']}-fold CV)"),
              out / f"map_reliability_{species}.png")
        if ref.held_out_features is not None:
            oof = model.diagnostics["oof_ood_scores"]
            res = ood_evaluation(model, ref.held_out_features, ref.held_out_labels, oof)
            print(f"{species} OOD (held-out {', '.join(sorted(ref.held_out_labels.unique()))}, "
                  f"{len(ref.held_out_labels)} cells): " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()))
            _save(ood_figure(model, ref.held_out_features, ref.held_out_labels, oof,
                             f"{species}: OOD score, AUROC {res['auroc']:.3f}"),
                  out / f"map_ood_{species}.png")
        table = shift_experiment(species, args.data_dir, reference=ref, seeds=range(args.seeds))
        summary = summarise_shift(table)
        print(f"{species} shift experiment ({args.seeds} seeds, mean and SD):\n"
              f"{summary.to_string(index=False, float_format='%.3f')}")
        _save(shift_figure(summary, f"{species}: held-out 30%, per-feature gain 1.4 + offset 0.8 SD"),
              out / f"map_shift_{species}.png")
    if args.networks:
        from ephys2tx.data.datasets import load_dataset

        ref = reference_data("human", args.data_dir)
        mouse = load_dataset("mouse_visp", args.data_dir)
        for name, extra in (("bilstm", {}), ("transfer", {"source": (mouse.features, mouse.labels)})):
            print(_fit_line(fit_reference_model(ref.features, ref.labels, species="human", model=name,
                                                groups=ref.groups, **extra)))
    return 0


def _fit_line(model) -> str:
    cal, cv = model.record["calibration"], model.record["cv"]
    return (f"{model.species}: {model.model} ({len(model.features)} features, {model.record['n_cells']} "
            f"cells), CV accuracy {cv['accuracy']:.3f}, macro F1 {cv['macro_f1']:.3f}; ECE before "
            f"{cal['ece_before']:.4f}, after ({cal['method']}) {cal['ece_after']:.4f}")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
