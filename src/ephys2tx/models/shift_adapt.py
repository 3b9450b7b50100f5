"""Predict a query under shift: alignment, class-mix estimation, user priors, and ``auto``.

One entry point, :func:`adapt_predict`, used by ``ephys2tx map`` and by the shift
benchmark (:mod:`ephys2tx.experiments.shift_benchmark`), so that the benchmark
measures exactly what the command does. Methods (``--align``):

* ``none``: the reference model's calibrated probabilities as they are;
* ``quantile``, ``ot``, ``moments``: marginal alignment
  (:mod:`ephys2tx.features.alignment`), which assumes the query has the
  reference's class mix;
* ``em``: no alignment; the class mix is estimated by EM and the probabilities
  re-weighted by Bayes' rule (:mod:`ephys2tx.models.label_shift`);
* ``bbse``: the same with black-box shift estimation;
* ``cc``: class-conditional alignment by the joint EM of
  :mod:`ephys2tx.models.class_conditional` (rig map and class mix together),
  then the reference model on the aligned features, re-weighted to the
  estimated class mix;
* ``cc_gen``: the joint EM's own class posteriors (Gaussian class-conditionals);
* ``cc_mix``: the mean of ``cc`` and ``cc_gen``;
* ``ccm``, ``ccm_gen``, ``ccm_mix``: the same with class means that may also move
  for the query (a MAP adaptation with relevance :data:`MEAN_RELEVANCE` cells),
  for differences no per-feature rig explains (another species, slice culture);
* ``auto``: decided from the data (:func:`auto_method`), and said.

A prior the user knows (``--layer``, ``--prior``), one class mix per cell,
replaces any estimated class mix and is applied by Bayes' rule; with ``cc*``
it is also the fixed mixture weight of the joint EM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ephys2tx.errors import InputError

__all__ = ["ALIGN_METHODS", "AUTO_METHOD", "COVARIANCE", "COVARIANCES", "MEAN_RELEVANCE", "MEAN_RELEVANCES", "USER_PRIOR_MODE", "DEFAULT_ALIGN", "DEFAULT_MAP_MODEL", "AdaptResult", "ShiftOutcome",
           "adapt_predict", "auto_method", "fit_alignment", "mapping_notes", "predict_under_shift",
           "read_layer_column", "reference_prior"]

ALIGN_METHODS = ("auto", "none", "quantile", "ot", "moments", "em", "bbse", "cc", "cc_gen", "cc_mix",
                 "ccm", "ccm_gen", "ccm_mix")
_JOINT_EM = ("cc", "cc_gen", "cc_mix", "ccm", "ccm_gen", "ccm_mix")
MEAN_RELEVANCES = (10.0, 30.0, 100.0)
#: Class covariances the joint EM can use (:class:`~ephys2tx.models.class_conditional.ClassConditionalAligner`):
#: ``auto`` (one per class when every class has enough cells, else one shared) or ``tied``
#: (one shared covariance, so no class can become a broad catch-all for cells unlike any class).
COVARIANCES = ("auto", "tied")


def _benchmark_defaults() -> dict:
    """``shift_defaults.json``: what the shift benchmark's selection chose.

    Written by ``benchmarks/bench_shift.py --write-defaults`` from
    :func:`ephys2tx.experiments.shift_benchmark.shift_defaults` (the
    leave-one-scenario-out selection over every candidate), never by hand.
    """
    import importlib.resources
    import json

    text = (importlib.resources.files("ephys2tx.models") / "shift_defaults.json").read_text("utf-8")
    return json.loads(text)


_DEFAULTS = _benchmark_defaults()
#: Relevance (in cells) of the class-mean adaptation of the ``ccm*`` methods, chosen by the
#: shift benchmark among :data:`MEAN_RELEVANCES`.
MEAN_RELEVANCE = float(_DEFAULTS.get("mean_relevance") or 100.0)
#: ``map``'s defaults, chosen by the shift benchmark (docs/shift.md): the reference model ...
DEFAULT_MAP_MODEL = str(_DEFAULTS["model"])
#: How ``--layer``/``--prior`` enter the joint EM (:func:`adapt_predict`'s ``prior_mode``),
#: chosen by the benchmark's leave-one-scenario-out selection among the layer-prior rows.
USER_PRIOR_MODE = str(_DEFAULTS["user_prior_mode"])
#: The joint EM's class covariances, chosen by the shift benchmark among :data:`COVARIANCES`.
COVARIANCE = str(_DEFAULTS.get("covariance") or "auto")
#: ... and the shift handling: ``auto``, which applies :data:`AUTO_METHOD` to queries of
#: at least :data:`AUTO_MIN_CELLS` cells. ``AUTO_METHOD`` is the method the benchmark's
#: selection chose on all scenarios (``auto`` itself is not a benchmark candidate, so the
#: choice is not circular; its leave-one-scenario-out score is the benchmark's LOSO column).
DEFAULT_ALIGN = "auto"
AUTO_METHOD = str(_DEFAULTS["auto_method"])
#: Below this many cells with features, ``auto`` neither aligns nor estimates a class mix.
AUTO_MIN_CELLS = 20
_PROB = "prob_"


@dataclass
class AdaptResult:
    """Predictions of a query after the chosen shift handling.

    Attributes
    ----------
    proba : ndarray (n, K)
        Final class probabilities (NaN rows for cells without features).
    aligned : DataFrame
        The features the model read (the query itself when not aligned).
    method : str
        The method applied (``auto`` resolved).
    requested : str
    class_mix : ndarray (K,) or None
        Estimated class mix of the query (EM, BBSE or joint EM).
    notes : list of str
        What was done and why (``auto``'s decision, priors).
    alignment : AlignmentResult or None
    prior_free_proba : ndarray (n, K) or None
        The same method without the user's prior (when one was given).
    variants : dict
        For the joint-EM methods, the probabilities of ``cc``, ``cc_gen`` and
        ``cc_mix`` (they share one EM fit).
    """

    proba: np.ndarray
    aligned: pd.DataFrame
    method: str
    requested: str
    class_mix: np.ndarray | None
    notes: list = field(default_factory=list)
    alignment: object = None
    prior_free_proba: np.ndarray | None = None
    variants: dict = field(default_factory=dict)


def reference_prior(model) -> np.ndarray:
    """Class mix of the reference cells the model was calibrated on (``model.classes`` order)."""
    counts = model.record.get("class_counts") or {}
    mix = np.array([float(counts.get(c, 0.0)) for c in model.classes])
    if mix.sum() <= 0:
        return np.full(len(model.classes), 1.0 / len(model.classes))
    return mix / mix.sum()


def _proba(model, X: pd.DataFrame) -> np.ndarray:
    frame = model.predict_frame(X)
    return frame[[f"{_PROB}{c}" for c in model.classes]].to_numpy(dtype=float)


def auto_method(n_cells: int, alarm=None) -> tuple[str, str]:
    """What ``--align auto`` does with a query of ``n_cells`` cells and its shift alarm.

    * fewer than :data:`AUTO_MIN_CELLS` cells: ``none`` (too few to estimate anything);
    * otherwise :data:`AUTO_METHOD`, the shift benchmark's choice: the joint EM,
      whose priors leave an unshifted query (nearly) alone and which estimates the
      class mix and the rig map together.

    Returns
    -------
    (method, reason)
    """
    if n_cells < AUTO_MIN_CELLS:
        return "none", (f"only {n_cells} cell{'' if n_cells == 1 else 's'} with features "
                        f"(< {AUTO_MIN_CELLS}): too few to "
                        "estimate a shift or a class mix; no alignment")
    level = getattr(alarm, "level", None)
    detail = {"alarm": "shift beyond a class-mix difference detected",
              "note": "the class mix seems to differ from the reference's",
              "ok": "no shift detected"}.get(level, "shift test not run")
    what = {"cc": "the reference model on the aligned features, re-weighted to the estimated mix",
            "cc_gen": "the joint EM's own class posteriors",
            "cc_mix": "the mean of the reference model on the aligned features and the joint EM's "
                      "class posteriors"}.get(AUTO_METHOD.replace("ccm", "cc"), AUTO_METHOD)
    if AUTO_METHOD.startswith("ccm"):
        what += f"; class means may adapt to the query (relevance {MEAN_RELEVANCE:g} cells)"
    if AUTO_METHOD.startswith("cc") and COVARIANCE == "tied":
        what += "; one covariance shared by all classes"
    return AUTO_METHOD, (f"{n_cells} cells, {detail}: class-conditional alignment (joint EM of the "
                         f"class mix and a per-feature rig map, with priors that leave small shifts "
                         f"alone); {what}")


def _fixed_rows(user_prior, n, K):
    if user_prior is None:
        return None, None
    P = np.asarray(user_prior, dtype=float)
    P = np.broadcast_to(P, (n, K)).copy() if P.ndim == 1 else P.copy()
    if P.shape != (n, K):
        raise InputError(f"a class prior must have {K} values (one per class), or one row per cell.")
    known = np.isfinite(P).all(axis=1)
    return P, known


def adapt_predict(model, query: pd.DataFrame, reference: pd.DataFrame, reference_labels, method: str,
                  *, user_prior=None, alarm=None, random_state=0, covariance: str | None = None,
                  pseudo_count: float = 10.0, offset_prior_scale: float = 1.0,
                  mean_relevance: float | None = None, alignment=None,
                  prior_mode: str | None = None, proba=None) -> AdaptResult:
    """Class probabilities of ``query`` under the shift handling ``method``.

    Parameters
    ----------
    model : ReferenceModel
        Calibrated reference model (:mod:`ephys2tx.mapping`) on ``model.features``.
    query : DataFrame
        Canonical features of the query cells (unaligned).
    reference : DataFrame
        Canonical features of the reference cells the model was trained on.
    reference_labels : array-like
        Their classes.
    method : str
        One of :data:`ALIGN_METHODS`.
    user_prior : array (K,) or (n, K), optional
        A class mix the user knows (NaN rows: unknown for that cell).
    alarm : ShiftReport, optional
        The query's shift alarm (``auto`` reports it in its reason).
    random_state : int
    covariance, pseudo_count, offset_prior_scale :
        Of the joint EM (:class:`ephys2tx.models.class_conditional.ClassConditionalAligner`);
        ``covariance`` defaults to :data:`COVARIANCE`, the shift benchmark's choice.
    mean_relevance : float, optional
        Class-mean adaptation of the ``ccm*`` methods (default :data:`MEAN_RELEVANCE`).
    alignment : AlignmentResult, optional
        A joint-EM fit of this query (with this user prior in ``prior_mode="em"``)
        to reuse, e.g. with another reference model on the same features.
    prior_mode : {"em", "post"}, optional
        How a user prior enters the joint-EM methods: as the EM's fixed mixture
        weights (``em``), or by Bayes' rule on the prior-free result, replacing
        its estimated class mix (``post``). Default :data:`USER_PRIOR_MODE`.
    proba : array (n, K), optional
        The model's calibrated probabilities of ``query`` as they are (the
        ``prob_`` columns of ``model.predict_frame(query)``), when the caller has
        them already: ``none``, ``em`` and ``bbse`` start from a copy of them
        instead of predicting the query a second time (same result). Ignored by
        the methods that predict aligned features.
    """
    from ephys2tx.models.label_shift import apply_prior, bbse_prior, em_prior

    if method not in ALIGN_METHODS:
        raise InputError(f"unknown --align {method!r}; use one of {', '.join(ALIGN_METHODS)}.")
    options = dict(alarm=alarm, random_state=random_state, covariance=covariance,
                   pseudo_count=pseudo_count, offset_prior_scale=offset_prior_scale,
                   mean_relevance=mean_relevance, proba=proba)
    feats = list(model.features)
    X = query.reindex(columns=feats).astype(float, copy=False)  # reindex made the copy
    ref = reference.reindex(columns=feats).astype(float, copy=False)
    labels = np.asarray(reference_labels)
    classes = list(model.classes)
    K, n = len(classes), len(X)
    has = X.notna().any(axis=1).to_numpy()
    notes = []
    requested = method
    if method == "auto":
        method, reason = auto_method(int(has.sum()), alarm)
        notes.append(f"--align auto chose {method}: {reason}.")
    pi_ref = reference_prior(model)
    fixed, known = _fixed_rows(user_prior, n, K)
    prior_mode = USER_PRIOR_MODE if prior_mode is None else prior_mode
    if prior_mode not in ("em", "post"):
        raise InputError(f"prior_mode must be 'em' or 'post', got {prior_mode!r}.")
    free = None
    rows = None
    if fixed is not None:
        free = adapt_predict(model, query, reference, reference_labels, method, **options,
                             alignment=alignment if prior_mode == "post" else None)
        # cells without a prior keep the reference's class mix (no re-weighting)
        rows = np.where(known[:, None], np.nan_to_num(fixed, nan=0.0), pi_ref[None, :])

    aligned = X
    class_mix = None
    variants = {}
    if method in ("quantile", "ot", "moments"):
        from ephys2tx.features.alignment import align

        aligned = align(X, ref, method, random_state=random_state)
        proba = _proba(model, aligned)
    elif method in ("none", "em", "bbse"):
        if proba is None:
            proba = _proba(model, X)
        else:  # the caller's predict_frame of this query: a copy, re-weighted below in place
            proba = np.array(proba, dtype=float, copy=True)
            if proba.shape != (n, K):
                raise ValueError(f"proba has shape {proba.shape}; expected ({n}, {K}).")
        if method != "none" and rows is None and has.any():
            est = (em_prior(proba[has], pi_ref) if method == "em" else
                   bbse_prior(proba[has], pi_ref, model.diagnostics.get("oof_calibrated"),
                              model.diagnostics.get("codes")))
            class_mix = est.prior
            proba[has] = est.proba
        elif method != "none" and rows is not None:
            notes.append(f"--align {method}: your class prior replaces the class mix {method} would "
                         "estimate (cells without a prior keep the reference's); the prior-free call "
                         f"(predicted_subclass_no_prior) is {method}'s.")
    else:  # the joint EM: cc*, ccm*
        relevance = None
        if method.startswith("ccm"):
            relevance = MEAN_RELEVANCE if mean_relevance is None else mean_relevance
        post = rows is not None and prior_mode == "post"
        if post:
            alignment = free.alignment  # the prior-free fit; the prior is applied afterwards
        if alignment is None:
            alignment = fit_alignment(X, ref, labels, classes, prior_rows=rows, covariance=covariance,
                                      pseudo_count=pseudo_count, mean_relevance=relevance,
                                      offset_prior_scale=offset_prior_scale)
        if not alignment.converged:
            notes.append(f"the joint EM stopped after {alignment.n_iter} iterations without converging "
                         "(its objective still changed by more than the tolerance); the class mix and "
                         "rig map are its last iterate.")
        aligned = alignment.aligned.reindex(columns=feats)
        class_mix = alignment.prior
        forest = np.nan_to_num(_proba(model, aligned))
        forest = apply_prior(forest, pi_ref, class_mix if rows is None else rows)
        gen = alignment.responsibilities
        if post:  # the EM's posteriors assume its estimated mix: swap it for the user's prior
            gen = apply_prior(gen, np.maximum(class_mix, 1e-6), rows)
        family = "ccm" if method.startswith("ccm") else "cc"
        variants = {family: forest, f"{family}_gen": gen, f"{family}_mix": 0.5 * (forest + gen)}
        proba = variants[method]
    if rows is not None:
        if method not in _JOINT_EM:  # the joint EM used the prior already
            proba = apply_prior(np.nan_to_num(proba), pi_ref, rows)
        n_known = int((known & has).sum())
        notes.append(f"user class prior applied by Bayes' rule to {n_known} of {int(has.sum())} cells"
                     + ("" if n_known == has.sum() else " (the others keep the reference's class mix)"))
    proba = np.where(has[:, None], proba, np.nan)
    return AdaptResult(proba=proba, aligned=aligned, method=method, requested=requested,
                       class_mix=class_mix, notes=notes, alignment=alignment,
                       prior_free_proba=None if free is None else free.proba,
                       variants={k: np.where(has[:, None], v, np.nan) for k, v in variants.items()})


def fit_alignment(query: pd.DataFrame, reference: pd.DataFrame, reference_labels, classes, *,
                  prior_rows=None, covariance: str | None = None, pseudo_count: float = 10.0,
                  offset_prior_scale: float = 1.0, mean_relevance: float | None = None):
    """The joint EM of ``query`` against the reference (classes in ``classes`` order).

    Returns an :class:`~ephys2tx.models.class_conditional.AlignmentResult` whose
    ``prior`` and ``responsibilities`` have one column per class of ``classes``.
    ``covariance`` defaults to :data:`COVARIANCE`.
    """
    from ephys2tx.models.class_conditional import ClassConditionalAligner

    covariance = COVARIANCE if covariance is None else covariance

    labels = np.asarray(reference_labels)
    keep = np.isin(labels, classes)
    codes = pd.Series(labels[keep]).map({c: i for i, c in enumerate(classes)}).to_numpy()
    aligner = ClassConditionalAligner(covariance=covariance, pseudo_count=pseudo_count,
                                      offset_prior_scale=offset_prior_scale,
                                      mean_relevance=mean_relevance)
    aligner.fit(reference[keep], codes)
    present = aligner.classes_.astype(int)
    em_rows = None if prior_rows is None else np.asarray(prior_rows)[:, present]
    result = aligner.align(query, class_prior=em_rows)
    K = len(classes)
    prior = np.zeros(K)
    prior[present] = result.prior
    resp = np.zeros((len(query), K))
    resp[:, present] = result.responsibilities
    result.prior, result.responsibilities = prior, resp
    return result


@dataclass
class ShiftOutcome:
    """Predictions of a query with its shift alarm and the shift handling applied.

    Attributes
    ----------
    predictions : DataFrame
        ``predicted_subclass``, ``confidence``, ``prob_<class>`` (after the shift
        handling and any user prior), ``ood_score``, ``ood_flag`` (scored on the
        unaligned features), ``n_features``; with a user prior also
        ``predicted_subclass_no_prior`` and ``confidence_no_prior``.
    alarm : ShiftReport
        Computed before any alignment.
    adapt : AdaptResult
    notes : list of str
    """

    predictions: pd.DataFrame
    alarm: object
    adapt: AdaptResult
    notes: list = field(default_factory=list)


def _labels_and_confidence(classes, proba: np.ndarray, ok: np.ndarray):
    filled = np.where(ok[:, None], np.nan_to_num(proba, nan=0.0), 0.0)
    best = filled.argmax(axis=1)
    label = np.where(ok, np.asarray(classes, dtype=object)[best], "")
    conf = np.where(ok, filled.max(axis=1), np.nan)
    return label, conf


def predict_under_shift(model, query: pd.DataFrame, reference: pd.DataFrame, reference_labels, *,
                        align: str = "auto", user_prior=None, random_state: int = 0,
                        n_permutations: int = 200) -> ShiftOutcome:
    """Shift alarm on the unaligned query, then :func:`adapt_predict`, as one predictions table.

    Parameters
    ----------
    model : ReferenceModel
    query : DataFrame
        Canonical features of the query (unaligned).
    reference : DataFrame
        Canonical features of the reference cells the model was trained on.
    reference_labels : array-like
    align : str
        One of :data:`ALIGN_METHODS` (``none`` keeps the model's own probabilities).
    user_prior : array (K,) or (n, K), optional
        From ``--layer`` / ``--layer-column`` / ``--prior``.
    random_state : int
    n_permutations : int
        Of the alarm's permutation tests.
    """
    from ephys2tx.models.shift_alarm import shift_alarm

    classes = list(model.classes)
    X = query.reindex(columns=model.features).astype(float)
    base = model.predict_frame(X)
    ok = (base["n_features"] > 0).to_numpy()
    alarm = shift_alarm(X, reference.reindex(columns=model.features), reference_labels,
                        proba=base[[f"{_PROB}{c}" for c in classes]].to_numpy(float), classes=classes,
                        reference_prior=reference_prior(model), ood_flags=base["ood_flag"],
                        ood_expected=float(model.ood_norm.get("false_alarm_rate", 0.05)),
                        n_permutations=n_permutations, random_state=random_state)
    result = adapt_predict(model, X, reference, reference_labels, align, user_prior=user_prior,
                           alarm=alarm, random_state=random_state)
    out = pd.DataFrame(index=X.index)
    out["predicted_subclass"], out["confidence"] = _labels_and_confidence(classes, result.proba, ok)
    for k, cls in enumerate(classes):
        out[f"{_PROB}{cls}"] = np.where(ok, result.proba[:, k], np.nan)
    if result.prior_free_proba is not None:
        label, conf = _labels_and_confidence(classes, result.prior_free_proba, ok)
        out["predicted_subclass_no_prior"], out["confidence_no_prior"] = label, conf
    for col in ("ood_score", "ood_flag", "n_features"):
        out[col] = base[col]
    return ShiftOutcome(predictions=out, alarm=alarm, adapt=result, notes=list(result.notes))


def mapping_notes(query, reference) -> list[str]:
    """Warnings about the mapped features: those the reference lacks, those with no value.

    Parameters
    ----------
    query : Query
        From :func:`ephys2tx.mapping.read_query` (``features``, ``sources``).
    reference : Reference
    """
    notes = []
    lacking = [f for f in query.features.columns if f not in reference.features.columns]
    if lacking:
        described = ", ".join(f"{f} (column {query.sources.get(f, f)!r})" for f in lacking[:6])
        notes.append(f"{len(lacking)} mapped feature(s) are not in the {reference.species} reference and "
                     f"are not used: {described}{', ...' if len(lacking) > 6 else ''}; "
                     f"`ephys2tx features --species {reference.species}` lists what the reference has.")
    empty = [f for f in query.features.columns
             if f in reference.features.columns and query.features[f].isna().all()]
    if empty:
        notes.append(f"{len(empty)} mapped feature(s) have no value in any cell and are not used: "
                     + ", ".join(f"{f} (column {query.sources.get(f, f)!r})" for f in empty[:6]) + ".")
    return notes


def read_layer_column(input_path, column: str, ids, *, id_column: str | None = None) -> list:
    """The values of ``column`` of the input table, in the order of ``ids`` (``--layer-column``)."""
    from ephys2tx.data.user_tables import read_user_table

    table = read_user_table(input_path, id_column=id_column)
    if column == table.id_column:
        raise InputError(f"--layer-column {column!r} is the cell id column of {input_path}; name "
                         "the column that holds each cell's cortical layer (e.g. L1, L2/3).")
    if column not in table.data.columns:
        raise InputError(f"--layer-column {column!r} is not a column of {input_path}; columns "
                         f"start with {list(table.data.columns[:5])}.")
    values = table.data[column].reindex(pd.Index(ids).astype(str))
    from ephys2tx.data.layers import is_unknown_layer, parse_layer

    out = [None if is_unknown_layer(v) else v for v in values.to_numpy(dtype=object)]
    if all(v is None for v in out):  # the option would be ignored: most likely the wrong column
        raise InputError(f"--layer-column {column!r} of {input_path} is empty (or unknown) in every row; "
                         "fill in each cell's cortical layer (e.g. L1, L2/3, 5), or leave out --layer-column.")
    bad = [(cell, v) for cell, v in zip(values.index, out) if v is not None and parse_layer(v) is None]
    if bad:
        cell, value = bad[0]
        distinct = list(dict.fromkeys(repr(v) for _, v in bad))
        raise InputError(
            f"layer {value!r} is not a cortical layer (column {column!r} of {input_path}, cell "
            f"{cell}; {len(bad)} cell(s) hold a label that is not a layer: {', '.join(distinct[:5])}"
            f"{', ...' if len(distinct) > 5 else ''}); write the layer as e.g. L1, L2/3, 4, L5, "
            "L6a, 5_6, or leave the cell empty or write unknown (no layer prior for it).")
    return out


def prior_predictions(model, predictions: pd.DataFrame, user_prior) -> pd.DataFrame:
    """``predict``'s table with a user prior applied by Bayes' rule (no alignment).

    The prior-free call is kept as ``predicted_subclass_no_prior`` and
    ``confidence_no_prior``; cells without a prior (NaN rows) are unchanged.
    """
    from ephys2tx.models.label_shift import apply_prior

    classes = list(model.classes)
    cols = [f"{_PROB}{c}" for c in classes]
    proba = predictions[cols].to_numpy(dtype=float)
    ok = (predictions["n_features"] > 0).to_numpy()
    rows = np.asarray(user_prior, dtype=float)
    rows = np.broadcast_to(rows, proba.shape) if rows.ndim == 1 else rows
    known = np.isfinite(rows).all(axis=1) & ok
    out = predictions.copy()
    out["predicted_subclass_no_prior"] = out["predicted_subclass"]
    out["confidence_no_prior"] = out["confidence"]
    if known.any():
        adjusted = apply_prior(proba[known], reference_prior(model), rows[known])
        proba = proba.copy()
        proba[known] = adjusted
        label, conf = _labels_and_confidence(classes, proba, ok)
        out["predicted_subclass"], out["confidence"] = label, conf
        out[cols] = proba
    return out
