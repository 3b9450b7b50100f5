"""Shift benchmark: how much does a query unlike the training cells cost, and what wins it back?

Every scenario is made from the shared data only. A scenario has one or more
*tasks* (a training side, a query, the query's labels; several tasks when it
is repeated over seeds/folds):

* ``mouse L1`` ... ``mouse L6``: mouse VISp, leave one cortical layer out
  (metadata ``Cortical layer``; L6a + L6b = L6); a held-out layer has its own
  class mix, as a real query does;
* ``human L2``, ``human L3``, ``human L4-6``: the same on the human table
  (``Cortical_layer``; 4, 5, 5_6, 6 together);
* ``human acute->culture``, ``human culture->acute``: train on one recording
  condition, query the other;
* ``mouse->human``: the mouse reference (21 harmonised features) reading the
  human cells;
* ``bridge (IPFX pipeline)``: the mouse L1 bridge cells, in the IPFX naming and
  read through the shipped ``ipfx`` column map, against the mouse reference
  with those same cells removed from it: another feature pipeline;
* ``synthetic rig (mouse)``, ``synthetic rig (human)``: a held-out fold seen
  through a random rig (:mod:`ephys2tx.features.rig_shift`), on a random subset
  of 8-15 features, resampled to a Dirichlet class mix; one task per seed.

For each task a reference model is fitted on the training side exactly as
``ephys2tx map`` fits it (:func:`ephys2tx.mapping.fit_reference_model`:
5-fold CV, isotonic calibration, OOD threshold; random stratified folds), for
each model kind; its calibrated out-of-fold macro-F1 is the *in-distribution*
score on the same features. Each method of :mod:`ephys2tx.models.shift_adapt`
then predicts the query. Scores are macro-F1 over the classes present in the
query (and accuracy), with a bootstrap CI over cells, and over tasks as well
where a scenario has several (two-stage bootstrap).

The method ``map`` uses by default is chosen by :func:`loso_select`:
for each scenario, the candidate with the best mean gain over today's default
(``forest:none``) on the *other* scenarios; the default is the candidate
chosen on all scenarios. The layer prior (``--layer``) is reported beside,
never chosen: it needs information the query alone does not have.

The shift alarm (:mod:`ephys2tx.models.shift_alarm`) is run on every query
(power) and, for the synthetic tasks, on held-out reference cells with no
shift (false alarms), on pure rig shifts and on the held-out mouse subclasses
Sncg and Sst Chodl (stand-ins for cells of no reference class: the shared data
has no pyramidal cells). The bridge metadata's rigs give a real rig check.

:func:`run_shift_benchmark` computes and returns results and parameters; it
writes nothing (:mod:`ephys2tx.report.shift_report` renders them).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from ephys2tx import CLASSES

__all__ = ["ShiftBenchmarkConfig", "Task", "build_scenarios", "delta_training_variance", "loso_select",
           "run_shift_benchmark", "training_variance_for"]

DEFAULT_CANDIDATE = "forest:none"


@dataclass
class ShiftBenchmarkConfig:
    """Parameters of the shift benchmark (all recorded in its results).

    Attributes
    ----------
    data_dir : str or None
    scenarios : tuple of str or None
        Scenario names to run (None: all).
    models : tuple of str
        Reference model kinds (``map --model``). ``forest_aug`` (rig augmentation,
        twice the training cost) was run once and never chosen (docs/shift.md); add it
        with ``bench_shift.py --all-models``.
    methods : tuple of str
        Methods run with the forest. ``auto`` is not a candidate by default: its
        method *is* the selection's choice (:data:`ephys2tx.models.shift_adapt.AUTO_METHOD`),
        so its leave-one-scenario-out score is the LOSO column.
    model_methods : tuple of str
        Methods run with the other model kinds.
    layer_methods : tuple of str
        Methods also run with the layer prior (every model kind).
    mean_relevances : tuple of float
        Relevances of the class-mean adaptation tried by the ``ccm*`` methods (one
        candidate each, ``ccm_mix@100``); the layer-prior rows use the default
        :data:`ephys2tx.models.shift_adapt.MEAN_RELEVANCE`.
    covariances : tuple of str
        Class covariances of the joint EM tried by the ``cc*``/``ccm*`` methods (one
        candidate each: ``ccm_mix@100`` is ``auto``, ``ccm_mix@100/tied`` one shared
        covariance); the layer-prior rows use the default
        :data:`ephys2tx.models.shift_adapt.COVARIANCE`.
    rig_tasks : int
        Tasks (seeds) of each synthetic-rig scenario.
    alarm_repeats : int
        Subsamples per synthetic task for the false-alarm and power checks.
    n_boot, n_permutations : int
    n_estimators : int
        Trees of the forest (as ``map``).
    training_refits : int
        Donor/animal-resampled refits per scenario for the interval of the chosen
        default's Δ that includes training-set variance
        (:func:`delta_training_variance`; 0: none).
    seed : int
    verify : bool
    quick : bool
    """

    data_dir: str | None = None
    scenarios: tuple | None = None
    models: tuple = ("forest", "hgb", "ensemble")
    methods: tuple = ("none", "quantile", "ot", "moments", "em", "bbse", "cc", "cc_gen", "cc_mix",
                      "ccm", "ccm_gen", "ccm_mix")
    model_methods: tuple = ("none", "em", "cc", "cc_mix", "ccm_mix")
    layer_methods: tuple = ("none", "cc_mix", "ccm_mix")
    mean_relevances: tuple = (10.0, 30.0, 100.0)
    covariances: tuple = ("auto", "tied")
    rig_tasks: int = 6
    alarm_repeats: int = 3
    n_boot: int = 1000
    n_permutations: int = 200
    n_estimators: int = 100
    training_refits: int = 5
    seed: int = 0
    verify: bool = True
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides) -> ShiftBenchmarkConfig:
        """A subset: two scenarios (the mouse layer-1 shift, one synthetic human rig task), a
        forest of 50 trees, the main methods, 50 alarm permutations, 2 training-variance refits."""
        base = dict(scenarios=("mouse L1", "synthetic rig (human)"),
                    models=("forest",), methods=("none", "quantile", "em", "cc", "cc_mix", "ccm_mix"),
                    model_methods=("none", "cc"), layer_methods=("none", "ccm_mix"),
                    mean_relevances=(100.0,),
                    rig_tasks=1, alarm_repeats=1, n_boot=300, n_permutations=50, n_estimators=50,
                    training_refits=2, quick=True)
        base.update(overrides)
        return cls(**base)


@dataclass
class Task:
    """One replicate of a scenario: training side, query and its labels."""

    X_train: pd.DataFrame
    y_train: pd.Series
    X_query: pd.DataFrame
    y_query: pd.Series
    layers: pd.Series | None = None
    exclude_from_layer_tables: tuple = ()
    layer_species: str | None = None
    info: dict = field(default_factory=dict)
    #: extra alarm queries: name -> (features, in_distribution: bool)
    alarm_queries: dict = field(default_factory=dict)


@dataclass
class Scenario:
    """A named shift scenario with its tasks."""

    name: str
    family: str
    description: str
    tasks: list


# ----------------------------------------------------------------------------- scenarios


def _mouse_reference(data_dir, verify):
    from ephys2tx.data.datasets import load_dataset
    from ephys2tx.features.harmonise import HARMONISED_FEATURES, convert_mouse

    ds = load_dataset("mouse_visp", data_dir, verify=verify)
    X = convert_mouse(ds.features)[list(HARMONISED_FEATURES)]
    held = None
    if ds.held_out is not None:
        held = convert_mouse(ds.held_out.features)[list(HARMONISED_FEATURES)]
    return ds, X, held


def _held_out_task(X: pd.DataFrame, y: pd.Series, query: np.ndarray, layers: pd.Series,
                   species: str) -> Task:
    """Train on the rows outside ``query`` and query the rows in it; the query cells are left
    out of the layer tables (their layers are what the query holds)."""
    return Task(X[~query], y[~query], X[query], y[query], layers=layers[query],
                layer_species=species, exclude_from_layer_tables=tuple(X.index[query]))


def build_scenarios(config: ShiftBenchmarkConfig) -> list[Scenario]:
    """Every scenario of the benchmark (restricted to ``config.scenarios``)."""
    from sklearn.model_selection import StratifiedKFold

    from ephys2tx.data.datasets import load_bridge_features, load_dataset
    from ephys2tx.features import rig_shift
    from ephys2tx.features.column_map import apply_column_map, load_column_map

    wanted = None if config.scenarios is None else set(config.scenarios)

    def want(name):
        return wanted is None or name in wanted

    mouse, MX, m_held = _mouse_reference(config.data_dir, config.verify)
    human = load_dataset("human", config.data_dir, verify=config.verify)
    HX, HY, MY = human.features, human.labels, mouse.labels
    scenarios = []

    m_layer = mouse.metadata["Cortical layer"].astype("string").replace({"L6a": "L6", "L6b": "L6"})
    h_layer = human.metadata["Cortical_layer"].astype("string")
    cond = human.metadata["condition"].astype("string")
    # scenarios that hold the query cells out of one table: (name, kind, description, table, query)
    held_out = [
        *[(f"mouse {layer}", "mouse layer", f"mouse VISp, train on the other layers, query {layer}",
           "mouse", m_layer == layer) for layer in ("L1", "L2/3", "L4", "L5", "L6")],
        *[(name, "human layer", f"human, train on the other layers, query layer(s) {', '.join(values)}",
           "human", h_layer.isin(values))
          for name, values in (("human L2", ("2",)), ("human L3", ("3",)),
                               ("human L4-6", ("4", "5", "5_6", "6")))],
        *[(f"human {a}->{b}", "human condition", f"human, train on {a} slices, query {b}", "human",
           cond == b) for a, b in (("acute", "culture"), ("culture", "acute"))],
    ]
    tables = {"mouse": (MX, MY, m_layer), "human": (HX, HY, h_layer)}
    for name, kind, description, species, query in held_out:
        if want(name):
            X, y, layers = tables[species]
            q = query.fillna(False).to_numpy()
            scenarios.append(Scenario(name, kind, description,
                                      [_held_out_task(X, y, q, layers, species)]))

    if want("mouse->human"):
        scenarios.append(Scenario("mouse->human", "species", "mouse reference (21 harmonised features) "
                                  "reading the human cells", [
            Task(MX, MY, HX[list(MX.columns)], HY, layers=h_layer, layer_species="mouse",
                 exclude_from_layer_tables=tuple(HX.index))]))

    if want("bridge (IPFX pipeline)"):
        bridge = load_dataset("mouse_l1_bridge", config.data_dir, verify=config.verify)
        raw = load_bridge_features(config.data_dir, verify=config.verify)
        canonical, _ = apply_column_map(load_column_map("ipfx"), raw, where="the bridge table")
        labelled = bridge.labels.dropna()
        labelled = labelled[labelled.isin(CLASSES)]
        ids = canonical.index.intersection(labelled.index)
        feats = [f for f in MX.columns if f in canonical.columns and canonical[f].notna().any()]
        keep = ~MX.index.isin(canonical.index)
        scenarios.append(Scenario(
            "bridge (IPFX pipeline)", "pipeline",
            "mouse L1 bridge cells in IPFX naming (shipped `ipfx` map), against the mouse reference "
            "without them", [
                Task(MX.loc[keep, feats], MY[keep], canonical.loc[ids, feats], labelled.loc[ids],
                     layers=bridge.metadata.loc[ids, "structure"], layer_species="mouse",
                     exclude_from_layer_tables=tuple(ids),
                     info={"rig": bridge.metadata.loc[ids, "rigNumber"],
                           "operator": bridge.metadata.loc[ids, "rigOperator"]})]))

    for species, X, Y, held in (("mouse", MX, MY, m_held), ("human", HX, HY, None)):
        name = f"synthetic rig ({species})"
        if not want(name):
            continue
        tasks = []
        for t in range(int(config.rig_tasks)):
            rng = np.random.default_rng([config.seed, t, 17 if species == "mouse" else 23])
            folds = list(StratifiedKFold(5, shuffle=True, random_state=config.seed + t).split(X, Y))
            train, test = folds[t % 5]
            feats = rig_shift.sample_feature_subset(X.columns, rng)
            shift = rig_shift.sample_rig_shift(rng)
            held_y = Y.iloc[test]
            ids = rig_shift.dirichlet_label_shift(held_y, rng)
            query = rig_shift.apply_rig_shift(X.loc[ids, feats], shift)
            alarm_queries = {}
            for r in range(int(config.alarm_repeats)):
                for size in (50, 200):
                    sub = rng.choice(len(test), size=min(size, len(test)), replace=False)
                    alarm_queries[f"in-distribution n={size} #{r}"] = (X.iloc[test[sub]][feats], True)
                sub = rng.choice(len(test), size=min(100, len(test)), replace=False)
                alarm_queries[f"rig shift only n=100 #{r}"] = (
                    rig_shift.apply_rig_shift(X.iloc[test[sub]][feats], shift), False)
            alarm_queries["label shift only"] = (X.loc[ids, feats], None)
            if held is not None:
                alarm_queries["held-out subclasses (Sncg, Sst Chodl)"] = (held[feats], False)
            tasks.append(Task(X.iloc[train][feats], Y.iloc[train], query, Y.loc[ids],
                              info={"rig": shift.as_dict(), "features": feats, "n_features": len(feats)},
                              alarm_queries=alarm_queries))
        scenarios.append(Scenario(name, "synthetic rig", f"{species}: held-out fold through a random "
                                  "rig, 8-15 random features, Dirichlet class mix", tasks))
    return scenarios


# ----------------------------------------------------------------------------- scoring


def _codes(labels) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(CLASSES)}
    return np.array([lookup.get(v, -1) for v in np.asarray(labels, dtype=object)], dtype=np.int64)


def _scores(truth: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Macro-F1 over ``labels`` and accuracy for each row of (B, n) code matrices."""
    truth = np.atleast_2d(truth)
    pred = np.atleast_2d(pred)
    f1 = np.zeros(truth.shape[0])
    for c in labels:
        t, p = truth == c, pred == c
        tp = (t & p).sum(axis=1)
        denom = t.sum(axis=1) + p.sum(axis=1)
        f1 += np.divide(2 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)
    return f1 / max(len(labels), 1), (truth == pred).mean(axis=1)


