"""The whole study: every species x model x split scheme on the same folds.

:func:`run_study` computes and returns results; it writes nothing. The report
layer (:mod:`ephys2tx.report`) turns a :class:`StudyResult` into files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from ephys2tx import CLASSES, __version__
from ephys2tx.data.datasets import (
    DEFAULT_MAX_MISSING,
    PatchSeqDataset,
    load_dataset,
    with_held_out_class,
)
from ephys2tx.evaluation.cv import (CVResult, CVTask, cross_validate_many, library_warnings,
                                   merge_warning_counts, summarise_cv)
from ephys2tx.evaluation.selection import MOUSE_LOCKBOX_FRACTION, lockbox_mask
from ephys2tx.evaluation.splits import check_foldable, make_splits
from ephys2tx.evaluation.stats import encode, holm, paired_difference
from ephys2tx.errors import InputError
from ephys2tx.models.registry import (
    BASELINE_MODELS,
    BILSTM_MODELS,
    FIVE_CLASS_MODELS,
    QUICK_BLOCK_MODELS,
    QUICK_MODELS,
    QUICK_TRANSFER_MODELS,
    TRANSFER_MODELS,
    TRANSFER_TWINS,
    make_model,
)

#: Species keys of the study -> dataset. ``mouse_5class``: mouse VISp with Sncg as a fifth
#: subclass (the task of Gouwens 2020), scored with the models of ``FIVE_CLASS_MODELS``.
SPECIES_DATASETS = {"mouse": "mouse_visp", "human": "human", "mouse_5class": "mouse_visp_5class"}

#: Datasets whose reported scores exclude the mouse lockbox animals (the BiLSTM tuning set).
LOCKBOX_DATASETS = ("mouse_visp", "mouse_visp_5class")

#: Kind of the results folder in its ownership marker (:mod:`ephys2tx.safety`).
STUDY_OUTPUT_KIND = "study"

#: The reference every other model is paired against (Gouwens 2020 replication).
REFERENCE_MODEL = "spca_rf"


def is_neural(model_name: str) -> bool:
    """Whether a model is a torch network (fitted fold-parallel, one thread each)."""
    return model_name in BILSTM_MODELS or model_name in TRANSFER_MODELS


def default_models(quick: bool = False) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Single-species models and transfer designs run when ``--model`` is not given."""
    if quick:
        return QUICK_MODELS, QUICK_TRANSFER_MODELS
    return BASELINE_MODELS + BILSTM_MODELS, TRANSFER_MODELS


