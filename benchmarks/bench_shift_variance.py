"""Shift benchmark Δ (map's default vs the former default) with training-set variance.

The per-scenario Δ intervals of ``ephys2tx run``'s shift table bootstrap the
query cells of one fixed training side. This benchmark refits both reference
models on donor/animal resamples of each scenario's training side
(:func:`ephys2tx.experiments.shift_benchmark.delta_training_variance`) and prints
Δ with an interval that holds training-set and query sampling together.

    .venv/bin/python benchmarks/bench_shift_variance.py --data-dir ../shared/data [--refits 5]
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    import pandas as pd

    from ephys2tx.experiments.shift_benchmark import ShiftBenchmarkConfig, delta_training_variance
    from ephys2tx.models.shift_adapt import AUTO_METHOD, DEFAULT_MAP_MODEL, MEAN_RELEVANCE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--refits", type=int, default=5, help="Donor-resampled refits per scenario.")
    parser.add_argument("--scenario", action="append", default=None, help="Run only these (repeatable).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="Also write the results as JSON here.")
    args = parser.parse_args(argv)
    default = f"{DEFAULT_MAP_MODEL}:{AUTO_METHOD}"
    if AUTO_METHOD.startswith("ccm"):
        default += f"@{MEAN_RELEVANCE:g}"
    config = ShiftBenchmarkConfig(data_dir=args.data_dir, seed=args.seed,
                                  scenarios=tuple(args.scenario) if args.scenario else None)

    def progress(description, done, total):
        print(f"\r[{done}/{total}] {description[:90]:<90}", end="", file=sys.stderr, flush=True)

    res = delta_training_variance(config, candidate=default, n_refits=args.refits, progress=progress)
    print(file=sys.stderr)
    table = pd.DataFrame([{"scenario": r["scenario"], "Δ (full training side)": f"{r['delta']:+.3f}",
                           "refit SD": f"{r['sd']:.3f}",
                           "95% interval": f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]",
                           "training donors/animals": r["n_train_groups"]} for r in res["rows"]])
    print(f"Δ macro-F1, {res['candidate']} − {res['baseline']}, {res['n_refits']} donor-resampled refits "
          f"per scenario (interval: Δ ± {res['t_quantile']:.2f} SD of the refit Δs, Student t)\n")
    print(table.to_markdown(index=False))
    m = res["mean"]
    print(f"\nmean Δ over {m['n_scenarios']} scenarios: {m['delta']:+.3f} "
          f"[{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}]; better in {m['scenarios_better']} of "
          f"{m['n_scenarios']}; {res['seconds']:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(res, handle, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
