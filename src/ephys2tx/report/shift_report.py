"""Markdown for shift: the alarm and shift-handling sections of ``map``'s report, the benchmark tables.

Only reads results (:class:`~ephys2tx.models.shift_adapt.ShiftOutcome`, the dict
of :func:`ephys2tx.experiments.shift_benchmark.run_shift_benchmark`) and returns
text or tables; writes nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["alarm_section", "alarm_table", "benchmark_markdown", "benchmark_table", "layer1_table",
           "method_table", "shift_section", "terminal_lines"]


def _pct(v) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.0%}"


def _p(v) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.3g}"


# ----------------------------------------------------------------------------- map report


def alarm_section(outcome) -> str:
    """The report's first section: the shift alarm, what it means and what to do."""
    a = outcome.alarm
    title = {"alarm": "## ⚠ Shift alarm: your cells are unlike the reference",
             "note": "## Shift check: the class mix seems to differ from the reference",
             "ok": "## Shift check: no shift detected"}[a.level]
    if a.level == "ok" and not np.isfinite(a.p_marginal):
        title = "## Shift check: too few cells or features to test"
    # the terminal line points here; inside report.md it would point at itself
    message = a.message.replace(" Predictions may be wrong: see the first section of report.md.",
                                " Predictions may be wrong: read this section.")
    lines = [title, "", message, "",
             "Measured on the features as you gave them (before any alignment), against the "
             f"{a.n_reference} reference cells used by the test:", "",
             f"- two-sample test (MMD, permutation p-value), query vs reference: p = {_p(a.p_marginal)}",
             f"- the same against the reference resampled to your cells' estimated class mix "
             f"(is it more than a different class mix?): p = {_p(a.p_beyond_label_shift)}",
             f"- cells flagged out of distribution: {_pct(a.ood_rate)} (reference cells: "
             f"{_pct(a.ood_expected)}; binomial p = {_p(a.p_ood)})",
             "- estimated class mix (EM on the calibrated probabilities): "
             + ", ".join(f"{c} {v:.0%}" for c, v in a.class_mix.items())
             + "; reference: " + ", ".join(f"{c} {v:.0%}" for c, v in a.reference_mix.items()),
             f"- alarm level: p < {a.params.get('alpha')} on the second test, or significantly more "
             "than twice the expected share of OOD cells", ""]
    if a.level == "alarm":
        lines += [
            "**What it means.** A different class mix alone does not explain how your cells differ "
            "from the reference: another rig (junction potential, temperature, access), another "
            "feature pipeline or definition (sag, adaptation), another species, area or age, or cells "
            "of a type the reference does not have (the model knows only Lamp5, Pvalb, Sst and Vip; "
            "a pyramidal or Sncg cell still gets one of them). The calibrated confidence was measured "
            "on reference cells and does not hold for shifted cells.", "",
            "**What to do.** Check the column map first (units, signs, definitions: the features "
            "ranked below are the most shifted); check that the cells are interneurons of the "
            "reference's species; compare with `--align none`; if you know your cells' layer, give "
            "it (`--layer`); treat flagged cells and low-confidence calls as unknown.", ""]
    elif a.level == "note":
        lines += ["**What it means.** Your cells' features differ from the reference as a different "
                  "class mix would make them differ (a layer-1 query is mostly Lamp5). Marginal "
                  "alignment (`--align quantile`/`ot`) would then be wrong; the default `auto` "
                  "handles a different class mix.", ""]
    top = a.per_feature.head(10)
    if len(top):
        table = pd.DataFrame({
            "feature": top.index,
            "KS vs reference": top["ks"].map("{:.2f}".format),
            "KS vs reference at your class mix": top["ks_beyond_label_shift"].map("{:.2f}".format),
            "median shift (reference SD)": top["median_shift_sd"].map("{:+.2f}".format)})
        lines += ["Most shifted features (Kolmogorov-Smirnov statistic; the median shift is in the "
                  "reference's SD after a log transform of positive features):", "",
                  table.to_markdown(index=False), ""]
    return "\n".join(lines)


