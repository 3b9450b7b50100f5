"""Cross-validation on fixed folds, with every preprocessing step fitted in-fold.

Models are scikit-learn estimators or Pipelines whose preprocessing (imputer,
scaler, sparse PCA, SMOTE) lives inside the estimator, so cloning and fitting
on the training rows of each fold is all it takes to keep test rows unseen.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone

from ephys2tx.evaluation.metrics import fold_metrics, macro_f1, summarise
from ephys2tx.evaluation.splits import Fold
from ephys2tx.models.selection import selection_of
from ephys2tx.evaluation.stats import (
    bootstrap_scores,
    corrected_resampled_t,
    encode,
    percentile_ci,
    repeat_scores,
)


_PACKAGE = Path(__file__).resolve().parents[1]


def _own(filename: str) -> bool:
    """Whether a warning was issued by ephys2tx's own code (shown to the user as it is)."""
    try:
        return Path(filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):
        return False


@contextmanager
def library_warnings(counts: dict) -> Iterator[dict]:
    """Count the warnings libraries issue in the block instead of printing them.

    scikit-learn's ``ConvergenceWarning`` and the like would otherwise fill the
    terminal of ``ephys2tx run`` (from every fold); they are counted in
    ``counts`` (category name -> ``{"count": n, "example": first message}``),
    which the study writes into ``metrics.json`` and ``report.md``. Every
    occurrence is counted (the ``always`` filter). Warnings of ephys2tx itself
    (e.g. an unreadable fold cache entry) are issued again after the block, as
    they would have been.

    Yields
    ------
    dict
        ``counts``.
    """
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield counts
    finally:
        own = [w for w in caught if _own(w.filename)]
        for w in caught:
            if not _own(w.filename):
                entry = counts.setdefault(w.category.__name__, {
                    "count": 0, "example": " ".join(str(w.message).split())[:200]})
                entry["count"] += 1
        for w in own:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def merge_warning_counts(parts) -> dict:
    """The sum of several :func:`library_warnings` counts (the first example of each category)."""
    total: dict = {}
    for part in parts:
        for category, entry in sorted((part or {}).items()):
            merged = total.setdefault(category, {"count": 0, "example": entry["example"]})
            merged["count"] += int(entry["count"])
    return dict(sorted(total.items()))


