"""Shift benchmark: per-scenario macro-F1 of every method, the leave-one-scenario-out choice, the alarm.

Prints the per-scenario table (in-distribution, today's default, the chosen
default, the LOSO choice, the layer prior), every candidate's macro-F1 and
accuracy, the selection and the shift alarm's false-alarm rate and power.
Every figure comes from :func:`ephys2tx.experiments.shift_benchmark.run_shift_benchmark`
on the shared data (docs/shift.md). The full configuration took ~N min on 2
shared cores (see docs/shift.md for the measured time); ``--quick`` runs the
subset that ``ephys2tx run --quick`` runs.

    .venv/bin/python benchmarks/bench_shift.py --data-dir ../shared/data [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    from ephys2tx.experiments.shift_benchmark import ShiftBenchmarkConfig, run_shift_benchmark
    from ephys2tx.report.shift_report import alarm_table, benchmark_table, layer1_table, method_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--quick", action="store_true", help="The subset of `ephys2tx run --quick`.")
    parser.add_argument("--scenario", action="append", default=None, help="Run only these (repeatable).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-models", action="store_true",
                        help="Also the rig-augmented forest (forest_aug), as in docs/shift.md.")
    parser.add_argument("--json", default=None, help="Also write the results as JSON here.")
    parser.add_argument("--write-defaults", default=None, metavar="PATH",
                        help="Write map's defaults as the selection chose them (the package's "
                             "src/ephys2tx/models/shift_defaults.json).")
    args = parser.parse_args(argv)
    overrides = {"data_dir": args.data_dir, "seed": args.seed}
    if args.scenario:
        overrides["scenarios"] = tuple(args.scenario)
    if args.all_models:
        overrides["models"] = ("forest", "hgb", "ensemble", "forest_aug")
    config = (ShiftBenchmarkConfig.quick_config(**overrides) if args.quick
              else ShiftBenchmarkConfig(**overrides))
    started = time.perf_counter()

    def progress(description, done, total):
        print(f"\r[{done}/{total}] {description[:100]:<100}", end="", file=sys.stderr, flush=True)

    res = run_shift_benchmark(config, progress=progress)
    print(file=sys.stderr)
    sel, summ = res["selection"], res["summary"]
    print("## Per scenario\n")
    print(benchmark_table(res).to_markdown(index=False))
    print("\n## Every candidate, macro-F1 (last column: mean gain over today on all scenarios)\n")
    print(method_table(res).round(3).to_markdown())
    print("\n## Every candidate, accuracy\n")
    print(method_table(res, "accuracy").round(3).to_markdown())
    print(f"\nDefault chosen on all scenarios: {sel['overall']['choice']} (mean gain "
          f"{sel['overall']['gain']:+.3f}); LOSO: mean in-distribution {summ['mean_in_distribution']:.3f}, "
          f"today {summ['mean_today']:.3f}, LOSO choices {summ['mean_loso']:.3f}; recovered "
          f"{summ['recovery']:.0%} of the mean drop {summ['mean_drop']:.3f}; worse than today: "
          f"{summ['worse_than_today'] or 'none'}")
    if not layer1_table(res).empty:
        print("\n## Layer-1 cells of the queries: accuracy (the `--layer L1` use case)\n")
        print(layer1_table(res).to_markdown(index=False))
    print("\n## Shift alarm (false alarms: in-distribution rows; power: the others)\n")
    print(alarm_table(res).round(3).to_markdown(index=False))
    if res["rig_check"]:
        import pandas as pd

        print("\n## Real rigs and operators (bridge Lamp5 cells, one group vs the rest)\n")
        print(pd.DataFrame(res["rig_check"]).round(3).to_markdown(index=False))
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s (benchmark {res['seconds']:.0f} s)")
    if args.write_defaults:
        from ephys2tx.experiments.shift_benchmark import shift_defaults

        defaults = shift_defaults(res)
        with open(args.write_defaults, "w", encoding="utf-8") as handle:
            json.dump(defaults, handle, indent=1, default=list)
        print(f"map defaults -> {args.write_defaults}: {defaults['selected_from']['candidate']}, "
              f"prior mode {defaults['user_prior_mode']}")
    if args.json:
        def default(obj):
            import numpy as np

            if isinstance(obj, (np.integer, np.floating, np.bool_)):
                return obj.item()
            if isinstance(obj, np.ndarray):
                return obj.tolist()
            raise TypeError(type(obj))

        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(res, handle, default=default, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
