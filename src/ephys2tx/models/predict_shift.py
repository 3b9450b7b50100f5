"""Shift handling for ``ephys2tx predict``: a saved model reading another lab's or layer's cells.

``predict`` reads a model folder written by ``ephys2tx train``; unlike ``map``
it cannot refit or align on the reference, so its shift handling is what the
saved model allows (``--align``):

* ``none``: the model's calibrated probabilities as they are;
* ``em``: the query's class mix re-estimated by the EM of Saerens et al.
  (2002) on those probabilities, against the training class mix stored in the
  model (``record["class_counts"]``), and the probabilities re-weighted by
  Bayes' rule (:func:`ephys2tx.models.shift_adapt.adapt_predict`, the same
  code as ``map --align em``);
* ``em@<n>``: the same EM with a stronger Dirichlet pseudo-count of ``n`` cells
  towards the training mix (``em`` uses 10): the estimate is
  ``(sum of posteriors + n * training mix) / (cells + n)``, a cautious EM;
* ``em_test``, ``em_test@<n>``: EM only when the likelihood-ratio test of
  Saerens et al. (2002, section 2.3) rejects an unchanged class mix at
  :data:`MIX_TEST_ALPHA` (:func:`class_mix_test`); otherwise ``none``;
* ``auto``: no adaptation below :data:`~ephys2tx.models.shift_adapt.AUTO_MIN_CELLS`
  cells, else :data:`PREDICT_AUTO_METHOD`, the choice of the predict-route
  shift benchmark (``benchmarks/bench_predict_shift.py``, leave-one-scenario-out),
  read from ``predict_shift_defaults.json``.

A prior the user knows (``--layer``, ``--layer-column``, ``--prior``) enters as
in ``map``: it replaces any estimated class mix (EM never re-estimates the mix
of a cell with a prior, so the layer prior is not washed out) and is applied
by Bayes' rule to the model's own probabilities;
the call without it is kept beside (``predicted_subclass_no_prior``), and an
adapted call keeps the model's own call beside (``predicted_subclass_unadapted``).

The shift alarm is computed first, on the unadapted features: the two-sample
tests of :func:`ephys2tx.models.shift_alarm.shift_alarm` against the sample of
training cells stored in the model folder, or, for a folder without that
sample, the OOD count alone (:func:`~ephys2tx.models.shift_alarm.ood_alarm`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ephys2tx.errors import InputError
from ephys2tx.models.shift_adapt import (AUTO_MIN_CELLS, ShiftOutcome, _labels_and_confidence,
                                         adapt_predict, reference_prior)

__all__ = ["MAX_REFERENCE_ROWS", "MIX_TEST_ALPHA", "PREDICT_ALIGN_METHODS", "PREDICT_AUTO_METHOD",
           "PREDICT_CANDIDATES", "PREDICT_DEFAULT_ALIGN", "class_mix_test", "parse_predict_method",
           "predict_auto_method", "predict_with_shift", "reference_frames", "reference_sample"]

#: The shift handlings the predict-route benchmark scores (``auto`` picks one of them).
PREDICT_CANDIDATES = ("none", "em", "em@100", "em@300", "em_test", "em_test@100")
PREDICT_ALIGN_METHODS = ("auto", *PREDICT_CANDIDATES)
#: Dirichlet pseudo-count (cells) of plain ``em``: :func:`ephys2tx.models.label_shift.em_prior`'s default.
EM_PSEUDO_COUNT = 10.0
#: Level of the class-mix test of ``em_test``.
MIX_TEST_ALPHA = 0.01
PREDICT_DEFAULT_ALIGN = "auto"
#: Training cells stored in a model folder for the shift test (``shift_alarm`` uses at most
#: 1000 reference cells too).
MAX_REFERENCE_ROWS = 1000
_PROB = "prob_"


def _benchmark_defaults() -> dict:
    """``predict_shift_defaults.json``, written by ``benchmarks/bench_predict_shift.py --write-defaults``."""
    import importlib.resources
    import json

    text = (importlib.resources.files("ephys2tx.models") / "predict_shift_defaults.json").read_text("utf-8")
    return json.loads(text)


#: What ``predict --align auto`` applies to queries of at least ``AUTO_MIN_CELLS`` cells: the
#: predict-route shift benchmark's leave-one-scenario-out choice between ``none`` and ``em``.
PREDICT_AUTO_METHOD = str(_benchmark_defaults()["auto_method"])


def parse_predict_method(method: str) -> tuple[str, float, bool]:
    """``"em_test@100"`` -> ``("em", 100.0, True)``; ``"none"`` -> ``("none", 0.0, False)``.

    Returns
    -------
    (kind, pseudo_count, tested)
        ``kind`` is ``none`` or ``em``; ``pseudo_count`` the EM's Dirichlet
        pseudo-count in cells; ``tested``: EM only if :func:`class_mix_test` rejects.

    Raises
    ------
    InputError
        Not one of :data:`PREDICT_CANDIDATES`.
    """
    if method not in PREDICT_CANDIDATES:
        raise InputError(f"unknown predict --align {method!r}; use one of "
                         f"{', '.join(PREDICT_ALIGN_METHODS)} (`ephys2tx map` offers alignment "
                         "methods that refit on your features).")
    if method == "none":
        return "none", 0.0, False
    name, _, count = method.partition("@")
    return "em", float(count) if count else EM_PSEUDO_COUNT, name == "em_test"


def _describe(method: str) -> str:
    kind, count, tested = parse_predict_method(method)
    if kind == "none":
        return "no adaptation (the shift benchmark found re-estimating the class mix no better)"
    what = (f"the query's class mix re-estimated by EM (Saerens et al. 2002, pseudo-count {count:g} "
            "cells towards the training mix) and the probabilities re-weighted to it")
    return (f"{what}, if the likelihood-ratio test rejects an unchanged class mix at "
            f"{MIX_TEST_ALPHA:g}" if tested else what)


def class_mix_test(proba, reference_prior, *, floor: float | None = None) -> dict:
    """Has the class mix changed? The likelihood-ratio test of Saerens et al. (2002, section 2.3).

    Under an unchanged class mix ``pi_ref`` and calibrated probabilities
    ``p(k | x_i)``, the statistic

        2 * sum_i log( sum_k p(k | x_i) * pi_k / pi_ref_k )

    at the maximum-likelihood mix ``pi`` (EM without pseudo-count) is
    asymptotically chi-square with ``K - 1`` degrees of freedom. It trusts the
    probabilities: when the features shift too, it rejects more often than its level.

    Parameters
    ----------
    proba : array (n, K)
        Calibrated probabilities of the query cells (rows without features removed).
    reference_prior : array (K,)
        The training class mix the probabilities assume.
    floor : float, optional
        Probability floor (default that of :func:`~ephys2tx.models.label_shift.em_prior`).

    Returns
    -------
    dict
        ``statistic``, ``df``, ``p_value``, ``mix`` (the maximum-likelihood class mix), ``n_cells``.
    """
    from scipy.stats import chi2

    from ephys2tx.models.label_shift import DEFAULT_FLOOR, em_prior, smooth_proba

    floor = DEFAULT_FLOOR if floor is None else float(floor)
    proba = np.asarray(proba, dtype=float)
    ref = np.asarray(reference_prior, dtype=float)
    ref = ref / ref.sum()
    df = proba.shape[1] - 1
    if len(proba) == 0:
        return {"statistic": 0.0, "df": df, "p_value": 1.0, "mix": ref.tolist(), "n_cells": 0}
    mle = em_prior(proba, ref, pseudo_count=0.0, floor=floor, max_iter=1000, tol=1e-9)
    ratio = smooth_proba(proba, floor) @ (mle.prior / np.maximum(ref, 1e-12))
    statistic = float(max(2.0 * np.sum(np.log(ratio)), 0.0))
    return {"statistic": statistic, "df": df, "p_value": float(chi2.sf(statistic, df)),
            "mix": mle.prior.tolist(), "n_cells": int(len(proba))}


def predict_auto_method(n_cells: int, alarm=None) -> tuple[str, str]:
    """What ``predict --align auto`` does with ``n_cells`` cells with features.

    Returns
    -------
    (method, reason)
    """
    if n_cells < AUTO_MIN_CELLS:
        return "none", (f"only {n_cells} cell{'' if n_cells == 1 else 's'} with features "
                        f"(< {AUTO_MIN_CELLS}): too few to estimate a class mix; no adaptation")
    level = getattr(alarm, "level", None)
    if alarm is not None and not alarm.features:  # the OOD count alone (no reference rows)
        level = {"ok": "ood-ok"}.get(level, level)
    detail = {"ood-ok": "OOD count as expected (no dataset-level test)","alarm": "shift beyond a class-mix difference detected",
              "note": "the class mix seems to differ from the training cells'",
              "ok": "no shift detected"}.get(level, "dataset-level shift test not run")
    return PREDICT_AUTO_METHOD, f"{n_cells} cells, {detail}: {_describe(PREDICT_AUTO_METHOD)}"


def _alarm(model, X: pd.DataFrame, base: pd.DataFrame, reference, reference_labels, *,
           n_permutations: int, random_state: int):
    """The alarm before any adaptation: two-sample tests when the model has reference rows."""
    from ephys2tx.models.shift_alarm import ood_alarm, shift_alarm

    expected = float(model.ood_norm.get("false_alarm_rate", 0.05))
    if reference is None:
        alarm = ood_alarm(base["ood_flag"], ood_expected=expected)
        return alarm, ["this model folder stores no sample of its training cells (written by an "
                       "older ephys2tx): the shift check counts OOD cells only; retrain with "
                       "`ephys2tx train` for the dataset-level shift test."]
    classes = list(model.classes)
    alarm = shift_alarm(X, reference.reindex(columns=model.features), reference_labels,
                        proba=base[[f"{_PROB}{c}" for c in classes]].to_numpy(float), classes=classes,
                        reference_prior=reference_prior(model), ood_flags=base["ood_flag"],
                        ood_expected=expected, n_permutations=n_permutations,
                        random_state=random_state)
    # predict writes no report.md: say what to do on the alarm line itself
    alarm.message = alarm.message.replace(
        "see the first section of report.md.",
        "check units and feature definitions, or use `ephys2tx map`, which refits on your "
        "features and can align them.")
    return alarm, []


def predict_with_shift(model, X: pd.DataFrame, *, align: str = PREDICT_DEFAULT_ALIGN, user_prior=None,
                       reference: pd.DataFrame | None = None, reference_labels=None,
                       random_state: int = 0, n_permutations: int = 200) -> ShiftOutcome:
    """Predict ``X`` with a saved reference model: shift alarm, then ``align``, then the user prior.

    Parameters
    ----------
    model : ReferenceModel
        From :func:`ephys2tx.mapping.load_reference_model` (or freshly fitted).
    X : DataFrame
        Canonical features of the query; model features it lacks are missing
        (the model's imputer fills them with training medians).
    align : str
        ``auto`` or one of :data:`PREDICT_CANDIDATES` (:func:`parse_predict_method`).
    user_prior : array (K,) or (n, K), optional
        From ``--layer`` / ``--layer-column`` / ``--prior`` (NaN rows: unknown).
    reference, reference_labels : DataFrame, array-like, optional
        Training cells stored with the model (:func:`ephys2tx.mapping.reference.load_reference_sample`)
        for the dataset-level shift test; without them the alarm counts OOD cells.
    random_state, n_permutations : int
        Of the alarm's permutation tests.

    Returns
    -------
    ShiftOutcome
        ``predictions``: the columns of :meth:`ReferenceModel.predict_frame` after
        the shift handling and the prior, plus ``predicted_subclass_unadapted`` /
        ``confidence_unadapted`` when the class mix was re-estimated and
        ``predicted_subclass_no_prior`` / ``confidence_no_prior`` with a user prior.
    """
    if align != "auto":
        parse_predict_method(align)  # refuses an unknown method before any work
    classes = list(model.classes)
    X = X.reindex(columns=model.features).astype(float, copy=False)  # reindex made the copy
    base = model.predict_frame(X)
    ok = (base["n_features"] > 0).to_numpy()
    alarm, notes = _alarm(model, X, base, reference, reference_labels,
                          n_permutations=n_permutations, random_state=random_state)
    method = align
    if align == "auto":
        method, reason = predict_auto_method(int(ok.sum()), alarm)
        notes.append(f"--align auto chose {method}: {reason}.")
    result, adapted = _adapt(model, X, base, ok, method, user_prior=user_prior, alarm=alarm,
                             random_state=random_state, notes=notes)
    result.requested = align
    out = base.copy()
    out["predicted_subclass"], out["confidence"] = _labels_and_confidence(classes, result.proba, ok)
    for k, cls in enumerate(classes):
        out[f"{_PROB}{cls}"] = np.where(ok, result.proba[:, k], np.nan)
    if adapted:
        out["predicted_subclass_unadapted"] = base["predicted_subclass"]
        out["confidence_unadapted"] = base["confidence"]
    if result.prior_free_proba is not None:
        label, conf = _labels_and_confidence(classes, result.prior_free_proba, ok)
        out["predicted_subclass_no_prior"], out["confidence_no_prior"] = label, conf
    notes += result.notes
    return ShiftOutcome(predictions=out, alarm=alarm, adapt=result, notes=notes)


def _adapt(model, X: pd.DataFrame, base: pd.DataFrame, ok: np.ndarray, method: str, *, user_prior,
           alarm, random_state: int, notes: list):
    """The shift handling ``method`` (not ``auto``) on the model's probabilities, then the user prior.

    A user prior is applied by :func:`ephys2tx.models.shift_adapt.adapt_predict`
    (``none``) to the model's own probabilities: it replaces the estimated class
    mix, whose call is kept as the prior-free one.

    Returns
    -------
    (AdaptResult, adapted)
        ``adapted``: whether the class mix was re-estimated.
    """
    from ephys2tx.models.label_shift import em_prior

    kind, pseudo_count, tested = parse_predict_method(method)
    classes = list(model.classes)
    pi_ref = reference_prior(model)
    proba = base[[f"{_PROB}{c}" for c in classes]].to_numpy(float)
    adapt = kind == "em" and bool(ok.any())
    if adapt and tested:
        test = class_mix_test(proba[ok], pi_ref)
        adapt = test["p_value"] < MIX_TEST_ALPHA
        notes.append(f"class-mix test (likelihood ratio, Saerens et al. 2002): chi2 = {test['statistic']:.1f} "
                     f"on {test['df']} df, p = {test['p_value']:.2g}: "
                     + ("the class mix differs from the training mix; EM re-estimates it" if adapt else
                        f"no evidence (at {MIX_TEST_ALPHA:g}) that the class mix differs; no adaptation"))
    ref = pd.DataFrame(columns=model.features)
    # the model's probabilities of X are in ``base``: adapt from them, without predicting X again
    result = adapt_predict(model, X, ref, [], "none", user_prior=user_prior, alarm=alarm,
                           random_state=random_state, proba=proba)
    result.method = method
    if adapt:
        est = em_prior(proba[ok], pi_ref, pseudo_count=pseudo_count)
        em_proba = np.full_like(proba, np.nan)
        em_proba[ok] = est.proba
        result.class_mix = est.prior
        notes.append("estimated class mix of the query (EM): " + ", ".join(
            f"{c} {v:.0%}" for c, v in zip(classes, est.prior)) + "; training mix: " + ", ".join(
            f"{c} {v:.0%}" for c, v in zip(classes, pi_ref)))
        if user_prior is None:
            result.proba = em_proba
        else:  # the user's prior replaces the estimated mix; the EM call is the prior-free one
            result.prior_free_proba = em_proba
            notes.append("the user's class prior replaces the EM-estimated class mix (the EM call is "
                         "kept as predicted_subclass_no_prior)")
    return result, adapt


def reference_sample(features: pd.DataFrame, labels, classes, *, max_rows: int = MAX_REFERENCE_ROWS,
                     random_state: int = 0) -> dict:
    """A class-stratified sample of at most ``max_rows`` training cells, as plain arrays.

    Stored by ``ephys2tx train`` in the model folder (``reference_sample.npz``) so
    that ``predict`` can test a query against the training cells.

    Parameters
    ----------
    features : DataFrame
        The training cells on the model's features, in the model's order.
    labels : array-like
        Their classes (each in ``classes``).
    classes : list of str
        The model's classes; labels are stored as their codes.
    max_rows : int
    random_state : int

    Returns
    -------
    dict
        ``X`` (float32, rows x features), ``y`` (int16 class codes), ``features``
        (unicode names, to check against the model at load time).
    """
    labels = np.asarray(labels, dtype=object)
    codes = pd.Series(labels).map({c: i for i, c in enumerate(classes)})
    if codes.isna().any():
        raise ValueError(f"labels outside the model's classes {list(classes)}.")
    codes = codes.to_numpy(dtype=np.int16)
    n = len(codes)
    rows = np.arange(n)
    if n > max_rows:
        from sklearn.model_selection import train_test_split

        rows, _ = train_test_split(rows, train_size=max_rows, stratify=codes, random_state=random_state)
        rows = np.sort(rows)
    return {"X": features.to_numpy(dtype=np.float32)[rows], "y": codes[rows],
            "features": np.asarray([str(f) for f in features.columns], dtype=str)}


def reference_frames(arrays: dict | None, model) -> tuple[pd.DataFrame | None, np.ndarray | None]:
    """The stored reference sample as (features, labels) for ``model``; (None, None) without one.

    Raises
    ------
    InputError
        A sample that does not fit the model (features, shapes, class codes).
    """
    if arrays is None:
        return None, None
    bad = InputError("the model folder's reference_sample.npz does not fit its model.json (features, "
                     "shapes or classes differ): the folder is damaged or was edited; train the model again.")
    try:
        X, y, names = arrays["X"], arrays["y"], [str(f) for f in arrays["features"]]
    except (KeyError, TypeError):
        raise bad from None
    K = len(model.classes)
    if (names != list(model.features) or X.ndim != 2 or X.shape != (len(y), len(names)) or y.ndim != 1
            or not np.issubdtype(X.dtype, np.floating) or not np.issubdtype(y.dtype, np.integer)
            or len(y) == 0 or y.min() < 0 or y.max() >= K or np.isinf(X).any()):
        raise bad
    return (pd.DataFrame(X.astype(float), columns=list(model.features)),
            np.asarray(model.classes, dtype=object)[y.astype(int)])