@dataclass
class StudyConfig:
    """Parameters of a study run (all recorded in the report).

    Attributes
    ----------
    data_dir : str or None
        Data directory (None: ``EPHYS2TX_DATA`` or the user cache).
    species : tuple of str
        Keys of :data:`SPECIES_DATASETS`: ``mouse``, ``human``, ``mouse_5class``.
    models : tuple of str or None
        Model names (None: :func:`default_models`, with the transfer designs
        when ``transfer`` and human cells are studied).
    n_splits, n_repeats : int
        Repeated k-fold settings.
    split_schemes : tuple of str
        ``stratified`` and/or ``donor``.
    donor_species : tuple of str or None
        Species also scored on donor-grouped folds (None: every species with
        donors, when ``donor`` is in ``split_schemes``).
    n_boot : int
        Bootstrap resamples for CIs.
    seed : int
        Seed of folds, models and bootstraps.
    quick : bool
        The main models only, smaller forests and fewer epochs (see
        :meth:`quick_config` for the folds).
    verify : bool
        Verify the data files' sha256.
    max_missing : float
        QC threshold on the fraction of missing features.
    n_permutations : int
        Permutations per family for the importance of the family models.
    n_jobs : int
        Folds fitted in parallel (worker processes; one torch thread each).
    transfer : bool
        Also run the mouse -> human transfer designs on the human cells
        (needs the mouse table; mouse cells are training data in every fold).
    mouse_lockbox : bool
        Exclude the lockbox animals (:func:`~ephys2tx.evaluation.selection.lockbox_mask`,
        on which the BiLSTM defaults were chosen) from every mouse score.
    feature_table : str or None
        A table written by ``ephys2tx extract`` to study instead of the shared
        table of the (single) species; no transfer designs then.
    label_table : str or None
        Labels of ``feature_table`` (id and subclass columns); None reads the
        column ``label_column`` of the feature table itself.
    label_column : str or None
        Name of the label column (default: detected).
    """

    data_dir: str | None = None
    species: tuple[str, ...] = ("mouse", "human", "mouse_5class")
    models: tuple[str, ...] | None = None
    n_splits: int = 5
    n_repeats: int = 3
    split_schemes: tuple[str, ...] = ("stratified", "donor")
    donor_species: tuple[str, ...] | None = None
    n_boot: int = 1000
    seed: int = 0
    quick: bool = False
    verify: bool = True
    max_missing: float = DEFAULT_MAX_MISSING
    n_permutations: int = 3
    transfer: bool = True
    mouse_lockbox: bool = True
    n_jobs: int = 2
    feature_table: str | None = None
    label_table: str | None = None
    label_column: str | None = None

    @classmethod
    def quick_config(cls, **overrides) -> StudyConfig:
        """A fast look: one repeat of 2 folds, smaller forests, fewer epochs and bootstraps.

        Each model family runs once, on one block (species and split):
        :data:`~ephys2tx.models.registry.QUICK_BLOCK_MODELS`. Donor-grouped folds
        for human cells only: with a median of 3 cells per mouse, the mouse
        donor-grouped scores of the full run match the stratified ones (README
        results), while human donors are the question.
        """
        base = dict(n_splits=2, n_repeats=1, quick=True, n_boot=300, n_permutations=1,
                    donor_species=("human",))
        base.update(overrides)
        return cls(**base)


@dataclass
class SpeciesResult:
    """Everything computed for one species."""

    dataset: PatchSeqDataset
    cv: dict[tuple[str, str], CVResult] = field(default_factory=dict)
    embedding: pd.DataFrame | None = None
    embedding_method: str = ""


#: Subclasses of the Allen taxonomies outside the four classes: their cells are held out quietly.
KNOWN_OTHER_SUBCLASSES = ("Sncg", "Sst Chodl", "Serpinf1", "Meis2", "PAX6", "Pax6")


@dataclass
class StudyResult:
    """Records for ``metrics.json`` plus what the figures need."""

    config: StudyConfig
    records: list[dict]
    species: dict[str, SpeciesResult]
    seconds: float
    shared_embedding: pd.DataFrame | None = None
    version: str = __version__
    #: The shift benchmark (:mod:`ephys2tx.experiments.shift_benchmark`), when it ran.
    shift: dict | None = None
    #: Warnings the libraries issued outside the fold fits (loading, embeddings, benchmark):
    #: category -> count and first message (:func:`~ephys2tx.evaluation.cv.library_warnings`).
    #: Those of the fold fits are in each record's ``library_warnings``.
    library_warnings: dict = field(default_factory=dict)

    def warning_totals(self) -> dict:
        """Library warnings of the whole study by category: ``{category: count}``."""
        merged = merge_warning_counts([*(r.get("library_warnings") for r in self.records),
                                       self.library_warnings])
        return {category: e["count"] for category, e in merged.items()}

    def warning_lines(self) -> list[str]:
        """One line per model (and one for the rest of the study) with library warnings, or none."""
        lines = []
        for r in self.records:
            if r.get("library_warnings"):
                lines.append(f"{r['species']} · {r['split']} · {r['model']}: "
                             f"{_counted(r['library_warnings'])}")
        if self.library_warnings:
            lines.append(f"outside the fold fits: {_counted(self.library_warnings)}")
        return lines

    def unknown_label_notes(self) -> list[str]:
        """One line per species whose cells were left out for a label that is no subclass known to
        ephys2tx (a typo such as ``Lamp5/Pax6`` silently shrinks the study otherwise); the other
        subclasses of the Allen taxonomy (Sncg, Sst Chodl, ...) are held out as documented."""
        lines = []
        for sp, res in self.species.items():
            held = res.dataset.held_out
            if held is None:
                continue
            counts = held.labels.dropna().astype(str)
            counts = counts[~counts.isin(KNOWN_OTHER_SUBCLASSES)].value_counts()
            if len(counts):
                shown = ", ".join(f"{k!r}: {v}" for k, v in counts.head(5).items())
                lines.append(f"note: {int(counts.sum())} {sp} cell(s) were left out for a label that "
                             f"is not a subclass ephys2tx knows ({shown}{', ...' if len(counts) > 5 else ''}); "
                             f"rename them to one of {', '.join(CLASSES)} to use them.")
        return lines

    def table(self) -> pd.DataFrame:
        """One row per record, as printed by ``ephys2tx run`` (see :data:`TABLE_LEGEND`)."""
        rows = []
        for r in self.records:
            f1, acc = r["macro_f1"], r["accuracy"]
            paired = r.get("paired_vs_reference")
            rows.append({
                "species": r["species"], "split": r["split"], "model": r["model"],
                "n_cells": r["n_cells"],
                "macro-F1 (fold mean ± sd)": f"{f1['mean']:.3f} ± {f1['sd']:.3f}",
                "CI95 fold mean (corr. t)": format_interval(f1["ci95_corrected_t"]),
                "macro-F1 pooled OOF [CI95 cell boot.]": (
                    f"{f1['pooled_oof']:.3f} {format_interval(f1['pooled_oof_ci95_cell_bootstrap'])}"),
                "accuracy (fold mean ± sd)": f"{acc['mean']:.3f} ± {acc['sd']:.3f}",
                f"Δ vs {REFERENCE_MODEL} fold mean [CI95 corr. t]": format_delta(paired),
                "Holm p": "—" if paired is None else f"{paired['p_holm']:.3f}",
                f"Δ vs {REFERENCE_MODEL} pooled OOF [CI95 cell boot.]": format_delta(paired, "pooled"),
            })
        return pd.DataFrame(rows)