def _task_bootstrap(truth: np.ndarray, preds: dict, n_boot: int, rng) -> dict:
    """Point scores and bootstrap replicate scores (the same cell resamples for every method)."""
    labels = np.unique(truth[truth >= 0])
    idx = rng.integers(0, len(truth), size=(n_boot, len(truth)))
    out = {}
    for name, pred in preds.items():
        f1, acc = _scores(truth, pred, labels)
        bf1, bacc = _scores(truth[idx], pred[idx], labels)
        out[name] = {"macro_f1": float(f1[0]), "accuracy": float(acc[0]), "boot_f1": bf1, "boot_acc": bacc}
    return out


def _combine(task_scores: list[dict], name: str, rng, n_boot: int, ref: str | None = None) -> dict:
    """Mean over tasks with a two-stage (tasks, then cells) bootstrap CI; paired Δ vs ``ref``."""
    T = len(task_scores)
    f1 = np.array([s[name]["macro_f1"] for s in task_scores])
    acc = np.array([s[name]["accuracy"] for s in task_scores])
    bf1 = np.stack([s[name]["boot_f1"] for s in task_scores])
    bacc = np.stack([s[name]["boot_acc"] for s in task_scores])
    pick = rng.integers(0, T, size=(n_boot, T)) if T > 1 else np.zeros((n_boot, 1), int)
    cols = np.arange(n_boot)[:, None]
    boot_f1 = bf1[pick, cols].mean(axis=1)
    boot_acc = bacc[pick, cols].mean(axis=1)
    out = {"macro_f1": float(f1.mean()), "macro_f1_ci95": _ci(boot_f1),
           "accuracy": float(acc.mean()), "accuracy_ci95": _ci(boot_acc),
           "per_task_macro_f1": f1.tolist(), "per_task_accuracy": acc.tolist()}
    if ref is not None and ref != name:
        rf1 = np.stack([s[ref]["boot_f1"] for s in task_scores])
        diff = (bf1 - rf1)[pick, cols].mean(axis=1)
        out["delta_vs_default"] = float(f1.mean() - np.mean([s[ref]["macro_f1"] for s in task_scores]))
        out["delta_ci95"] = _ci(diff)
    return out


