"""Figures. Each function only reads results and returns a matplotlib Figure.

Figures are built with matplotlib's object-oriented API (:class:`matplotlib.figure.Figure`),
never through pyplot: no backend is chosen or needed (``savefig`` renders with Agg), no
global figure state is kept, and importing this module selects no backend for the caller.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CLASS_COLOURS = {"Lamp5": "#DA808C", "Pvalb": "#D93137", "Sst": "#F15A29", "Vip": "#A45FBF",
                 "Sncg": "#D3C4E4", "Sst Chodl": "#B1B10C"}


def subplots(nrows: int = 1, ncols: int = 1, *, figsize, **kwargs):
    """``(figure, axes)`` as ``pyplot.subplots``, without pyplot (see the module docstring)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)

def confusion_figure(records: list[dict], title: str):
    """Row-normalised confusion matrices, one panel per model record."""
    n = len(records)
    fig, axes = subplots(1, n, figsize=(2.9 * n, 3.2), squeeze=False)
    for ax, rec in zip(axes[0], records):
        cm = np.asarray(rec["confusion_matrix"], float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        classes = rec["classes"]
        ax.set_xticks(range(len(classes)), classes, rotation=45, fontsize=8)
        ax.set_yticks(range(len(classes)), classes if ax is axes[0][0] else [], fontsize=8)
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.6 else "black")
        ax.set_title(f"{rec['model']}\nmacro-F1 {rec['macro_f1']['mean']:.3f}", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
    axes[0][0].set_ylabel("true", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def embedding_figure(embedding: pd.DataFrame, title: str, *, marker_column: str | None = None):
    """2-D embedding coloured by subclass (and marked by ``marker_column`` if given)."""
    fig, ax = subplots(figsize=(5.2, 4.6))
    markers = ["o", "^", "s", "D"]
    groups = [(None, embedding)] if marker_column is None else list(embedding.groupby(marker_column))
    for g, (gname, part) in enumerate(groups):
        for cls, sub in part.groupby("subclass"):
            label = cls if gname is None else f"{cls} ({gname})"
            ax.scatter(sub["dim1"], sub["dim2"], s=5, alpha=0.6, marker=markers[g % 4],
                       color=CLASS_COLOURS.get(cls, "grey"), label=label, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    ax.legend(markerscale=3, fontsize=7, frameon=False, loc="best")
    fig.tight_layout()
    return fig


def fold_scores_figure(fold_table: pd.DataFrame, title: str):
    """Macro-F1 of every fold for each model (columns: model, split, macro_f1)."""
    models = list(dict.fromkeys(fold_table["model"]))
    splits = list(dict.fromkeys(fold_table["split"]))
    fig, ax = subplots(figsize=(1.0 + 0.9 * len(models) * len(splits), 3.4))
    rng = np.random.default_rng(0)
    ticks, labels = [], []
    for i, model in enumerate(models):
        for j, split in enumerate(splits):
            vals = fold_table.query("model == @model and split == @split")["macro_f1"].to_numpy()
            if not len(vals):
                continue
            x = i * (len(splits) + 0.5) + j
            ax.scatter(x + rng.uniform(-0.15, 0.15, len(vals)), vals, s=10, alpha=0.7,
                       color=f"C{j}")
            ax.hlines(vals.mean(), x - 0.3, x + 0.3, color="black")
            ticks.append(x)
            labels.append(f"{model}\n{split}")
    ax.set_xticks(ticks, labels, fontsize=7, rotation=45, ha="right")
    ax.set_ylabel("macro-F1 per fold")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def attention_figure(attention: pd.DataFrame, labels: pd.Series, importance: pd.DataFrame | None,
                     title: str):
    """Per-class mean attention over families (± sd) and its agreement with permutation importance.

    Parameters
    ----------
    attention : DataFrame (cells x families)
        Out-of-fold attention weights.
    labels : Series
        Subclass per cell (same index).
    importance : DataFrame or None
        Columns ``family``, ``drop_macro_f1`` (one row per fold and family).
    """
    families = list(attention.columns)
    classes = [c for c in CLASS_COLOURS if c in set(labels.loc[attention.index])]
    n_panels = 2 if importance is not None else 1
    fig, axes = subplots(1, n_panels, figsize=(7.5 + 3.5 * (n_panels - 1), 3.8),
                             gridspec_kw={"width_ratios": [2.2, 1][:n_panels]}, squeeze=False)
    ax = axes[0][0]
    width = 0.8 / max(len(classes), 1)
    lab = labels.loc[attention.index]
    for k, cls in enumerate(classes):
        part = attention[lab == cls]
        x = np.arange(len(families)) + (k - (len(classes) - 1) / 2) * width
        ax.bar(x, part.mean(), width, yerr=part.std(), color=CLASS_COLOURS[cls], label=cls,
               error_kw={"elinewidth": 0.6})
    ax.axhline(1 / len(families), color="grey", lw=0.7, ls="--")
    ax.set_xticks(range(len(families)), families, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("attention weight (mean ± sd)")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title, fontsize=10)
    if importance is not None:
        from scipy.stats import spearmanr

        ax2 = axes[0][1]
        imp = importance.groupby("family")["drop_macro_f1"].mean().reindex(families)
        att = attention.mean().reindex(families)
        rho = spearmanr(att, imp).statistic
        ax2.scatter(att, imp, s=14)
        for fam in families:
            ax2.annotate(fam, (att[fam], imp[fam]), fontsize=6)
        ax2.set_xlabel("mean attention")
        ax2.set_ylabel("macro-F1 drop when permuted")
        ax2.set_title(f"attention vs permutation importance\nSpearman ρ = {rho:.2f}", fontsize=9)
    fig.tight_layout()
    return fig


def transfer_folds_figure(fold_table: pd.DataFrame, designs: list[str], baselines: list[str],
                          title: str):
    """Human macro-F1 per fold: each transfer design beside the human-only baselines.

    ``fold_table`` has columns split, model, repeat, fold, macro_f1. Lines join
    the same fold across models, so paired differences are visible.
    """
    splits = list(dict.fromkeys(fold_table["split"]))
    models = [m for m in baselines + designs if m in set(fold_table["model"])]
    fig, axes = subplots(1, len(splits), figsize=(1.2 + 1.1 * len(models) * len(splits), 3.8),
                             squeeze=False, sharey=True)
    for ax, split in zip(axes[0], splits):
        part = fold_table[fold_table["split"] == split]
        wide = part.pivot_table(index=["repeat", "fold"], columns="model", values="macro_f1")
        wide = wide[[m for m in models if m in wide.columns]]
        for _, row in wide.iterrows():
            ax.plot(range(len(wide.columns)), row.to_numpy(), color="grey", alpha=0.3, lw=0.8)
        for i, m in enumerate(wide.columns):
            colour = "C1" if m in designs else "C0"
            ax.scatter(np.full(len(wide), i), wide[m], s=12, color=colour, zorder=3)
            ax.hlines(wide[m].mean(), i - 0.3, i + 0.3, color="black", zorder=4)
        ax.set_xticks(range(len(wide.columns)), wide.columns, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{split}", fontsize=9)
    axes[0][0].set_ylabel("human macro-F1 per fold")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