#: What the columns of :meth:`StudyResult.table` measure (printed under it in report.md).
TABLE_LEGEND = (
    "*fold mean*: mean of the per-fold scores over all folds and repeats, with the 95% corrected "
    "resampled t interval of that mean (Nadeau & Bengio 2003: it includes training-set variance). "
    "*pooled OOF*: the score of every cell's out-of-fold prediction, averaged over repeats, with a "
    "95% bootstrap interval over cells (models held fixed). Δ: model − reference on the same "
    "folds, as fold mean [corrected t] and as pooled OOF [cell bootstrap]; *Holm p*: corrected t "
    "test of the fold-mean Δ, Holm-adjusted over all comparisons with the reference in that "
    "species and split."
)


def format_interval(ci, signed: bool = False) -> str:
    """``[lo, hi]`` with three decimals (signed for differences)."""
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"[{f.format(ci[0])}, {f.format(ci[1])}]"


def format_delta(paired: dict | None, kind: str = "fold_mean") -> str:
    """A paired difference with its CI: ``fold_mean`` (corrected t) or ``pooled`` (cell bootstrap)."""
    if not paired:
        return "—"
    if kind == "pooled":
        return (f"{paired['pooled_oof_diff']:+.3f} "
                f"{format_interval(paired['pooled_oof_diff_ci95_cell_bootstrap'], True)}")
    return f"{paired['mean_diff']:+.3f} {format_interval(paired['ci95_corrected_t'], True)}"


def ci_verdict(ci) -> str:
    """Where a CI of a difference lies relative to 0: ``above 0``, ``below 0`` or ``includes 0``."""
    lo, hi = ci
    if lo > 0:
        return "above 0"
    if hi < 0:
        return "below 0"
    return "includes 0"