def shift_section(outcome, classes) -> str:
    """How the shift was handled: the method (and ``auto``'s reason), class mix, prior, rig map."""
    res = outcome.adapt
    lines = ["## Shift handling", "", f"- method: `{res.method}`"
             + ("" if res.requested == res.method else f" (requested `{res.requested}`)")]
    lines += [f"- {note}" for note in outcome.notes]
    if res.class_mix is not None:
        lines.append("- estimated class mix of your cells: "
                     + ", ".join(f"{c} {v:.0%}" for c, v in zip(classes, res.class_mix)))
    pred = outcome.predictions
    if "predicted_subclass_no_prior" in pred.columns:
        ok = pred["predicted_subclass"] != ""
        with_p = pred.loc[ok, "predicted_subclass"].value_counts().reindex(classes, fill_value=0)
        without = pred.loc[ok, "predicted_subclass_no_prior"].value_counts().reindex(classes, fill_value=0)
        changed = int((pred.loc[ok, "predicted_subclass"] != pred.loc[ok, "predicted_subclass_no_prior"]).sum())
        lines += ["", "Predicted classes with your prior and without it (columns "
                  "`predicted_subclass` and `predicted_subclass_no_prior` of predictions.csv); "
                  f"{changed} cell(s) change:", "",
                  pd.DataFrame({"with prior": with_p, "without prior": without}).to_markdown(), ""]
    if res.alignment is not None and res.alignment.params.get("aligned", False):
        shifts = res.alignment.feature_shift().head(8)
        lines += ["", "Largest estimated rig changes (joint EM; scale and offset of each feature in "
                  "the reference's standardised space, 1 and 0 = unchanged):", "",
                  shifts.assign(scale=shifts["scale"].map("{:.2f}".format),
                                offset_sd=shifts["offset_sd"].map("{:+.2f}".format))
                  [["scale", "offset_sd"]].to_markdown(), ""]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- benchmark


def _cell(stat: dict) -> str:
    return f"{stat['macro_f1']:.3f} [{stat['macro_f1_ci95'][0]:.2f}, {stat['macro_f1_ci95'][1]:.2f}]"


def benchmark_table(results: dict) -> pd.DataFrame:
    """Per scenario: in-distribution, today's default, the chosen default, the LOSO choice, layer prior."""
    default = results["selection"]["overall"]["choice"]
    variance = _variance_rows(results)
    rows = []
    for s in results["scenarios"]:
        today = s["methods"]["forest:none"]
        chosen = s["methods"][default]
        loso = s["loso"]
        kind, method = default.split(":")[0], default.split(":")[1].split("/")[0].split("@")[0]
        layer_name = next((n for n in (*_layer_names(results, kind, method), f"{kind}:none+layer",
                                       "forest:none+layer") if n in s["methods"]), None)
        layer = None if layer_name is None else s["methods"][layer_name]
        ident = s["in_distribution"]["forest"]
        drop = ident["macro_f1"] - today["macro_f1"]
        rows.append({
            "scenario": s["name"],
            "cells": "/".join(str(n) for n in s["n_query"]) if s["n_tasks"] <= 2 else
            f"{int(np.mean(s['n_query']))} × {s['n_tasks']}",
            "features": int(np.mean(s["n_features"])),
            "in-distribution": _cell(ident),
            "today (forest, none)": _cell(today),
            "drop": f"{drop:+.3f}",
            f"default ({default})": _cell(chosen),
            "Δ default vs today [CI95 cells]": f"{chosen.get('delta_vs_default', 0.0):+.3f} "
            f"[{chosen.get('delta_ci95', [0, 0])[0]:+.2f}, {chosen.get('delta_ci95', [0, 0])[1]:+.2f}]",
            **({} if variance is None else {"Δ [CI95 training variance]": variance.get(s["name"], "—")}),
            "LOSO choice": f"{s['loso_choice']}: {loso['macro_f1']:.3f}",
            "accuracy default / today": f"{chosen['accuracy']:.3f} / {today['accuracy']:.3f}",
            "with layer prior": "—" if layer is None else
            f"{layer['macro_f1']:.3f} (acc {layer['accuracy']:.3f}; {layer_name})",
        })
    return pd.DataFrame(rows)


