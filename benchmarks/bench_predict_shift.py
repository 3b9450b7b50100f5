"""Shift benchmark of the ``train`` + ``predict`` route: macro-F1 of ``predict --align none|em``.

Long-running (a few minutes on 2 idle cores: one reference fit per scenario);
real data only. The scenarios are those of the ``map`` shift benchmark
(:func:`ephys2tx.experiments.shift_benchmark.build_scenarios`):

* leave one layer out: mouse L1, L2/3, L4, L5, L6; human L2, L3, L4-6;
* human acute -> culture and culture -> acute;
* mouse -> human: a mouse model (21 harmonised features) reading the human cells;
* the mouse L1 bridge cells in the IPFX naming, read through the shipped
  ``ipfx`` column map, with those cells removed from the training cells;
* ``human L1 (bridge stand-in)``: the shared data hold 1 human layer-1 cell
  after QC, so the stand-in for a human layer-1 query is the one of
  ``benchmarks/bench_l1_query.py``: the mouse L1 bridge cells (Lamp5, Vip), whose
  IPFX features carry the human table's names, read as ``predict`` reads a user
  table (:func:`ephys2tx.mapping.query.read_query`, shipped map detected), against
  a human model trained on all human cells. Another species as well as another layer.

For each, a reference model is fitted on the training side the way ``ephys2tx
train`` fits it (:func:`ephys2tx.mapping.reference.fit_reference_model`: forest,
100 trees, 5 donor-grouped folds, isotonic calibration, seed 0) on *all* the
reference's features (mouse: the 21 harmonised features; human: 93), and the
held-out cells are predicted through the code ``predict`` runs
(:func:`ephys2tx.models.predict_shift.predict_with_shift`; model features the
query lacks are filled with the training medians by the model), with
every candidate of :data:`ephys2tx.models.predict_shift.PREDICT_CANDIDATES`
(``none``; ``em``, Saerens et al. 2002 with a pseudo-count of 10 cells towards
the training mix; the more cautious ``em@100`` and ``em@300``; ``em_test`` and
``em_test@100``, EM only when the likelihood-ratio class-mix test rejects),
without and with the layer prior (``--layer``; the layer tables leave the
query's cells out). With a layer prior every candidate gives the same call
(the prior replaces the estimated mix), so only ``none+layer`` is scored. Scores: macro-F1 over the classes
present in the query and accuracy, with a bootstrap CI over cells and the
paired difference to ``none``.

The default of ``predict --align auto`` is chosen leave-one-scenario-out
(:func:`ephys2tx.experiments.shift_benchmark.loso_select`): for each scenario,
the method with the best mean gain over ``none`` on the *other* scenarios is
the one scored on it; the default is the choice on all scenarios, written with
its provenance by ``--write-defaults``::

    .venv/bin/python benchmarks/bench_predict_shift.py --data-dir ../shared/data \\
        [--write-defaults src/ephys2tx/models/predict_shift_defaults.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import pandas as pd

#: Scenarios of the map shift benchmark that the predict route can run (a saved model of one
#: species, the query in that species' reference naming).
SCENARIOS = ("mouse L1", "mouse L2/3", "mouse L4", "mouse L5", "mouse L6", "human L2", "human L3",
             "human L4-6", "human acute->culture", "human culture->acute", "mouse->human",
             "bridge (IPFX pipeline)", "human L1 (bridge stand-in)")
#: Built here, not by the map benchmark.
L1_STAND_IN = "human L1 (bridge stand-in)"


def _methods():
    from ephys2tx.models.predict_shift import PREDICT_CANDIDATES

    return PREDICT_CANDIDATES


def l1_stand_in(data_dir=None):
    """The human layer-1 stand-in: bridge cells read as ``predict`` reads a table, and their labels.

    Returns
    -------
    (features, labels, layers, ids)
        Canonical features of the labelled bridge cells (Lamp5, Vip; Sncg has no
        reference class), their subclasses, ``"L1"`` for every cell, and their ids
        (left out of the layer tables: 192 of VISp's 244 labelled layer-1 cells are bridge cells).
    """
    from ephys2tx import CLASSES
    from ephys2tx.data.datasets import load_dataset
    from ephys2tx.data.paths import resolve_data_dir
    from ephys2tx.mapping.query import read_query

    table = resolve_data_dir(data_dir) / "mouse_l1_bridge_chartrand2023" / "aibs_mouse_features_E.csv"
    query = read_query(table)
    features = query.features.copy()
    features.index = pd.Index([str(i) for i in query.ids], name="cell_id")
    labels = load_dataset("mouse_l1_bridge", data_dir).labels
    labels.index = labels.index.map(str)
    labels = labels[labels.isin(CLASSES)]
    ids = features.index.intersection(labels.index)
    return (features.loc[ids], labels.loc[ids], pd.Series("L1", index=ids), tuple(ids))


def _sides(built, data_dir, references):
    """(name, species, X_train, y_train, groups, X_query, y_query, layers, exclude) per scenario."""
    from ephys2tx.mapping.reference import reference_data

    for scen in built:
        if isinstance(scen, str):  # the L1 stand-in: all human cells train, the bridge cells query
            ref = references.setdefault("human", reference_data("human", data_dir))
            X_query, y_query, layers, exclude = l1_stand_in(data_dir)
            yield (scen, "human", ref.features, ref.labels, ref.groups, X_query, y_query, layers, exclude)
            continue
        (task,) = scen.tasks
        species = task.layer_species
        ref = references.setdefault(species, reference_data(species, data_dir))
        # the training side on ALL the reference's features (the map benchmark keeps only the
        # query's features), with its donors, as `train` fits it
        ids = task.X_train.index
        yield (scen.name, species, ref.features.loc[ids], ref.labels.loc[ids],
               None if ref.groups is None else ref.groups.loc[ids], task.X_query, task.y_query,
               task.layers, task.exclude_from_layer_tables)


def run(data_dir=None, *, scenarios=SCENARIOS, seed: int = 0, n_boot: int = 1000,
        n_estimators: int | None = None, progress=None) -> dict:
    """Fit, predict and score every scenario; choose ``auto``'s method leave-one-scenario-out.

    Returns
    -------
    dict
        ``scenarios``: per scenario, cells, features, in-distribution CV macro-F1 of
        the training side, ``em_test``'s class-mix test, and per candidate (every
        method, and ``none+layer``) macro-F1 / accuracy with 95% CIs and the paired
        difference to ``none``; ``selection``: :func:`loso_select` over the methods;
        ``loso``: per scenario the method chosen on the others and its score;
        ``params``.
    """
    from ephys2tx.data.layers import layer_priors, layer_tables
    from ephys2tx.experiments.shift_benchmark import (ShiftBenchmarkConfig, _combine, _task_bootstrap,
                                                      build_scenarios, loso_select)
    from ephys2tx.mapping.reference import FOREST_TREES, fit_reference_model
    from ephys2tx.models.predict_shift import predict_with_shift
    from ephys2tx.models.shift_adapt import reference_prior

    say = progress or (lambda msg: None)
    methods = _methods()
    n_estimators = FOREST_TREES if n_estimators is None else int(n_estimators)
    scenarios = tuple(scenarios)
    built = build_scenarios(ShiftBenchmarkConfig(data_dir=data_dir, seed=seed,
                                                 scenarios=tuple(s for s in scenarios if s != L1_STAND_IN)))
    built = sorted([*built, *([L1_STAND_IN] if L1_STAND_IN in scenarios else [])],
                   key=lambda b: scenarios.index(b if isinstance(b, str) else b.name))
    rng = np.random.default_rng(seed)
    out = []
    for name, species, X_train, y_train, groups, X_query, y_query, layers, exclude in _sides(
            built, data_dir, {}):
        say(f"{name}: fit forest on {len(X_train)} cells, {X_train.shape[1]} features")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fit_reference_model(X_train, y_train, species=species, model="forest", groups=groups,
                                        n_estimators=n_estimators, random_state=seed)
        classes = list(model.classes)
        tables = layer_tables(species, data_dir, exclude=exclude)
        priors, layer_notes, known = layer_priors(layers.to_numpy(dtype=object), tables, classes,
                                                  strict=False)
        rows = np.where(known[:, None], priors, np.nan) if known.any() else None
        missing = [f for f in model.features if f not in X_query.columns or X_query[f].isna().all()]
        truth = _codes(y_query, classes)
        preds, mix_tests = {}, {}
        for method in methods:
            res = predict_with_shift(model, X_query, align=method, random_state=seed)
            preds[method] = _codes(res.predictions["predicted_subclass"], classes)
            mix_tests[method] = [n for n in res.notes if n.startswith("class-mix test")]
            if rows is not None:
                with_prior = predict_with_shift(model, X_query, align=method, user_prior=rows,
                                                random_state=seed)
                call = _codes(with_prior.predictions["predicted_subclass"], classes)
                if method == "none":
                    preds["none+layer"] = call
                elif not np.array_equal(call, preds["none+layer"]):  # the prior replaces the mix
                    raise AssertionError(f"{name}: {method} with the layer prior differs from none+layer")
        boot = _task_bootstrap(truth, preds, n_boot, rng)
        scores = {m: _combine([boot], m, rng, n_boot, ref="none") for m in preds}
        out.append({"name": name, "n_query": int(len(truth)), "n_train": int(len(X_train)),
                    "n_features": len(model.features), "n_missing_features": len(missing),
                    "in_distribution_macro_f1": float(model.record["cv"]["macro_f1"]),
                    "class_mix": y_query.value_counts(normalize=True).round(3).to_dict(),
                    "training_mix": dict(zip(classes, np.round(reference_prior(model), 3).tolist())),
                    "layer_notes": layer_notes, "class_mix_test": mix_tests.get("em_test", []),
                    "methods": scores})
        say(f"{name}: " + ", ".join(f"{k} {v['macro_f1']:.3f}" for k, v in scores.items()))
    table = pd.DataFrame({s["name"]: {m: s["methods"][m]["macro_f1"] for m in methods} for s in out}).T
    selection = loso_select(table[list(methods)], default="none") if len(table) > 1 else None
    loso = {}
    if selection is not None:
        for s in out:
            choice = selection["per_scenario"][s["name"]]["choice"]
            loso[s["name"]] = {"choice": choice, "macro_f1": s["methods"][choice]["macro_f1"],
                               "accuracy": s["methods"][choice]["accuracy"]}
    return {"scenarios": out, "selection": selection, "loso": loso,
            "params": {"seed": seed, "n_boot": n_boot, "n_estimators": n_estimators,
                       "model": "forest", "calibration": "isotonic", "n_splits": 5,
                       "scenarios": list(scenarios), "methods": list(methods)}}


def _codes(labels, classes) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(v, -1) for v in np.asarray(labels, dtype=object)], dtype=np.int64)


def results_table(res: dict, metric: str = "macro_f1") -> pd.DataFrame:
    """One row per scenario: in-distribution score, every candidate, the LOSO choice; then the mean."""
    rows = []
    for s in res["scenarios"]:
        row = {"scenario": s["name"], "cells": s["n_query"],
               "missing features": f"{s['n_missing_features']}/{s['n_features']}",
               "in-distribution (CV macro-F1)": s["in_distribution_macro_f1"]}
        for name, m in s["methods"].items():
            lo, hi = m[f"{metric}_ci95"]
            row[name] = f"{m[metric]:.3f} [{lo:.2f}, {hi:.2f}]"
        if res["loso"]:
            row["LOSO choice"] = res["loso"][s["name"]]["choice"]
            row["LOSO score"] = f"{res['loso'][s['name']][metric]:.3f}"
        rows.append(row)
    mean = {"scenario": "mean", "cells": "", "missing features": "", "LOSO choice": "",
            "in-distribution (CV macro-F1)": np.mean([s["in_distribution_macro_f1"] for s in res["scenarios"]])}
    for name in res["scenarios"][0]["methods"]:
        values = [s["methods"][name][metric] for s in res["scenarios"] if name in s["methods"]]
        mean[name] = f"{np.mean(values):.3f}" + ("" if len(values) == len(res["scenarios"])
                                                   else f" ({len(values)} scenarios)")
    if res["loso"]:
        mean["LOSO score"] = f"{np.mean([v[metric] for v in res['loso'].values()]):.3f}"
    rows.append(mean)
    table = pd.DataFrame(rows)
    table["in-distribution (CV macro-F1)"] = table["in-distribution (CV macro-F1)"].map(
        lambda v: f"{v:.3f}" if isinstance(v, float) else v)
    return table


def defaults(res: dict) -> dict:
    """``predict_shift_defaults.json``: ``auto``'s method and where it came from."""
    sel = res["selection"]
    return {"auto_method": sel["overall"]["choice"],
            "selected_from": {
                "by": "benchmarks/bench_predict_shift.py: leave-one-scenario-out selection "
                      "(experiments.shift_benchmark.loso_select), mean gain in macro-F1 over 'none'",
                "mean_gain": sel["overall"]["gain"], "gains": sel["gains"],
                "per_scenario_choice": {k: v["choice"] for k, v in sel["per_scenario"].items()},
                "scenarios": [s["name"] for s in res["scenarios"]], "params": res["params"]}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--scenario", action="append", default=None, help="Run only these (repeatable).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--n-estimators", type=int, default=None, help="Trees (default: train's).")
    parser.add_argument("--json", default=None, help="Also write the results as JSON here.")
    parser.add_argument("--write-defaults", default=None, metavar="PATH",
                        help="Write predict's --align auto default as the selection chose it "
                             "(src/ephys2tx/models/predict_shift_defaults.json).")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    res = run(args.data_dir, scenarios=tuple(args.scenario or SCENARIOS), seed=args.seed,
              n_boot=args.n_boot, n_estimators=args.n_estimators,
              progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print("## predict route: macro-F1 [95% CI over cells]\n")
    print(results_table(res).to_markdown(index=False))
    print("\n## predict route: accuracy [95% CI over cells]\n")
    print(results_table(res, "accuracy").to_markdown(index=False))
    if res["selection"] is not None:
        sel = res["selection"]
        print(f"\n--align auto default chosen on all scenarios: {sel['overall']['choice']} "
              f"(mean macro-F1 gain over none {sel['overall']['gain']:+.3f}; gains "
              + ", ".join(f"{k} {v:+.3f}" for k, v in sel["gains"].items()) + ")")
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s")
    if args.write_defaults:
        if res["selection"] is None:
            parser.error("--write-defaults needs at least two scenarios")
        chosen = defaults(res)
        with open(args.write_defaults, "w", encoding="utf-8") as handle:
            json.dump(chosen, handle, indent=1)
            handle.write("\n")
        print(f"predict --align auto default -> {args.write_defaults}: {chosen['auto_method']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(res, handle, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
