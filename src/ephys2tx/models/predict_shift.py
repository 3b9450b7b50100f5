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
* ``auto``: no adaptation below :data:`~ephys2tx.models.shift_adapt.AUTO_MIN_CELLS`
  cells, else :data:`PREDICT_AUTO_METHOD`, the choice of the predict-route
  shift benchmark (``benchmarks/bench_predict_shift.py``, leave-one-scenario-out),
  read from ``predict_shift_defaults.json``.

A prior the user knows (``--layer``, ``--layer-column``, ``--prior``) enters as
in ``map``: it replaces any estimated class mix and is applied by Bayes' rule;
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

__all__ = ["MAX_REFERENCE_ROWS", "PREDICT_ALIGN_METHODS", "PREDICT_AUTO_METHOD", "PREDICT_DEFAULT_ALIGN",
           "predict_auto_method", "predict_with_shift", "reference_frames", "reference_sample"]

PREDICT_ALIGN_METHODS = ("auto", "none", "em")
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
    if PREDICT_AUTO_METHOD == "em":
        what = ("the query's class mix re-estimated by EM (Saerens et al. 2002) and the "
                "probabilities re-weighted to it")
    else:
        what = "no adaptation (the shift benchmark found re-estimating the class mix no better)"
    return PREDICT_AUTO_METHOD, f"{n_cells} cells, {detail}: {what}"


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
    align : {"auto", "none", "em"}
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
    if align not in PREDICT_ALIGN_METHODS:
        raise InputError(f"unknown predict --align {align!r}; use one of "
                         f"{', '.join(PREDICT_ALIGN_METHODS)} (`ephys2tx map` offers alignment "
                         "methods that refit on your features).")
    classes = list(model.classes)
    X = X.reindex(columns=model.features).astype(float)
    base = model.predict_frame(X)
    ok = (base["n_features"] > 0).to_numpy()
    alarm, notes = _alarm(model, X, base, reference, reference_labels,
                          n_permutations=n_permutations, random_state=random_state)
    method = align
    if align == "auto":
        method, reason = predict_auto_method(int(ok.sum()), alarm)
        notes.append(f"--align auto chose {method}: {reason}.")
    ref = reference if reference is not None else pd.DataFrame(columns=model.features)
    labels = reference_labels if reference_labels is not None else []
    # the model's probabilities of X are in ``base``: adapt from them, without predicting X again
    result = adapt_predict(model, X, ref, labels, method, user_prior=user_prior, alarm=alarm,
                           random_state=random_state,
                           proba=base[[f"{_PROB}{c}" for c in classes]].to_numpy(float))
    result.requested = align
    if method == "em" and result.class_mix is not None:
        notes.append("estimated class mix of the query (EM): " + ", ".join(
            f"{c} {v:.0%}" for c, v in zip(classes, result.class_mix)) + "; training mix: " + ", ".join(
            f"{c} {v:.0%}" for c, v in zip(classes, reference_prior(model))))
    out = base.copy()
    out["predicted_subclass"], out["confidence"] = _labels_and_confidence(classes, result.proba, ok)
    for k, cls in enumerate(classes):
        out[f"{_PROB}{cls}"] = np.where(ok, result.proba[:, k], np.nan)
    if method != "none":
        out["predicted_subclass_unadapted"] = base["predicted_subclass"]
        out["confidence_unadapted"] = base["confidence"]
    if result.prior_free_proba is not None:
        label, conf = _labels_and_confidence(classes, result.prior_free_proba, ok)
        out["predicted_subclass_no_prior"], out["confidence_no_prior"] = label, conf
    notes += result.notes
    return ShiftOutcome(predictions=out, alarm=alarm, adapt=result, notes=notes)


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