def _variance_rows(results: dict) -> dict[str, str] | None:
    """Per scenario, the chosen default's Δ with its training-variance interval (None: not run)."""
    tv = results.get("training_variance")
    if not tv or tv.get("candidate") != results["selection"]["overall"]["choice"]:
        return None
    return {r["scenario"]: f"{r['delta']:+.3f} [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]"
            for r in tv["rows"]}


def variance_sentence(results: dict) -> str:
    """One paragraph: how the training-variance interval is made, and the mean Δ with it."""
    tv = results.get("training_variance")
    if _variance_rows(results) is None:
        return ""
    m = tv["mean"]
    return (f"*Δ [CI95 training variance]*: {tv['n_refits']} refits per scenario of both reference "
            "models on a resample of the training side's donors (human) or animals (mouse), each "
            "scored on a bootstrap resample of the query cells; the interval is Δ ± t × the SD of the "
            f"refit Δs (Student t, {tv['n_refits'] - 1} df; synthetic-rig scenarios are not refitted: "
            "their tasks already redraw the training fold). Mean Δ over these "
            f"{m['n_scenarios']} scenarios {m['delta']:+.3f} [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}]; "
            f"the default is better in {m['scenarios_better']} of {m['n_scenarios']}, and shown better "
            f"(interval above 0) in {sum(r['ci95'][0] > 0 for r in tv['rows'])}, shown worse in "
            f"{sum(r['ci95'][1] < 0 for r in tv['rows'])}. The *CI95 cells* interval bootstraps the "
            "query cells of one fixed fit and ignores training variance.")


def method_table(results: dict, metric: str = "macro_f1") -> pd.DataFrame:
    """Every candidate's score (rows) per scenario (columns), with the in-distribution row first."""
    data = {}
    for s in results["scenarios"]:
        col = {"in-distribution (forest)": s["in_distribution"]["forest"][metric if metric != "accuracy" else "accuracy"]}
        for name, stat in s["methods"].items():
            col[name] = stat[metric]
        data[s["name"]] = col
    table = pd.DataFrame(data)
    gains = results["selection"].get("gains", {})
    if metric == "macro_f1" and gains:
        table["mean gain vs today"] = pd.Series(gains)
    return table


def alarm_table(results: dict) -> pd.DataFrame:
    """False-alarm rate (in-distribution queries) and power (shifted queries) of the alarm."""
    table = pd.DataFrame(results["alarm"].get("table", []))
    if table.empty:
        return table
    return table.rename(columns={"kind": "query", "marginal_rate": "MMD test fires",
                                 "alarm_rate": "alarm fires", "mean_ood_rate": "OOD share",
                                 "median_cells": "cells"})


def _layer_names(results: dict, kind: str, method: str) -> list[str]:
    """Names of the default's layer-prior rows, the layer selection's choice first."""
    chosen = (results.get("layer_selection") or {}).get("overall", {}).get("choice") or ""
    suffixes = ["+layer_post", "+layer"]
    if chosen.endswith("+layer"):  # the selection's way of applying the prior comes first
        suffixes.reverse()
    return [f"{kind}:{method}{suffix}" for suffix in suffixes]


def layer1_table(results: dict) -> pd.DataFrame:
    """Accuracy on each query's layer-1 cells: today, the default, and with the layer prior."""
    default = results["selection"]["overall"]["choice"]
    kind, method = default.split(":")[0], default.split(":")[1].split("/")[0].split("@")[0]
    rows = []
    for s in results["scenarios"]:
        l1 = s.get("layer1")
        if not l1:
            continue
        acc = l1["accuracy"]
        rows.append({"scenario": s["name"], "layer-1 cells": l1["n"],
                     "today (forest, none)": acc.get("forest:none"),
                     "today + layer": acc.get("forest:none+layer"),
                     f"default ({default})": acc.get(default),
                     "default + layer (prior in the EM)": acc.get(f"{kind}:{method}+layer"),
                     "default + layer (prior after the EM)": acc.get(f"{kind}:{method}+layer_post")})
    return pd.DataFrame(rows).round(3)