@dataclass
class CVResult:
    """Out-of-fold predictions and per-fold scores of one model on one split scheme.

    Attributes
    ----------
    model : str
        Short model name.
    classes : list of str
        Class order.
    folds : list of Fold
        The folds used (shared across the models compared).
    fold_scores : list of dict
        Per fold: repeat, fold, n_train, n_test, accuracy, macro_f1, per_class_f1,
        fit_seconds, and for a selector (:class:`~ephys2tx.models.selection.InnerCVSelector`)
        ``selection``: the candidate it picked on that fold's training rows and the inner scores.
    oof : ndarray of shape (n_repeats, n_cells), dtype object
        Out-of-fold predicted class of each cell in each repeat.
    oof_proba : ndarray of shape (n_repeats, n_cells, n_classes) or None
    params : dict
        Estimator parameters.
    oof_attention : DataFrame or None
        First repeat: per-cell attention over families from the model that
        did not see the cell (models with ``explain``).
    family_importance : DataFrame or None
        First repeat: per fold and family, the drop in macro-F1 when the
        family's features are permuted together in the test rows.
    """

    model: str
    classes: list[str]
    folds: list[Fold]
    fold_scores: list[dict]
    oof: np.ndarray
    oof_proba: np.ndarray | None
    params: dict = field(default_factory=dict)
    oof_attention: pd.DataFrame | None = None
    family_importance: pd.DataFrame | None = None

    @property
    def macro_f1_per_fold(self) -> list[float]:
        """Macro-F1 of each fold, in fold order."""
        return [s["macro_f1"] for s in self.fold_scores]

    @property
    def fold_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Training and test sizes of the folds, in fold order."""
        return (np.array([len(f.train) for f in self.folds]),
                np.array([len(f.test) for f in self.folds]))


def _run_fold(estimator, X: pd.DataFrame, y: np.ndarray, fold: Fold, classes: list[str],
              fit_params: dict | None, families: dict | None, n_permutations: int,
              seed: int, torch_threads: int | None, openmp_threads: int | None = None) -> dict:
    """:func:`_fold` with at most ``openmp_threads`` OpenMP threads (None: no limit).

    Parallel folds take one OpenMP thread each: gradient-boosted trees spin-wait
    on their OpenMP threads, and with more threads than free cores a fit took
    13x longer (39 s instead of 3 s for one human ``hgb`` fit on a loaded machine).
    """
    from threadpoolctl import threadpool_limits

    counts: dict = {}
    with threadpool_limits(limits=openmp_threads, user_api="openmp"), library_warnings(counts):
        out = _fold(estimator, X, y, fold, classes, fit_params, families, n_permutations, seed,
                    torch_threads)
    if counts:  # the libraries' warnings of this fold (counted, not printed)
        out["record"]["warnings"] = counts
    return out


def _fold(estimator, X: pd.DataFrame, y: np.ndarray, fold: Fold, classes: list[str],
          fit_params: dict | None, families: dict | None, n_permutations: int,
          seed: int, torch_threads: int | None) -> dict:
    """Fit a clone on one fold's training rows; predict, score and explain its test rows."""
    # Load torch even for a forest: joblib reuses its worker processes across models and
    # restarts any whose memory grew by 300 MB after its first task, as a first network
    # fit (torch import included) would; a restart costs the imports again.
    import torch

    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    model = clone(estimator)
    start = time.perf_counter()
    model.fit(X.iloc[fold.train], y[fold.train], **(fit_params or {}))
    fit_seconds = time.perf_counter() - start
    X_test = X.iloc[fold.test]
    pred = np.asarray(model.predict(X_test), dtype=object)
    proba = None
    if hasattr(model, "predict_proba"):
        raw = model.predict_proba(X_test)
        model_classes = list(model.classes_)
        proba = np.column_stack([raw[:, model_classes.index(c)] if c in model_classes
                                 else np.zeros(len(fold.test)) for c in classes])
    record = {"repeat": fold.repeat, "fold": fold.fold, "n_train": int(len(fold.train)),
              "n_test": int(len(fold.test)), "fit_seconds": fit_seconds}
    record.update(fold_metrics(y[fold.test], pred, classes))
    record.pop("confusion_matrix")
    selection = selection_of(model)
    if selection is not None:
        record["selection"] = selection
    attention = None
    importance: list[dict] = []
    if fold.repeat == 0 and hasattr(model, "explain"):
        attention = pd.DataFrame(model.explain(X_test)).set_axis(X_test.index)
    if fold.repeat == 0 and families and n_permutations > 0:
        rng = np.random.default_rng([seed, fold.fold])
        base = record["macro_f1"]
        for fam, cols in families.items():
            drops = []
            for _ in range(n_permutations):
                shuffled = X_test.copy()
                order = rng.permutation(len(shuffled))
                shuffled[cols] = shuffled[cols].to_numpy()[order]
                drops.append(base - macro_f1(y[fold.test], model.predict(shuffled), classes))
            importance.append({"fold": fold.fold, "family": fam,
                               "drop_macro_f1": float(np.mean(drops))})
    return {"fold": fold, "pred": pred, "proba": proba, "record": record,
            "attention": attention, "importance": importance}


def cross_validate(estimator, X: pd.DataFrame, y, folds: Sequence[Fold], *, classes,
                   model_name: str = "model",
                   on_fold: Callable[[Fold, dict], None] | None = None,
                   families: dict[str, list[str]] | None = None, n_permutations: int = 0,
                   random_state: int = 0, fit_params: dict | None = None,
                   n_jobs: int = 1, torch_threads: int | None = None, cache=None) -> CVResult:
    """Fit a fresh clone of ``estimator`` on each fold's training rows and predict its test rows.

    Parameters
    ----------
    estimator : scikit-learn estimator
        Must hold all preprocessing itself (see module docstring).
    X : DataFrame of shape (n_cells, n_features)
    y : array-like of shape (n_cells,)
    folds : sequence of Fold
    classes : sequence of str
    model_name : str
    on_fold : callable, optional
        Called after each fold with the fold and its scores (for progress).
    families : dict, optional
        Family -> columns of ``X``; with ``n_permutations > 0`` the permutation
        importance of each family is measured on the test rows of repeat 0.
    n_permutations : int
        Permutations per family and fold (0: no importance).
    random_state : int
        Seed of the permutations.
    fit_params : dict, optional
        Extra keyword arguments of every fold's ``fit`` (e.g. the mouse cells
        of a transfer model, which are training data in every fold).
    n_jobs : int
        Folds fitted at once (joblib processes). Results do not depend on it.
    torch_threads : int, optional
        Torch intra-op threads while fitting (1 suits small networks, and
        parallel folds).
    cache : FoldCache, optional
        Folds whose inputs were fitted before are read from it
        (:mod:`ephys2tx.evaluation.fold_cache`); the others are computed and stored.
    """
    task = CVTask(estimator, X, y, folds, classes=classes, model_name=model_name, on_fold=on_fold,
                  families=families, n_permutations=n_permutations, random_state=random_state,
                  fit_params=fit_params, torch_threads=torch_threads)
    return cross_validate_many([task], n_jobs=n_jobs, cache=cache)[0]