def _ci(samples) -> list[float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


# ----------------------------------------------------------------------------- selection


def loso_select(scores: pd.DataFrame, *, default: str = DEFAULT_CANDIDATE) -> dict:
    """Leave-one-scenario-out choice of a method.

    Parameters
    ----------
    scores : DataFrame
        Macro-F1, one row per scenario, one column per candidate (``model:method``);
        column order breaks ties (put simpler candidates first).
    default : str
        Today's default; the criterion is the mean gain over it.

    Returns
    -------
    dict
        ``per_scenario``: scenario -> {"choice", "criterion" (mean gain of the
        choice on the other scenarios)}; ``overall``: the candidate with the
        best mean gain on all scenarios and its gain; ``gains``: mean gain of
        every candidate on all scenarios.
    """
    gains = scores.sub(scores[default], axis=0)
    per = {}
    for s in scores.index:
        others = gains.drop(index=s)
        mean = others.mean(axis=0)
        choice = mean.idxmax()  # first maximum: column order breaks ties
        per[s] = {"choice": choice, "criterion": float(mean[choice])}
    overall = gains.mean(axis=0)
    return {"per_scenario": per, "overall": {"choice": overall.idxmax(), "gain": float(overall.max())},
            "gains": {k: float(v) for k, v in overall.items()}}


# ----------------------------------------------------------------------------- running


def _fit(model_kind, X, y, config, seed):
    from ephys2tx.mapping.reference import fit_reference_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_reference_model(X, y, species="benchmark", model=model_kind, groups=None,
                                   n_estimators=config.n_estimators, random_state=seed)


def _pred_codes(classes, proba) -> np.ndarray:
    best = np.asarray(classes, dtype=object)[np.nan_to_num(proba, nan=-1).argmax(axis=1)]
    return _codes(best)


def _run_task(task: Task, config: ShiftBenchmarkConfig, seed: int, tables_cache: dict,
              say: Callable[[str], None], *, task_key=None, model_cache=None) -> dict:
    from ephys2tx.data.layers import layer_priors, layer_tables
    from ephys2tx.models.shift_adapt import adapt_predict, auto_method, fit_alignment, reference_prior
    from ephys2tx.models.shift_alarm import shift_alarm

    truth = _codes(task.y_query)
    preds: dict[str, np.ndarray] = {}
    in_dist: dict[str, dict] = {}
    fitted = {}
    kinds = [k for k in config.models if k != "ensemble"]
    if "ensemble" in config.models:
        kinds += [k for k in ("forest", "hgb") if k not in kinds]
    for kind in kinds:
        key = (task_key, kind, seed, config.n_estimators)
        if model_cache is not None and key in model_cache:
            fitted[kind] = model_cache[key]
            continue
        say(f"fit {kind}")
        fitted[kind] = _fit(kind, task.X_train, task.y_train, config, seed)
        if model_cache is not None:
            model_cache[key] = fitted[kind]
    if "ensemble" in config.models:  # = fit_reference_model(model="ensemble"), without refitting
        from ephys2tx.mapping.reference import combine_reference_models

        fitted["ensemble"] = combine_reference_models([fitted["forest"], fitted["hgb"]])
    fitted = {k: fitted[k] for k in config.models}
    for kind in config.models:
        m = fitted[kind]
        oof = m.diagnostics["oof_calibrated"]
        oof_codes = _codes(np.asarray(m.classes, dtype=object)[m.diagnostics["codes"]])
        in_dist[kind] = {"truth": oof_codes, "pred": _codes(np.asarray(m.classes, dtype=object)[oof.argmax(axis=1)])}
    forest = fitted["forest"]
    classes = list(forest.classes)
    X_ref, y_ref = task.X_train, task.y_train
    frame = forest.predict_frame(task.X_query)
    base_proba = frame[[f"prob_{c}" for c in classes]].to_numpy(float)
    alarm = shift_alarm(task.X_query, X_ref, y_ref, proba=base_proba, classes=classes,
                        reference_prior=reference_prior(forest), ood_flags=frame["ood_flag"],
                        n_permutations=config.n_permutations, random_state=seed)
    n_cells = int(task.X_query.notna().any(axis=1).sum())
    auto_resolved, _ = auto_method(n_cells, alarm)

    # one joint-EM fit per task and setting (shared by every model kind), without and with the
    # layer prior; the class-mean adaptation (ccm*) once per relevance of the grid
    from ephys2tx.models.shift_adapt import COVARIANCE, MEAN_RELEVANCE

    all_methods = (*config.methods, *config.model_methods)
    alignments = {}  # (relevance or None, covariance) -> joint-EM fit
    covariances = tuple(config.covariances)
    if "auto" in all_methods and COVARIANCE not in covariances:
        covariances += (COVARIANCE,)
    for cov in covariances:
        if any(m.startswith("cc") and not m.startswith("ccm") or m == "auto" for m in all_methods):
            say(f"joint EM ({cov} covariance)")
            alignments[None, cov] = fit_alignment(task.X_query, X_ref, y_ref, classes, covariance=cov)
        if any(m.startswith("ccm") or m == "auto" for m in all_methods):
            for tau in config.mean_relevances:
                say(f"joint EM, class means adapt ({tau:g}; {cov} covariance)")
                alignments[tau, cov] = fit_alignment(task.X_query, X_ref, y_ref, classes,
                                                     mean_relevance=tau, covariance=cov)
    layer_rows, layer_notes, layer_alignments = None, [], {}
    if task.layers is not None and config.layer_methods:
        key = (task.layer_species, task.exclude_from_layer_tables)
        if key not in tables_cache:
            tables_cache[key] = layer_tables(task.layer_species, config.data_dir, verify=config.verify,
                                             exclude=task.exclude_from_layer_tables)
        # the query's cells are left out of every table: the reference's own table is then
        # exactly its training side (e.g. without the held-out layer)
        tables = list(tables_cache[key])
        priors, layer_notes, known = layer_priors(task.layers.to_numpy(dtype=object), tables, classes,
                                                   strict=False)
        if known.any():
            pi_ref = reference_prior(forest)
            layer_rows = np.where(known[:, None], np.nan_to_num(priors), pi_ref[None, :])
            for m in config.layer_methods:
                tau = MEAN_RELEVANCE if m.startswith("ccm") else None
                if m.startswith("cc") and tau not in layer_alignments:
                    layer_alignments[tau] = fit_alignment(task.X_query, X_ref, y_ref, classes,
                                                          prior_rows=layer_rows, mean_relevance=tau,
                                                          covariance=COVARIANCE)

    def settings(method, auto=False):
        """(candidate suffix, mean relevance, covariance) of a method: one per relevance for
        ccm* and per covariance for the joint EM; ``auto`` runs the installed defaults only."""
        if not method.startswith("cc"):
            return [("", None, None)]
        taus = ((MEAN_RELEVANCE,) if auto else config.mean_relevances) if method.startswith("ccm") \
            else (None,)
        covs = (COVARIANCE,) if auto else config.covariances
        return [((f"@{tau:g}" if tau is not None else "") + candidate_covariance_suffix(cov), tau, cov)
                for tau in taus for cov in covs]

    for kind, model in fitted.items():
        methods = config.methods if kind == "forest" else config.model_methods
        done = {}
        for method in methods:
            resolved = auto_resolved if method == "auto" else method
            for suffix, tau, cov in settings(resolved, auto=method == "auto"):
                key = (resolved, tau, cov)
                if key not in done:
                    res = adapt_predict(model, task.X_query, X_ref, y_ref, resolved, alarm=alarm,
                                        random_state=seed, mean_relevance=tau, covariance=cov,
                                        alignment=alignments.get((tau, cov)))
                    done[key] = res.proba
                    for k, v in res.variants.items():
                        done.setdefault((k, tau, cov), v)
                preds[f"{kind}:{method}{'' if method == 'auto' else suffix}"] = _pred_codes(classes, done[key])
        if layer_rows is not None:
            for method in config.layer_methods:
                tau = MEAN_RELEVANCE if method.startswith("ccm") else None
                joint = method.startswith("cc")
                for mode in (("em", "post") if joint else ("post",)):
                    res = adapt_predict(model, task.X_query, X_ref, y_ref, method, user_prior=layer_rows,
                                        random_state=seed, mean_relevance=tau, prior_mode=mode,
                                        covariance=COVARIANCE,
                                        alignment=(layer_alignments.get(tau) if mode == "em"
                                                   else alignments.get((tau, COVARIANCE))))
                    suffix = "+layer_post" if joint and mode == "post" else "+layer"
                    preds[f"{kind}:{method}{suffix}"] = _pred_codes(classes, res.proba)

    extra_alarms = []
    for name, (Xq, in_distribution) in task.alarm_queries.items():
        fr = forest.predict_frame(Xq)
        rep = shift_alarm(Xq, X_ref, y_ref, proba=fr[[f"prob_{c}" for c in classes]].to_numpy(float),
                          classes=classes, reference_prior=reference_prior(forest),
                          ood_flags=fr["ood_flag"], n_permutations=config.n_permutations,
                          random_state=seed + len(extra_alarms) + 1)
        extra_alarms.append({"query": name.split(" #")[0], "in_distribution": in_distribution,
                             "n": rep.n_query, "p_marginal": rep.p_marginal,
                             "p_beyond_label_shift": rep.p_beyond_label_shift,
                             "ood_rate": rep.ood_rate, "level": rep.level})
    layer1 = None
    if task.layers is not None:
        from ephys2tx.data.layers import parse_layer

        in_l1 = np.array([parse_layer(v) == frozenset({1}) for v in task.layers.to_numpy(dtype=object)])
        if in_l1.sum() >= 20:
            layer1 = {"n": int(in_l1.sum()),
                      "accuracy": {k: float(np.mean(v[in_l1] == truth[in_l1])) for k, v in preds.items()}}
    return {"truth": truth, "preds": preds, "in_distribution": in_dist, "alarm": alarm,
            "layer1": layer1,
            "extra_alarms": extra_alarms, "layer_notes": layer_notes, "auto": auto_resolved,
            "n_query": len(truth), "n_train": len(task.y_train), "n_features": task.X_train.shape[1],
            "class_mix": task.y_query.value_counts(normalize=True).reindex(CLASSES, fill_value=0).round(3).to_dict(),
            "info": {k: v for k, v in task.info.items() if k not in ("rig_series",)},
            "task": task}


def _rig_check(task_result: dict, rng, n_permutations: int) -> list[dict]:
    """Bridge Lamp5 cells of each rig / operator against the other rigs' Lamp5 cells (MMD)."""
    from ephys2tx.models.shift_alarm import mmd_permutation_test, reference_space

    task: Task = task_result["task"]
    rows = []
    lamp5 = task.y_query == "Lamp5"
    X = task.X_query[lamp5.to_numpy()]
    for what in ("rig", "operator"):
        meta = task.info.get(what)
        if meta is None:
            continue
        meta = meta.reindex(X.index)
        for value, n in meta.value_counts().items():
            if n < 20:
                continue
            inside = (meta == value).to_numpy()
            Zq, Zr, _ = reference_space(X[inside], X[~inside])
            mmd2, p, _ = mmd_permutation_test(Zq, Zr, n_permutations=n_permutations,
                                              random_state=rng.integers(2 ** 31))
            truth = task_result["truth"][lamp5.to_numpy()][inside]
            rows.append({"by": what, "value": str(value), "n_lamp5": int(inside.sum()), "mmd2": mmd2,
                         "p_value": p,
                         "accuracy_default": float(np.mean(
                             task_result["preds"][DEFAULT_CANDIDATE][lamp5.to_numpy()][inside] == truth))})
    return rows


def run_shift_benchmark(config: ShiftBenchmarkConfig, *, progress: Callable[[str, int, int], None] | None = None,
                        model_cache: dict | None = None) -> dict:
    """Run every scenario, score every method, choose by leave-one-scenario-out, check the alarm.

    Parameters
    ----------
    config : ShiftBenchmarkConfig
    progress : callable, optional
        ``progress(description, done, total)`` after each task.
    model_cache : dict, optional
        Fitted reference models by (scenario, task, model kind, seed, trees),
        read and filled (to re-run the methods without refitting).

    Returns
    -------
    dict
        ``config``; ``scenarios`` (per scenario: tasks, in-distribution score
        per model, every method's score with CIs and Δ vs today's default, the
        layer-prior rows, alarm results, the leave-one-scenario-out choice);
        ``selection`` (:func:`loso_select` output, candidates in order);
        ``summary`` (drop, recovery, scenarios where the choice is worse than
        today's default); ``alarm`` (false-alarm rate and power tables);
        ``rig_check``; ``seconds``.
    """
    started = time.perf_counter()
    scenarios = build_scenarios(config)
    total = sum(len(s.tasks) for s in scenarios)
    done = 0
    rng = np.random.default_rng(config.seed)
    tables_cache: dict = {}
    out_scenarios = []
    alarm_rows = []
    rig_rows = []
    for scen in scenarios:
        task_results = []
        for t, task in enumerate(scen.tasks):
            desc = f"shift · {scen.name}" + (f" · task {t + 1}/{len(scen.tasks)}" if len(scen.tasks) > 1 else "")

            def say(msg, _d=desc):
                if progress is not None:
                    progress(f"{_d} · {msg}", done, total)

            res = _run_task(task, config, config.seed + t, tables_cache, say,
                            task_key=(scen.name, t, config.rig_tasks if scen.family == "synthetic rig" else 0),
                            model_cache=model_cache)
            task_results.append(res)
            done += 1
            if progress is not None:
                progress(desc, done, total)
            alarm_rows.append({"scenario": scen.name, "query": "scenario query", "in_distribution": False,
                               "n": res["alarm"].n_query, "p_marginal": res["alarm"].p_marginal,
                               "p_beyond_label_shift": res["alarm"].p_beyond_label_shift,
                               "ood_rate": res["alarm"].ood_rate, "level": res["alarm"].level})
            for row in res["extra_alarms"]:
                alarm_rows.append({"scenario": scen.name, **row})
            if scen.family == "pipeline":
                rig_rows += _rig_check(res, rng, config.n_permutations)
        out_scenarios.append(_summarise_scenario(scen, task_results, config, rng))
    candidates = _candidates(config)
    table = pd.DataFrame({s["name"]: {c: s["methods"][c]["macro_f1"] for c in candidates
                                      if c in s["methods"]} for s in out_scenarios}).T
    table = table[[c for c in candidates if c in table.columns]].dropna(axis=1)
    selection = loso_select(table) if len(table) > 1 else {
        "per_scenario": {s: {"choice": DEFAULT_CANDIDATE, "criterion": 0.0} for s in table.index},
        "overall": {"choice": DEFAULT_CANDIDATE, "gain": 0.0}, "gains": {}}
    for s in out_scenarios:
        choice = selection["per_scenario"][s["name"]]["choice"]
        s["loso_choice"] = choice
        s["loso"] = s["methods"][choice]
    summary = _summary(out_scenarios, selection)
    layer_selection = _layer_selection(out_scenarios)
    return {"config": asdict(config), "scenarios": out_scenarios,
            "selection": {**selection, "candidates": list(table.columns), "default_today": DEFAULT_CANDIDATE},
            "layer_selection": layer_selection,
            "summary": summary, "alarm": _alarm_summary(pd.DataFrame(alarm_rows)),
            "rig_check": rig_rows, "seconds": round(time.perf_counter() - started, 1)}


def _layer_selection(scenarios: list[dict]) -> dict | None:
    """Leave-one-scenario-out choice among the layer-prior rows (how ``--layer`` is applied).

    Over the scenarios whose queries have layers; the criterion is the mean gain
    of accuracy over today's default with the layer prior (``forest:none+layer``).
    """
    names = sorted({n for s in scenarios for n in s["methods"] if "+layer" in n})
    rows = {s["name"]: {n: s["methods"][n]["accuracy"] for n in names if n in s["methods"]}
            for s in scenarios if any("+layer" in n for n in s["methods"])}
    if len(rows) < 2:
        return None
    table = pd.DataFrame(rows).T.dropna(axis=1)
    base = "forest:none+layer"
    if base not in table.columns:
        return None
    order = [base] + [c for c in table.columns if c != base]
    sel = loso_select(table[order], default=base)
    return {**sel, "metric": "accuracy", "candidates": order}


def _candidates(config: ShiftBenchmarkConfig) -> list[str]:
    def names(kind, methods):
        for m in methods:
            covs = [candidate_covariance_suffix(c) for c in config.covariances] if m.startswith("cc") else [""]
            if m.startswith("ccm"):
                yield from (f"{kind}:{m}@{tau:g}{c}" for tau in config.mean_relevances for c in covs)
            else:
                yield from (f"{kind}:{m}{c}" for c in covs)

    out = list(names("forest", config.methods))
    for kind in config.models:
        if kind != "forest":
            out += list(names(kind, config.model_methods))
    return out


def _summarise_scenario(scen: Scenario, results: list[dict], config, rng) -> dict:
    names = list(results[0]["preds"])
    per_task = []
    for r in results:
        per_task.append(_task_bootstrap(r["truth"], r["preds"], config.n_boot, rng))
    methods = {n: _combine(per_task, n, rng, config.n_boot, ref=DEFAULT_CANDIDATE) for n in names
               if all(n in r["preds"] for r in results)}
    in_dist = {}
    for kind in config.models:
        scores = [_task_bootstrap(r["in_distribution"][kind]["truth"],
                                  {"oof": r["in_distribution"][kind]["pred"]}, config.n_boot, rng)
                  for r in results]
        in_dist[kind] = _combine(scores, "oof", rng, config.n_boot)
    alarms = [r["alarm"] for r in results]
    return {
        "name": scen.name, "family": scen.family, "description": scen.description,
        "n_tasks": len(results), "n_query": [r["n_query"] for r in results],
        "n_train": [r["n_train"] for r in results], "n_features": [r["n_features"] for r in results],
        "class_mix": [r["class_mix"] for r in results],
        "in_distribution": in_dist, "methods": methods,
        "auto_resolved": [r["auto"] for r in results],
        # accuracy on the query's layer-1 cells (the `--layer L1` use case), where there are >= 20
        "layer1": results[0].get("layer1") if len(results) == 1 else None,
        "layer_notes": results[0]["layer_notes"],
        "alarm": {"level": [a.level for a in alarms], "p_marginal": [a.p_marginal for a in alarms],
                  "p_beyond_label_shift": [a.p_beyond_label_shift for a in alarms],
                  "ood_rate": [a.ood_rate for a in alarms],
                  "top_features": [list(a.per_feature.index[:3]) for a in alarms],
                  "estimated_mix": [a.class_mix for a in alarms]},
        "task_info": [_jsonable_info(r["info"]) for r in results],
    }


def _jsonable_info(info: dict) -> dict:
    out = {}
    for k, v in info.items():
        if isinstance(v, pd.Series):
            continue
        out[k] = v
    return out


def _summary(scenarios: list[dict], selection: dict) -> dict:
    rows = []
    for s in scenarios:
        ident = s["in_distribution"]["forest"]["macro_f1"]
        today = s["methods"][DEFAULT_CANDIDATE]["macro_f1"]
        chosen = s["loso"]["macro_f1"]
        rows.append({"scenario": s["name"], "in_distribution": ident, "today": today,
                     "loso": chosen, "choice": s["loso_choice"], "drop": ident - today,
                     "recovered": chosen - today})
    t = pd.DataFrame(rows)
    drop = float(t["drop"].mean())
    recovered = float(t["recovered"].mean())
    default = selection["overall"]["choice"]
    return {"mean_in_distribution": float(t["in_distribution"].mean()), "mean_today": float(t["today"].mean()),
            "mean_loso": float(t["loso"].mean()), "mean_drop": drop, "mean_recovered": recovered,
            "recovery": recovered / drop if drop > 0 else float("nan"),
            "worse_than_today": t.loc[t["recovered"] < 0, "scenario"].tolist(),
            "default": default,
            "default_scores": {s["name"]: s["methods"][default]["macro_f1"] for s in scenarios}}


def _alarm_summary(rows: pd.DataFrame) -> dict:
    """False-alarm rate (no shift) and power (shifted queries), per query kind."""
    if rows.empty:
        return {"rows": [], "table": []}
    from ephys2tx.models.shift_alarm import ALPHA

    rows = rows.copy()
    rows["marginal_fires"] = rows["p_marginal"] < ALPHA
    rows["alarm_fires"] = rows["level"] == "alarm"
    kind = rows["query"].where(rows["query"] != "scenario query", rows["scenario"])
    rows["kind"] = kind
    table = rows.groupby("kind", sort=False).agg(
        n_tests=("level", "size"), in_distribution=("in_distribution", "first"),
        median_cells=("n", "median"), marginal_rate=("marginal_fires", "mean"),
        alarm_rate=("alarm_fires", "mean"), mean_ood_rate=("ood_rate", "mean")).reset_index()
    return {"alpha": ALPHA, "table": table.to_dict(orient="records"),
            "rows": rows.drop(columns=["kind"]).to_dict(orient="records")}


def benchmark_for_study(study_config, progress=None) -> dict | None:
    """The shift benchmark as a section of ``ephys2tx run`` (None when it does not apply).

    It runs with the study's default models (no ``--model``) on the shared
    tables (no ``--features``): the quick configuration with ``--quick``, the
    full one otherwise, with the study's data directory, seed and checksum
    setting.
    """
    if getattr(study_config, "models", None) or getattr(study_config, "feature_table", None):
        return None
    common = dict(data_dir=study_config.data_dir, seed=study_config.seed, verify=study_config.verify)
    config = (ShiftBenchmarkConfig.quick_config(**common) if study_config.quick
              else ShiftBenchmarkConfig(**common))
    results = run_shift_benchmark(config, progress=progress)
    results["training_variance"] = training_variance_for(
        results, config, n_jobs=getattr(study_config, "n_jobs", 1), progress=progress)
    return results


def training_variance_for(results: dict, config: ShiftBenchmarkConfig, *, n_jobs: int = 1,
                          progress: Callable[[str, int, int], None] | None = None) -> dict | None:
    """The chosen default's Δ over the former default, with training-set variance.

    :func:`delta_training_variance` for the benchmark's overall choice against
    :data:`DEFAULT_CANDIDATE`, with ``config.training_refits`` refits. None when
    there is nothing to compare (no refits asked, the choice is the former
    default, or no scenario with a real training side).
    """
    choice = results["selection"]["overall"]["choice"]
    real = [s["name"] for s in results["scenarios"] if s["family"] != "synthetic rig"]
    if config.training_refits < 2 or choice == DEFAULT_CANDIDATE or not real:
        return None
    return delta_training_variance(replace(config, scenarios=tuple(real)), candidate=choice,
                                   n_refits=config.training_refits, n_jobs=n_jobs, progress=progress)


def shift_defaults(results: dict) -> dict:
    """``map``'s defaults as the benchmark's selection decided them (for ``shift_defaults.json``).

    ``model`` and ``auto_method`` (with ``mean_relevance`` for the class-mean
    adaptation) come from the overall choice of :func:`loso_select` over every
    candidate; ``user_prior_mode`` from the layer-prior selection (a ``+layer_post``
    choice means the prior is applied after the joint EM).
    """
    choice = results["selection"]["overall"]["choice"]
    kind, method, tau, covariance = parse_candidate(choice)
    layer = (results.get("layer_selection") or {}).get("overall", {}).get("choice", "")
    return {"model": kind, "auto_method": method,
            "mean_relevance": tau, "covariance": covariance,
            "user_prior_mode": "post" if layer.endswith("+layer_post") or not layer else "em",
            "selected_from": {"candidate": choice, "mean_gain": results["selection"]["overall"]["gain"],
                              "layer_candidate": layer or None,
                              "scenarios": [s["name"] for s in results["scenarios"]],
                              "config": {k: results["config"][k] for k in ("models", "seed", "n_boot")}}}


# ----------------------------------------------------------------------------- training variance


def _training_groups(config: ShiftBenchmarkConfig) -> pd.Series:
    """Donor (human) or animal (mouse) of every reference cell, by cell id (``unknown:<id>`` if none)."""
    from ephys2tx.data.datasets import load_dataset

    parts = []
    for name in ("mouse_visp", "human"):
        ds = load_dataset(name, config.data_dir, verify=config.verify)
        if ds.groups is not None:
            parts.append(ds.groups.astype("string"))
    groups = pd.concat(parts)
    return groups[~groups.index.duplicated()]


def candidate_covariance_suffix(covariance: str) -> str:
    """A candidate's covariance suffix: none for ``auto``, ``/tied`` for ``tied``."""
    return "" if covariance in (None, "auto") else f"/{covariance}"


def parse_candidate(name: str) -> tuple[str, str, float | None, str]:
    """``model:method[@relevance][/covariance]`` → (model kind, method, relevance or None, covariance).

    The covariance is ``auto`` when the name has none (the joint EM's own rule).
    """
    kind, method = name.split(":")
    method, _, covariance = method.partition("/")
    method, _, tau = method.partition("@")
    return kind, method, (float(tau) if tau else None), (covariance or "auto")


def _replicate_delta(task: Task, keep: np.ndarray, cells: np.ndarray, candidate: str, baseline: str,
                     config: ShiftBenchmarkConfig, seed: int) -> float:
    """Δ macro-F1 (candidate − baseline) of one training-side replicate, scored on ``cells``."""
    from ephys2tx.models.shift_adapt import adapt_predict

    truth = _codes(task.y_query)
    labels = np.unique(truth[truth >= 0])
    X_ref, y_ref = task.X_train[keep], task.y_train[keep]
    kinds = sorted({parse_candidate(candidate)[0], parse_candidate(baseline)[0]})
    fitted = {k: _fit(k, X_ref, y_ref, config, seed) for k in kinds}
    scores = []
    for which in (candidate, baseline):
        kind, method, tau, covariance = parse_candidate(which)
        res = adapt_predict(fitted[kind], task.X_query, X_ref, y_ref, method,
                            random_state=config.seed, mean_relevance=tau, covariance=covariance)
        pred = _pred_codes(fitted[kind].classes, res.proba)
        scores.append(_scores(truth[cells], pred[cells], labels)[0][0])
    return float(scores[0] - scores[1])


def delta_training_variance(config: ShiftBenchmarkConfig, *, candidate: str,
                            baseline: str = DEFAULT_CANDIDATE, n_refits: int = 5, n_jobs: int = 1,
                            progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Δ macro-F1 of ``candidate`` over ``baseline`` per scenario, with training-set variance.

    The main benchmark's Δ intervals bootstrap the query cells of one fixed
    training side, so they treat the fitted models as fixed. Here each of
    ``n_refits`` replicates draws the training side's donors (human) or animals
    (mouse) with replacement and keeps each drawn donor once (about 63% of them:
    a smaller training side, hence a conservative, wider interval), refits both
    reference models on it exactly as ``map`` does, predicts the query with
    both, and scores both on one bootstrap resample of the query cells (the same
    for both). The spread of the replicate Δs then holds training and query
    sampling together; the interval is the point Δ (full training side) ± t
    replicate SDs (Student t with ``n_refits - 1`` degrees of freedom: few
    refits give a wide interval, not a falsely narrow one). Synthetic-rig
    scenarios are skipped: their tasks already redraw the training fold.

    Parameters
    ----------
    config : ShiftBenchmarkConfig
        Scenarios, trees, seed and data (``models``/``methods`` are not used).
    candidate, baseline : str
        ``model:method[@relevance][/covariance]`` as in the benchmark's candidates,
        e.g. ``hgb:ccm_mix@100/tied`` and ``forest:none``.
    n_refits : int
    n_jobs : int
        Replicates fitted in parallel (worker processes). Every donor and cell
        draw is made before any fit, in one order, so the result does not
        depend on ``n_jobs``.
    progress : callable, optional

    Returns
    -------
    dict
        ``config``, ``candidate``, ``baseline``, ``n_refits`` and ``rows`` (per
        scenario: point Δ, replicate Δs, their SD and the interval), ``mean``
        (mean point Δ over scenarios, with the interval of the mean of the
        replicate Δs), ``seconds``.
    """
    started = time.perf_counter()
    if n_refits < 2:
        raise ValueError(f"n_refits must be at least 2, got {n_refits}.")
    for which in (candidate, baseline):
        if parse_candidate(which)[1] == "auto":
            raise ValueError("give the method auto resolves to (e.g. ccm_mix@100), not auto.")
    scenarios = [s for s in build_scenarios(config) if s.family != "synthetic rig"]
    groups = _training_groups(config)
    rng = np.random.default_rng([config.seed, 4242])

    from scipy.stats import t as student_t

    t_crit = float(student_t.ppf(0.975, n_refits - 1))
    jobs, meta = [], []  # every draw first (one rng order), then the fits
    for scen in scenarios:
        task = scen.tasks[0]
        n_query = len(task.y_query)
        train_groups = groups.reindex(task.X_train.index)
        train_groups = train_groups.fillna(pd.Series("unknown:" + task.X_train.index.astype(str),
                                                     index=task.X_train.index)).to_numpy(dtype=object)
        unique = np.unique(train_groups)
        meta.append((scen.name, len(unique)))
        for r in range(n_refits + 1):
            if r == 0:
                keep, cells = np.ones(len(train_groups), dtype=bool), np.arange(n_query)
            else:
                drawn = np.unique(rng.choice(unique, size=len(unique), replace=True))
                keep = np.isin(train_groups, drawn)
                cells = rng.integers(0, n_query, size=n_query)
            label = f"training variance · {scen.name} · {'full' if r == 0 else f'refit {r}/{n_refits}'}"
            jobs.append((label, (task, keep, cells, candidate, baseline, config, config.seed + r)))
    total = len(jobs)
    if progress is not None and jobs:
        progress(jobs[0][0], 0, total)
    if n_jobs > 1 and len(jobs) > 1:
        from joblib import Parallel, delayed

        outputs = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_replicate_delta)(*args) for _, args in jobs)
    else:
        outputs = (_replicate_delta(*args) for _, args in jobs)
    deltas_all = []
    for done, delta in enumerate(outputs, start=1):
        deltas_all.append(delta)
        if progress is not None:
            progress(jobs[done - 1][0], done, total)
    rows = []
    per = n_refits + 1
    for i, (name, n_groups) in enumerate(meta):
        point, deltas = deltas_all[i * per], deltas_all[i * per + 1:(i + 1) * per]
        sd = float(np.std(deltas, ddof=1))
        rows.append({"scenario": name, "delta": point, "refit_deltas": deltas, "sd": sd,
                     "ci95": [point - t_crit * sd, point + t_crit * sd],
                     "n_train_groups": int(n_groups)})
    points = np.array([r["delta"] for r in rows])
    reps = np.array([r["refit_deltas"] for r in rows])  # scenarios × refits
    mean_sd = float(np.std(reps.mean(axis=0), ddof=1))
    return {"config": asdict(config), "candidate": candidate, "baseline": baseline,
            "n_refits": int(n_refits), "t_quantile": t_crit, "rows": rows,
            "mean": {"delta": float(points.mean()),
                     "ci95": [float(points.mean() - t_crit * mean_sd), float(points.mean() + t_crit * mean_sd)],
                     "scenarios_better": int((points > 0).sum()), "n_scenarios": int(len(points))},
            "seconds": round(time.perf_counter() - started, 1)}