def _check_config(config: StudyConfig, models: Sequence[str]) -> None:
    for sp in config.species:
        if sp not in SPECIES_DATASETS:
            raise InputError(f"unknown species {sp!r}; choose from {', '.join(SPECIES_DATASETS)}.")
    known = BASELINE_MODELS + BILSTM_MODELS + TRANSFER_MODELS
    for m in models:
        if m not in known:
            raise InputError(f"unknown model {m!r}; choose from {', '.join(known)}.")
    if config.n_splits < 2 or config.n_repeats < 1:
        raise InputError("need --n-splits >= 2 and --n-repeats >= 1.")
    if config.feature_table is None and (config.label_table or config.label_column):
        option = "--labels" if config.label_table else "--label-column"
        raise InputError(f"{option} labels the cells of --features; pass --features (a table from "
                         f"`ephys2tx extract`), or drop {option} to study the shared tables.")
    if config.feature_table is not None:
        if len(config.species) != 1 or config.species[0] not in ("mouse", "human"):
            raise InputError("--features holds cells of one species: pass exactly one --species, "
                             "mouse or human.")
        if any(m in TRANSFER_MODELS for m in models):
            raise InputError("the transfer designs read the shared tables; drop them with --features.")


def study_inputs(config: StudyConfig) -> list:
    """Files and folders a study reads (an output may not replace or sit inside them)."""
    from ephys2tx.data.paths import resolve_data_dir

    inputs = [config.feature_table, config.label_table]
    if config.feature_table is None:
        inputs.append(resolve_data_dir(config.data_dir))
    return [i for i in inputs if i is not None]