@dataclass
class CVTask:
    """One model to cross-validate (the arguments of :func:`cross_validate`)."""

    estimator: object
    X: pd.DataFrame
    y: object
    folds: Sequence[Fold]
    classes: Sequence[str]
    model_name: str = "model"
    on_fold: Callable[[Fold, dict], None] | None = None
    families: dict[str, list[str]] | None = None
    n_permutations: int = 0
    random_state: int = 0
    fit_params: dict | None = None
    torch_threads: int | None = None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def cross_validate_many(tasks: Sequence[CVTask], *, n_jobs: int = 1, cache=None) -> list[CVResult]:
    """:func:`cross_validate` of several models, their folds sharing one pool of workers.

    With the folds of one model at a time, a worker waits at the end of each
    model for the slowest fold (with 3 folds on 2 workers, a quarter of the
    time); here every fold of every task is queued at once. Each fold's result
    depends only on its own inputs, so the results are those of one
    :func:`cross_validate` per task; each task's ``on_fold`` is called as its
    folds finish. The pool has ``n_jobs`` workers at most, and no more than
    the folds to fit and the usable CPU cores.
    """
    prepared = []
    for task in tasks:
        y = np.asarray(task.y, dtype=object)
        classes = list(task.classes)
        # Folds in parallel processes: one OpenMP thread each (the folds fill the cores).
        args = (classes, task.fit_params, task.families, task.n_permutations, task.random_state,
                task.torch_threads, None if n_jobs == 1 else 1)
        keys, cached = _cached_folds(cache, task.estimator, task.X, y, task.folds, classes,
                                     task.fit_params, task.families, task.n_permutations,
                                     task.random_state, task.torch_threads)
        prepared.append((task, y, classes, args, keys, cached))
    todo = [(t, i) for t, (task, y, classes, args, keys, cached) in enumerate(prepared)
            for i, hit in enumerate(cached) if hit is None]

    outs: dict[tuple[int, int], dict] = {}
    for t, (task, *_, cached) in enumerate(prepared):
        for i, hit in enumerate(cached):
            if hit is not None:
                outs[t, i] = hit
                if task.on_fold is not None:
                    task.on_fold(hit["fold"], hit["record"])
    # the workers get the fold's inputs only (not the callbacks, which may hold a progress bar)
    inputs = [((t, i), prepared[t][0].estimator, prepared[t][0].X, prepared[t][1],
               prepared[t][0].folds[i], *prepared[t][3]) for t, i in todo]
    # A pool starts all its workers at once: no more than there are folds to fit and cores to
    # fit them (each worker holds its own copy of the libraries; --jobs 256 would fill the memory).
    workers = min(n_jobs, len(todo), usable_cores())
    if workers <= 1:
        computed = (_tagged_fold(*job) for job in inputs)
    else:
        from joblib import Parallel, delayed

        computed = Parallel(n_jobs=workers, return_as="generator_unordered")(
            delayed(_tagged_fold)(*job) for job in inputs)
    for (t, i), out in computed:
        task, *_, keys, _ = prepared[t]
        if keys[i] is not None:
            cache.store(keys[i], out)
        outs[t, i] = out
        if task.on_fold is not None:
            task.on_fold(out["fold"], out["record"])
    return [_assemble(task, y, classes, [outs[t, i] for i in range(len(task.folds))])
            for t, (task, y, classes, *_) in enumerate(prepared)]


def _tagged_fold(tag, *args) -> tuple:
    """``(tag, _run_fold(*args))``: results of a pool that returns them as they finish."""
    return tag, _run_fold(*args)


def _assemble(task: CVTask, y: np.ndarray, classes: list[str], outs: list[dict]) -> CVResult:
    """The :class:`CVResult` of one task from its folds' results, in fold order."""
    n_repeats = max(f.repeat for f in task.folds) + 1
    oof = np.full((n_repeats, len(y)), None, dtype=object)
    oof_proba = np.full((n_repeats, len(y), len(classes)), np.nan)
    has_proba = True
    scores: list[dict] = []
    attention_parts: list[pd.DataFrame] = []
    importance_rows: list[dict] = []
    for out in outs:
        fold = out["fold"]
        oof[fold.repeat, fold.test] = out["pred"]
        if out["proba"] is None:
            has_proba = False
        else:
            oof_proba[fold.repeat, fold.test] = out["proba"]
        scores.append(out["record"])
        if out["attention"] is not None:
            attention_parts.append(out["attention"])
        importance_rows.extend(out["importance"])
    return CVResult(model=task.model_name, classes=classes, folds=list(task.folds),
                    fold_scores=scores, oof=oof, oof_proba=oof_proba if has_proba else None,
                    params={k: repr(v) for k, v in task.estimator.get_params(deep=False).items()},
                    oof_attention=pd.concat(attention_parts) if attention_parts else None,
                    family_importance=pd.DataFrame(importance_rows) if importance_rows else None)


