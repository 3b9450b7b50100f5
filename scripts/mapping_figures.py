"""Recompute the measured figures of docs/mapping.md on the real data, and redraw its figures.

Calibration (ECE before/after, reliability diagrams) per species, the OOD AUROC on
the mouse held-out subclasses (with a histogram) and the artificial shift
experiment (mean and SD over seeds)::

    .venv/bin/python scripts/mapping_figures.py --data-dir ../shared/data --out docs/figures
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ephys2tx.experiments.mapping_checks import ood_evaluation, shift_experiment, summarise_shift
from ephys2tx.mapping import fit_reference_model, reference_data
from ephys2tx.report.mapping_report import ood_figure, reliability_figure, shift_figure


def _save(fig, path: Path) -> None:
    # the figures are matplotlib Figure objects (no pyplot, no backend to choose)
    fig.savefig(path, dpi=130)


def main(argv=None) -> int:
    """Recompute the figures of docs/mapping.md on the real data and print the measured figures."""

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
            scores = model.predict_frame(ref.held_out_features)["ood_score"].to_numpy()
            _save(ood_figure(scores, ref.held_out_labels, oof, model.ood_norm,
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


if __name__ == "__main__":
    raise SystemExit(main())