def benchmark_markdown(results: dict) -> str:
    """The shift benchmark as a report section (Markdown)."""
    sel, summ = results["selection"], results["summary"]
    default = sel["overall"]["choice"]
    lines = [
        "## Shift benchmark: other layers, conditions, species, pipelines and rigs",
        "",
        "Each scenario trains the reference model as `ephys2tx map` does on a training side and "
        "predicts a shifted query made from the shared data (docs/shift.md). Macro-F1 over the "
        "classes present in the query, with a 95% bootstrap CI (over cells, and over tasks where a "
        "scenario has several); *in-distribution* is the same model's calibrated out-of-fold "
        "macro-F1 on the training side (random 5-fold CV, same features); *today* is `map` with "
        "the former defaults (forest, no alignment). The default is chosen by leave-one-scenario-"
        "out (LOSO): for each scenario, the candidate with the best mean gain over today on the "
        "other scenarios; the LOSO column shows that choice and its score on the held-out "
        "scenario. The layer prior (`--layer`) is reported beside, never chosen.",
        "",
        f"**Default chosen on all scenarios: `{default}`** (mean gain over today "
        f"{sel['overall']['gain']:+.3f}). Mean over scenarios: in-distribution "
        f"{summ['mean_in_distribution']:.3f}, today {summ['mean_today']:.3f} (drop "
        f"{summ['mean_drop']:.3f}), LOSO choices {summ['mean_loso']:.3f}: "
        f"{summ['recovery']:.0%} of the drop recovered"
        + (f"; worse than today in: {', '.join(summ['worse_than_today'])}." if summ["worse_than_today"]
           else "; no scenario worse than today."),
        "",
        benchmark_table(results).to_markdown(index=False),
        *(["", variance_sentence(results)] if variance_sentence(results) else []),
        "",
        "Every candidate (macro-F1; last column: mean gain over today on all scenarios):",
        "",
        method_table(results).round(3).to_markdown(),
        "",
        "Accuracy of every candidate:",
        "",
        method_table(results, "accuracy").round(3).to_markdown(),
        "",
        f"Shift alarm (α = {results['alarm'].get('alpha')}): share of queries on which the MMD "
        "test (query vs reference) and the alarm (beyond a class-mix difference, or OOD excess) "
        "fire. In-distribution rows are held-out reference cells with no shift (false alarms); "
        "the held-out mouse subclasses Sncg and Sst Chodl stand in for cells of no reference "
        "class (there are no pyramidal cells in the shared data).",
        "",
        alarm_table(results).round(3).to_markdown(index=False),
    ]
    if results.get("rig_check"):
        lines += ["", "Real rigs and operators (bridge Lamp5 cells of one rig or operator against the "
                  "other rigs' Lamp5 cells, MMD permutation test; accuracy of today's default):", "",
                  pd.DataFrame(results["rig_check"]).round(3).to_markdown(index=False)]
    lsel = results.get("layer_selection")
    if lsel:
        lines += ["", f"How `--layer` enters (leave-one-scenario-out over the scenarios with layers, "
                  f"accuracy): **{lsel['overall']['choice']}** (mean gain over the forest with the "
                  f"layer prior {lsel['overall']['gain']:+.3f}); per scenario: "
                  + ", ".join(f"{k}: {v['choice']}" for k, v in lsel["per_scenario"].items()) + "."]
    l1 = layer1_table(results)
    if not l1.empty:
        lines += ["", "Layer-1 cells of the queries (the `--layer L1` use case): accuracy of today's "
                  "default, the chosen default, and both with the layer prior:", "",
                  l1.to_markdown(index=False)]
    notes = [f"- {s['name']}: " + "; ".join(s["layer_notes"]) for s in results["scenarios"] if s["layer_notes"]]
    if notes:
        lines += ["", "Layer priors used:", "", *notes]
    tv = results.get("training_variance")
    lines += ["", f"Benchmark run time: {results['seconds']:.0f} s"
              + (f" (and {tv['seconds']:.0f} s for the training-variance refits)." if tv else ".")]
    return "\n".join(lines) + "\n"


def terminal_lines(outcome) -> list[tuple[str, bool]]:
    """Lines for the terminal after ``map``: (text, loud). The alarm is one loud line."""
    if outcome is None:
        return []
    lines = []
    alarm = outcome.alarm
    if alarm is not None:
        lines.append((alarm.message if alarm.fired else f"shift check: {alarm.message}", alarm.fired))
    lines += [(note, False) for note in outcome.notes]
    return lines