def _cached_folds(cache, estimator, X, y, folds, classes, fit_params, families, n_permutations,
                  seed, torch_threads=None) -> tuple[list, list]:
    """(key or None, cached result or None) per fold; no keys without a cache or when uncacheable."""
    if cache is None:
        return [None] * len(folds), [None] * len(folds)
    from ephys2tx.evaluation.fold_cache import UncacheableError

    try:
        data_key = cache.data_key(X, y, fit_params, classes)
        keys = [cache.key(data_key, estimator, fold, families=families,
                          n_permutations=n_permutations, seed=seed,
                          torch_threads=torch_threads) for fold in folds]
    except UncacheableError:
        return [None] * len(folds), [None] * len(folds)
    return keys, [cache.load(key, fold, classes) for key, fold in zip(keys, folds)]


def summarise_cv(result: CVResult, y, *, n_boot: int = 1000, random_state: int = 0) -> dict:
    """The metrics record of one model: two estimates with their own CIs, per-class F1, confusion.

    For ``accuracy`` and ``macro_f1``:

    * ``mean``, ``sd``: mean and sd of the per-fold scores (all repeats);
      ``ci95_corrected_t``: corrected resampled t interval of that mean
      (:func:`~ephys2tx.evaluation.stats.corrected_resampled_t`; includes
      training-set variance).
    * ``pooled_oof``: the score of the pooled out-of-fold predictions (all
      cells at once, averaged over repeats); ``pooled_oof_ci95_cell_bootstrap``:
      percentile bootstrap over cells of that score (models held fixed).

    The confusion matrix pools the out-of-fold predictions of all repeats
    (each cell counted once per repeat); rows are true classes, columns
    predicted. ``selection`` counts the candidates a selector picked per fold;
    ``library_warnings`` (only when there were any) counts the warnings the
    libraries issued while the folds were fitted (:func:`library_warnings`).
    """
    classes = result.classes
    y = np.asarray(y, dtype=object)
    true_codes = encode(y, classes)
    oof_codes = np.stack([encode(row, classes) for row in result.oof])
    boot = bootstrap_scores(true_codes, oof_codes, len(classes), n_boot=n_boot,
                            random_state=random_state)
    pooled = dict(zip(("macro_f1", "accuracy"),
                      (float(v.mean()) for v in repeat_scores(true_codes, oof_codes, len(classes)))))
    n_train, n_test = result.fold_sizes
    record = {}
    for metric in ("accuracy", "macro_f1"):
        values = [s[metric] for s in result.fold_scores]
        stats = summarise(values)
        stats["ci95_corrected_t"] = corrected_resampled_t(values, n_train, n_test)["ci"]
        stats["pooled_oof"] = pooled[metric]
        stats["pooled_oof_ci95_cell_bootstrap"] = percentile_ci(boot[metric])
        record[metric] = stats
    record["per_class_f1"] = {
        c: summarise([s["per_class_f1"][c] for s in result.fold_scores]) for c in classes}
    pooled_cm = fold_metrics(np.tile(y, result.oof.shape[0]), result.oof.ravel(), classes)
    record["confusion_matrix"] = pooled_cm["confusion_matrix"]
    record["n_folds"] = len(result.fold_scores)
    record["n_repeats"] = int(result.oof.shape[0])
    record["n_train_mean"] = float(n_train.mean())
    record["n_test_mean"] = float(n_test.mean())
    record["fit_seconds_mean"] = float(np.mean([s["fit_seconds"] for s in result.fold_scores]))
    picks = [s["selection"]["selected"] for s in result.fold_scores if "selection" in s]
    if picks:
        record["selection"] = {name: picks.count(name) for name in sorted(set(picks))}
    fold_warnings = merge_warning_counts(s.get("warnings") for s in result.fold_scores)
    if fold_warnings:  # library warnings of the fold fits, per category (see library_warnings)
        record["library_warnings"] = fold_warnings
    return record