def _embedding(dataset: PatchSeqDataset, seed: int, quick: bool) -> tuple[pd.DataFrame, str]:
    """2-D view of the sPCA space of all cells (for display only, not evaluation)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    pipe = make_model("spca_rf", dataset.families, list(dataset.features.columns), random_state=seed)
    front = pipe[:-1]
    scores = front.fit_transform(dataset.features)
    if quick:
        coords, method = PCA(n_components=2, random_state=seed).fit_transform(scores), "PCA"
    else:
        perplexity = min(30.0, max(1.0, (len(scores) - 1) / 3))  # t-SNE needs perplexity < n cells
        coords = TSNE(n_components=2, init="pca", perplexity=perplexity,
                      random_state=seed).fit_transform(scores)
        method = "t-SNE"
    return (pd.DataFrame(coords, index=dataset.features.index, columns=["dim1", "dim2"])
            .assign(subclass=dataset.labels.to_numpy())), method


def _counted(counts: dict) -> str:
    """``12 ConvergenceWarning (e.g. "lbfgs failed to converge ..."), 1 RuntimeWarning``."""
    return ", ".join(f"{e['count']} {category}" + (f" (e.g. \"{e['example'][:120]}\")" if e["example"] else "")
                     for category, e in counts.items())


def run_study(config: StudyConfig, *,
              progress: Callable[[str, int, int], None] | None = None,
              datasets: dict[str, PatchSeqDataset] | None = None, cache=None) -> StudyResult:
    """Run every species x split scheme x model on shared folds.

    Warnings of the libraries (scikit-learn's ``ConvergenceWarning``, ...) are
    counted, not printed: per model in each record's ``library_warnings``, and
    for the rest of the study in :attr:`StudyResult.library_warnings`.

    Parameters
    ----------
    config : StudyConfig
    progress : callable, optional
        ``progress(description, done, total)`` after each fold.
    datasets : dict, optional
        Pre-loaded datasets by species (default: load from ``config.data_dir``).
    cache : FoldCache, optional
        Reuse the fold fits stored there (:mod:`ephys2tx.evaluation.fold_cache`,
        content-addressed: any change of data, parameter, fold or code misses).

    Returns
    -------
    StudyResult
    """
    outside: dict = {}
    with library_warnings(outside):
        result = _run_study(config, progress=progress, datasets=datasets, cache=cache)
    result.library_warnings = dict(sorted(outside.items()))
    return result


def _run_study(config: StudyConfig, *, progress, datasets, cache) -> StudyResult:
    start = time.perf_counter()
    if config.models:
        models = tuple(config.models)
        _check_config(config, models)
        transfer_models = tuple(m for m in models if m in TRANSFER_MODELS)
        single_models = tuple(m for m in models if m not in TRANSFER_MODELS)
    else:
        single_models, transfer_models = default_models(config.quick)
        _check_config(config, single_models)
        if (not config.transfer or "human" not in config.species
                or config.feature_table is not None):
            transfer_models = ()
    loaded = dict(datasets or {})
    if config.feature_table is not None and config.species[0] not in loaded:
        from ephys2tx.data.extracted import as_dataset

        custom = as_dataset(config.feature_table, config.label_table,
                            label_column=config.label_column, species=config.species[0],
                            max_missing=config.max_missing)
        if custom.labels.isna().all():
            raise InputError(f"{config.feature_table} has no labels to learn from; pass --labels "
                             "(a table of cell id and subclass) or --label-column.")
        loaded[config.species[0]] = custom
    needed = set(config.species) | ({"mouse"} if transfer_models else set())
    if "mouse_5class" in needed:
        needed.add("mouse")  # the five-class table is the mouse one with its Sncg cells added
    for sp in sorted(needed - set(loaded) - {"mouse_5class"}):
        loaded[sp] = load_dataset(SPECIES_DATASETS[sp], config.data_dir, verify=config.verify,
                                  max_missing=config.max_missing)
    if "mouse_5class" in needed and "mouse_5class" not in loaded:
        loaded["mouse_5class"] = with_held_out_class(loaded["mouse"], "Sncg", "mouse_visp_5class")

    scored, lockbox = {}, {}
    for sp in config.species:
        scored[sp], lockbox[sp] = _exclude_lockbox(loaded[sp], config)
    plan = []
    for sp in config.species:
        for scheme in config.split_schemes:
            if scheme == "donor" and (scored[sp].groups is None or (
                    config.donor_species is not None and sp not in config.donor_species)):
                continue
            sp_models = _species_models(sp, scheme, config, single_models, transfer_models)
            if sp_models:
                plan.append((sp, scheme, sp_models))
                # every split is checked before the first fit of any model
                check_foldable(scored[sp].labels.to_numpy(),
                               None if scored[sp].groups is None else scored[sp].groups.to_numpy(),
                               scheme=scheme, n_splits=config.n_splits,
                               where=f"the {sp} cells ({scored[sp].name}{_qc_drops(scored[sp])})")
    total = sum(config.n_splits * config.n_repeats * len(m) for *_, m in plan)
    done = 0
    records: list[dict] = []
    species_results = {sp: SpeciesResult(dataset=scored[sp]) for sp in config.species}
    for sp, scheme, sp_models in plan:
        ds = scored[sp]
        y = ds.labels.to_numpy()
        folds = make_splits(y, None if ds.groups is None else ds.groups.to_numpy(), scheme=scheme,
                            n_splits=config.n_splits, n_repeats=config.n_repeats,
                            random_state=config.seed)
        columns = list(ds.features.columns)
        classes = list(ds.class_counts())  # the four subclasses, or those a user table has
        tasks = []
        for model_name in sp_models:
            estimator = make_model(model_name, ds.families, columns, random_state=config.seed,
                                   quick=config.quick, species=ds.species)

            def on_fold(fold, record, _d=f"{sp} · {scheme} · {model_name}"):
                nonlocal done
                done += 1
                if progress is not None:
                    progress(_d, done, total)

            is_family_model = model_name in BILSTM_MODELS and model_name != "mlp"
            fit_params = None
            if model_name in TRANSFER_MODELS:
                mouse = loaded["mouse"]
                fit_params = {"X_source": mouse.features, "y_source": mouse.labels.to_numpy()}
            tasks.append(CVTask(
                estimator, ds.features, y, folds, classes=classes, model_name=model_name,
                on_fold=on_fold, families=ds.families if is_family_model else None,
                n_permutations=config.n_permutations if is_family_model else 0,
                random_state=config.seed, fit_params=fit_params,
                # Small networks take one torch thread per fold. (The forests' trees gain
                # less from threads than their folds from processes: sparse PCA and short
                # fits are serial.)
                torch_threads=1 if is_neural(model_name) else None))
        # the folds of all models of this species and split share the workers
        results = cross_validate_many(tasks, n_jobs=config.n_jobs, cache=cache)
        for model_name, result in zip(sp_models, results):
            species_results[sp].cv[(scheme, model_name)] = result
            record = {
                "species": sp, "model": model_name, "split": scheme,
                "dataset": ds.name, "n_cells": ds.n_cells, "classes": classes,
                "class_counts": ds.class_counts(),
                "n_splits": config.n_splits,
            }
            if lockbox[sp] is not None:
                record["lockbox_excluded"] = lockbox[sp]
            record.update(summarise_cv(result, y, n_boot=config.n_boot, random_state=config.seed))
            if "condition" in ds.metadata.columns:
                record["by_condition"] = condition_breakdown(result, y, ds.metadata["condition"])
            records.append(record)
        _add_paired_comparisons(records, species_results[sp], sp, scheme, y, config)
    for sp, res in species_results.items():
        if sp != "mouse_5class":  # the same cells as mouse (plus Sncg): one view is enough
            res.embedding, res.embedding_method = _embedding(res.dataset, config.seed, config.quick)
    shared = None
    if transfer_models and "transfer_b" in transfer_models:
        if config.quick:  # one torch thread, as in the folds: 2 threads took 3-4x the CPU time
            from ephys2tx.models.threads import limit_threads

            with limit_threads(1, torch=True):
                shared = shared_embedding(loaded["mouse"], loaded["human"], config.seed, True)
        else:
            shared = shared_embedding(loaded["mouse"], loaded["human"], config.seed, config.quick)
    from ephys2tx.experiments.shift_benchmark import benchmark_for_study

    shift = benchmark_for_study(config, progress)
    return StudyResult(config=config, records=records, species=species_results,
                       seconds=time.perf_counter() - start, shared_embedding=shared, shift=shift)


def _species_models(sp: str, scheme: str, config: StudyConfig, single_models,
                    transfer_models) -> tuple[str, ...]:
    """The models scored for one species key and split scheme.

    The quick look (without ``--model``) runs the models of
    :data:`~ephys2tx.models.registry.QUICK_BLOCK_MODELS` for the block.
    """
    models = single_models + (transfer_models if sp == "human" else ())
    if config.quick and not config.models:
        allowed = QUICK_BLOCK_MODELS.get((sp, scheme), ())
        return tuple(m for m in models if m in allowed)
    if sp == "mouse_5class":
        return tuple(m for m in single_models if m in FIVE_CLASS_MODELS)
    return models


def _qc_drops(dataset) -> str:
    """``", after QC dropped 59 cell(s), 59 by 'drop exact duplicate feature rows'"`` (the step
    that dropped most), or "" if QC kept every cell."""
    steps = [s for s in dataset.qc_report if s.get("n_dropped")]
    if not steps:
        return ""
    n = sum(int(s["n_dropped"]) for s in steps)
    most = max(steps, key=lambda s: int(s["n_dropped"]))
    return f", after QC dropped {n} cell(s), {int(most['n_dropped'])} by {most['step']!r}"


def _exclude_lockbox(ds: PatchSeqDataset, config: StudyConfig) -> tuple[PatchSeqDataset, dict | None]:
    """``ds`` without the mouse lockbox animals (shared mouse tables only), and what was excluded."""
    if not config.mouse_lockbox or config.feature_table is not None or ds.name not in LOCKBOX_DATASETS:
        return ds, None
    if ds.groups is None:
        raise InputError("the mouse lockbox needs animal ids, which come from the metadata in the "
                         "ipfx package; reinstall ipfx (pip install ipfx==2.1.2).")
    boxed = lockbox_mask(ds.groups.to_numpy())
    kept = ds.subset(ds.features.index[~boxed])
    excluded = {"n_cells": int(boxed.sum()), "n_animals": int(ds.groups[boxed].nunique()),
                "fraction_of_animals": MOUSE_LOCKBOX_FRACTION}
    step = {"step": "exclude the lockbox animals (BiLSTM tuning set)", "n_before": ds.n_cells,
            "n_after": kept.n_cells, "n_dropped": int(boxed.sum()),
            "detail": f"{excluded['n_animals']} animals drawn by hash of the animal id "
                      f"({MOUSE_LOCKBOX_FRACTION:.0%} of animals); "
                      + ", ".join(f"{k} {v}" for k, v in ds.subset(ds.features.index[boxed])
                                  .class_counts().items())}
    return replace(kept, qc_report=[*ds.qc_report, step]), excluded


def _pair(a: CVResult, b: CVResult, y, config: StudyConfig) -> dict:
    classes = a.classes
    true_codes = encode(y, classes)
    n_train, n_test = a.fold_sizes
    return paired_difference(
        true_codes, np.stack([encode(r, classes) for r in a.oof]),
        np.stack([encode(r, classes) for r in b.oof]), len(classes),
        a.macro_f1_per_fold, b.macro_f1_per_fold, n_train, n_test, n_boot=config.n_boot,
        random_state=config.seed)


def _holm_adjust(pairs: list[dict]) -> None:
    """Add ``p_holm`` (Holm over this family of comparisons) to each paired record."""
    for pair, adjusted in zip(pairs, holm([p["p_corrected_t"] for p in pairs])):
        pair["p_holm"] = adjusted
        pair["holm_family_size"] = len(pairs)


def _add_paired_comparisons(records, res: SpeciesResult, sp: str, scheme: str, y,
                            config: StudyConfig) -> None:
    """Pair every model with the reference; transfer models also with their baselines.

    Each kind of comparison is one Holm family per species and split: all
    models against the reference; the transfer designs against their
    same-architecture twins; the transfer designs against the best
    human-only model.
    """
    mine = [r for r in records if (r["species"], r["split"]) == (sp, scheme)]
    ref = res.cv.get((scheme, REFERENCE_MODEL))
    single = [r for r in mine if r["model"] not in TRANSFER_MODELS]
    best_single = max(single, key=lambda r: r["macro_f1"]["mean"])["model"] if single else None
    for record in mine:
        cv = res.cv[(scheme, record["model"])]
        if ref is not None and record["model"] != REFERENCE_MODEL:
            record["paired_vs_reference"] = {"reference": REFERENCE_MODEL, **_pair(cv, ref, y, config)}
        if record["model"] in TRANSFER_TWINS:
            twin = TRANSFER_TWINS[record["model"]]
            if (scheme, twin) in res.cv:
                record["paired_vs_same_architecture"] = {
                    "reference": twin, **_pair(cv, res.cv[(scheme, twin)], y, config)}
            if best_single is not None:
                record["paired_vs_best_human_only"] = {
                    "reference": best_single,
                    **_pair(cv, res.cv[(scheme, best_single)], y, config)}
    for key in ("paired_vs_reference", "paired_vs_same_architecture", "paired_vs_best_human_only"):
        family = [r[key] for r in mine if key in r]
        if family:
            _holm_adjust(family)


def condition_breakdown(result: CVResult, y, condition: pd.Series) -> dict:
    """Macro-F1 (mean over repeats) of the out-of-fold predictions per recording condition."""
    from ephys2tx.evaluation.metrics import macro_f1

    cond = condition.to_numpy()
    out = {}
    for value in pd.unique(cond):
        mask = cond == value
        scores = [macro_f1(np.asarray(y)[mask], row[mask], result.classes) for row in result.oof]
        out[str(value)] = {"n_cells": int(mask.sum()), "macro_f1": float(np.mean(scores))}
    return out


def shared_embedding(mouse: PatchSeqDataset, human: PatchSeqDataset, seed: int,
                     quick: bool) -> pd.DataFrame:
    """2-D view of the shared space of transfer design (b), fitted on all cells (display only)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    model = make_model("transfer_b", human.families, list(human.features.columns), random_state=seed,
                       quick=quick)
    model.fit(human.features, human.labels.to_numpy(), X_source=mouse.features,
              y_source=mouse.labels.to_numpy())
    emb = np.vstack([model.embed(mouse.features, species="mouse"), model.embed(human.features)])
    if quick:
        coords = PCA(n_components=2, random_state=seed).fit_transform(emb)
    else:
        coords = TSNE(n_components=2, init="pca", random_state=seed).fit_transform(emb)
    return pd.DataFrame({
        "dim1": coords[:, 0], "dim2": coords[:, 1],
        "subclass": np.concatenate([mouse.labels.to_numpy(), human.labels.to_numpy()]),
        "species": ["mouse"] * mouse.n_cells + ["human"] * human.n_cells,
    })


def config_dict(config: StudyConfig) -> dict:
    """The config as plain JSON-able data."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
