"""Reference data and reference models: the core behind ``ephys2tx train/predict/map``.

A *reference model* is a classifier (random forest, boosted trees, attention
BiLSTM, or the mouse -> human transfer model) on canonical IPFX features plus

* a probability calibrator (temperature or isotonic) fitted on the
  out-of-fold probabilities of a k-fold cross-validation of the reference
  (:mod:`ephys2tx.models.calibration`; folds from :func:`ephys2tx.evaluation.splits.make_splits`);
* an out-of-distribution detector: Mahalanobis distance to the class means in
  the standardised feature space, combined with the model's uncertainty
  (``1 - confidence``), each z-scored on out-of-fold reference cells; the
  flag threshold is the 95th percentile of the out-of-fold reference scores
  (5% false alarms, :mod:`ephys2tx.models.ood`);
* what it was trained on: species, features, classes, data checksums, and the
  cross-validated metrics measured before the final fit.

It is saved with :func:`ephys2tx.models.persistence.save_model`; everything
beyond the estimator lives in ``model.json`` under ``extra["mapping"]``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from ephys2tx import CLASSES
from ephys2tx.errors import InputError, short_repr
from ephys2tx.evaluation.splits import check_foldable, make_splits
from ephys2tx.models.calibration import (calibrator_from_dict, cross_fitted_calibration,
                                         expected_calibration_error, make_calibrator,
                                         reliability_curve)
from ephys2tx.models.ood import make_ood, ood_from_dict

SPECIES = ("mouse", "human", "both")
MODELS = ("forest", "bilstm", "transfer")
MAPPING_FORMAT = 1
#: Forest used by ``map`` and by default in ``train``: fast to fit and to predict.
FOREST_TREES = 100
FOREST_MAX_SAMPLES = 0.5
FOREST_MIN_LEAF = 2
FALSE_ALARM_RATE = 0.05
#: Calibration methods; isotonic is the default: on the forest's vote shares (many exact
#: zeros) it reached ECE 0.021 (human) / 0.0075 (mouse) in reference CV, temperature 0.067 / 0.014.
CALIBRATIONS = ("isotonic", "temperature")
DEFAULT_CALIBRATION = "isotonic"
#: Registry name of the transfer model behind ``--model transfer``: design (d), mouse-view
#: stacking, the best transfer design of the study (README results, docs/transfer.md).
TRANSFER_DESIGN = "transfer_d"
_PROB_PREFIX = "prob_"


# --------------------------------------------------------------------------- reference data


@dataclass(frozen=True)
class Reference:
    """Reference cells in canonical feature names.

    Attributes
    ----------
    species : str
    features : DataFrame
        Canonical features (index: cell id).
    labels : Series
        Subclass per cell (:data:`ephys2tx.CLASSES`).
    groups : Series or None
        Donor per cell.
    checksums : dict
        ``file -> sha256`` of the tables read.
    held_out_features, held_out_labels : DataFrame / Series or None
        Cells of subclasses outside the four classes (mouse Sncg, Sst Chodl).
    """

    species: str
    features: pd.DataFrame
    labels: pd.Series
    groups: pd.Series | None
    checksums: dict
    held_out_features: pd.DataFrame | None = None
    held_out_labels: pd.Series | None = None


def reference_data(species: str, data_dir=None, *, verify: bool = True) -> Reference:
    """The reference cells of ``species`` (``mouse``, ``human`` or ``both``) in canonical names.

    Mouse: the VISp table converted by :func:`ephys2tx.features.harmonise.convert_mouse`,
    restricted to the bridge-verified :data:`~ephys2tx.features.harmonise.HARMONISED_FEATURES`.
    Human: the IPFX table as it is. Both: the two stacked on the harmonised features.
    """
    from ephys2tx.data.datasets import load_dataset
    from ephys2tx.features.harmonise import HARMONISED_FEATURES, convert_mouse

    if species not in SPECIES:
        raise InputError(f"unknown species {species!r}; choose from {', '.join(SPECIES)}.")
    harmonised = list(HARMONISED_FEATURES)
    parts = []
    if species in ("mouse", "both"):
        ds = load_dataset("mouse_visp", data_dir, verify=verify)
        held = ds.held_out
        parts.append(Reference(
            "mouse", convert_mouse(ds.features)[harmonised], ds.labels, ds.groups, dict(ds.checksums),
            None if held is None else convert_mouse(held.features)[harmonised],
            None if held is None else held.labels))
    if species in ("human", "both"):
        ds = load_dataset("human", data_dir, verify=verify)
        parts.append(Reference("human", ds.features, ds.labels, ds.groups, dict(ds.checksums)))
    if len(parts) == 1:
        return parts[0]
    mouse, human = parts
    groups = pd.concat([("mouse:" + mouse.groups.astype(str)) if mouse.groups is not None
                        else pd.Series("mouse", index=mouse.features.index),
                        "human:" + human.groups.astype(str)])
    return Reference("both", pd.concat([mouse.features, human.features[harmonised]]),
                     pd.concat([mouse.labels, human.labels]), groups,
                     {**mouse.checksums, **human.checksums},
                     mouse.held_out_features, mouse.held_out_labels)


# --------------------------------------------------------------------------- the model


def make_reference_estimator(model: str, features: list[str], *, random_state: int, n_estimators: int,
                    max_epochs: int | None):
    if model == "forest":
        from ephys2tx.models.baselines import make_rf

        forest = make_rf(n_estimators=n_estimators, random_state=random_state, n_jobs=-1)
        # half-size bootstrap samples and leaves of >= 2 cells: 3x faster to fit and to
        # predict than the study's forest, same cross-validated accuracy on the mouse reference
        return forest.set_params(forest__max_samples=FOREST_MAX_SAMPLES,
                                 forest__min_samples_leaf=FOREST_MIN_LEAF)
    if model == "bilstm":
        from ephys2tx.schemas import HUMAN_IPFX_SCHEMA
        from ephys2tx.models.bilstm import AttentionBiLSTMClassifier
        from ephys2tx.models.registry import family_positions

        families = family_positions(HUMAN_IPFX_SCHEMA.restricted_to(features), features)
        kwargs = {} if max_epochs is None else {"max_epochs": int(max_epochs),
                                                "patience": min(15, int(max_epochs))}
        return AttentionBiLSTMClassifier(families=families, random_state=random_state, **kwargs)
    if model == "transfer":
        from ephys2tx.models.registry import make_model

        est = make_model(TRANSFER_DESIGN, {}, [], random_state=random_state)
        if max_epochs is not None and "max_epochs" in est.get_params():  # the neural designs
            est.set_params(max_epochs=int(max_epochs), patience=min(est.patience, int(max_epochs)))
        return est
    from ephys2tx.models.map_models import MAP_MODELS, make_map_estimator

    if model in MAP_MODELS:  # hgb, ensemble, forest_aug (``map --model``)
        forest = make_reference_estimator("forest", features, random_state=random_state,
                                 n_estimators=n_estimators, max_epochs=max_epochs)
        return make_map_estimator(model, features, forest=forest, random_state=random_state)
    raise InputError(f"unknown model {model!r}; choose from {', '.join(MODELS)}.")


def model_input(model: str, values: np.ndarray, features: list[str]):
    """What the estimator reads: named columns for the transfer model, the bare array otherwise."""
    return pd.DataFrame(values, columns=features) if model == "transfer" else values


def stable_predict_proba(estimator, X, model: str) -> np.ndarray:
    """``predict_proba`` that does not depend on thread timing: same input, same bytes.

    A forest's threaded ``predict_proba`` adds the trees' votes in whatever order
    its threads finish; with one job per forest the order is fixed. Large
    inputs are split into row blocks predicted in parallel threads instead
    (each row's result does not depend on its block).
    """
    fixed = {k: 1 for k, v in estimator.get_params().items() if k.endswith("n_jobs") and v != 1}
    if fixed:
        estimator.set_params(**fixed)
    n_threads = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else (os.cpu_count() or 1), 8)
    if model != "forest" or n_threads < 2 or len(X) < 8192:
        return estimator.predict_proba(X)
    from concurrent.futures import ThreadPoolExecutor

    blocks = np.array_split(np.arange(len(X)), n_threads)
    with ThreadPoolExecutor(n_threads) as pool:
        parts = list(pool.map(lambda rows: estimator.predict_proba(X[rows]), blocks))
    return np.vstack(parts)


def softmax_safe(proba: np.ndarray) -> np.ndarray:
    proba = np.clip(np.asarray(proba, float), 0.0, 1.0)
    total = proba.sum(axis=1, keepdims=True)
    return proba / np.where(total > 0, total, 1.0)


@dataclass
class ReferenceModel:
    """A fitted classifier with its calibrator, OOD detector and training record.

    Attributes
    ----------
    estimator : fitted classifier
        Reads ``features`` in this order and predicts integer codes of ``classes``.
    features : list of str
        Canonical feature names.
    classes : list of str
        Subclasses, in the order of the probability columns.
    species, model : str
        What it was trained on and as (``forest``, ``bilstm``, ``transfer``).
    calibrator : TemperatureScaler or IsotonicCalibrator
    ood : MahalanobisOOD
        Distance part of the OOD score.
    ood_norm : dict
        Means/SDs that z-score distance and uncertainty, and the flag ``threshold``.
    record : dict
        Cell and class counts, CV metrics, calibration (ECE, reliability curves),
        reference medians; saved in ``model.json``.
    diagnostics : dict
        Out-of-fold arrays of the fit (not saved).
    """

    estimator: object
    features: list[str]
    classes: list[str]
    species: str
    model: str
    calibrator: object
    ood: object
    ood_norm: dict
    record: dict = field(default_factory=dict)
    #: Out-of-fold arrays of the fit (not saved): oof_ood_scores, oof_proba, oof_calibrated, codes.
    diagnostics: dict = field(default_factory=dict, repr=False)

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """Predictions for canonical features ``X`` (columns reindexed to :attr:`features`).

        Returns
        -------
        DataFrame
            ``predicted_subclass``, ``confidence``, ``prob_<class>``, ``ood_score``,
            ``ood_flag`` and ``n_features``; rows with no feature value get
            empty values (NaN / ``""``).
        """
        from ephys2tx.data.user_tables import check_finite, feature_frame

        X = feature_frame(X, self.features, where="the table to predict")
        check_finite(X, where="the features to predict")
        n_present = X.notna().sum(axis=1).to_numpy()
        ok = n_present > 0
        n = len(X)
        proba = np.full((n, len(self.classes)), np.nan)
        score = np.full(n, np.nan)
        if ok.any():
            values = X.to_numpy()[ok]
            raw = softmax_safe(stable_predict_proba(
                self.estimator, model_input(self.model, values, self.features), self.model))
            cal = self.calibrator.transform(raw)
            proba[ok] = cal
            score[ok] = self._ood_score(values, cal)
        out = pd.DataFrame(index=X.index)
        best = np.nanargmax(np.where(ok[:, None], proba, 0.0), axis=1)
        out["predicted_subclass"] = np.where(ok, np.asarray(self.classes, dtype=object)[best], "")
        out["confidence"] = np.where(ok, np.nanmax(np.where(ok[:, None], proba, 0.0), axis=1), np.nan)
        for k, cls in enumerate(self.classes):
            out[f"{_PROB_PREFIX}{cls}"] = proba[:, k]
        out["ood_score"] = score
        flag = np.where(ok, score > self.ood_norm["threshold"], False)
        out["ood_flag"] = pd.array(np.where(ok, flag, None), dtype="boolean")
        out["n_features"] = n_present
        return out

    def _ood_score(self, values: np.ndarray, calibrated: np.ndarray) -> np.ndarray:
        return combined_ood_score(self.ood.score_samples(values), 1.0 - calibrated.max(axis=1),
                                  self.ood_norm)


def combined_ood_score(distance: np.ndarray, uncertainty: np.ndarray, norm: dict) -> np.ndarray:
    """z(distance) + z(1 - confidence), with means/SDs measured on out-of-fold reference cells."""
    return ((distance - norm["distance_mean"]) / norm["distance_sd"]
            + (uncertainty - norm["uncertainty_mean"]) / norm["uncertainty_sd"])


def reference_folds(y: np.ndarray, groups, n_splits: int, random_state: int) -> np.ndarray:
    """Fold id per row (:func:`ephys2tx.evaluation.splits.make_splits`, one repeat): donor-grouped
    stratified folds when there are at least ``n_splits`` donors, else stratified folds."""
    grouped = groups is not None and pd.Series(groups).nunique() >= n_splits
    folds = make_splits(y, np.asarray(groups) if grouped else None,
                        scheme="donor" if grouped else "stratified", n_splits=n_splits,
                        n_repeats=1, random_state=random_state)
    fold_ids = np.full(len(y), -1)
    for fold in folds:
        fold_ids[fold.test] = fold.fold
    return fold_ids


def fit_reference_model(X: pd.DataFrame, y: pd.Series, *, species: str, model: str = "forest",
                        groups=None, n_splits: int = 5, calibration: str = DEFAULT_CALIBRATION,
                        n_estimators: int = FOREST_TREES, max_epochs: int | None = None,
                        random_state: int = 0, source: tuple | None = None,
                        progress: Callable[[str], None] | None = None) -> ReferenceModel:
    """Cross-validate, calibrate, set the OOD threshold, then fit on all cells.

    Parameters
    ----------
    X : DataFrame
        Canonical features of the reference cells.
    y : Series
        Subclass labels (a subset of :data:`ephys2tx.CLASSES`).
    species : str
        Recorded in the model.
    model : {"forest", "bilstm", "transfer"}
        ``transfer`` is the mouse -> human model; ``X`` are then human cells
        (all IPFX features) and ``source`` the mouse cells.
    groups : array-like, optional
        Donor per cell (folds never split a donor).
    n_splits : int
        Folds of the cross-validation that measures the metrics, fits the
        calibrator and sets the OOD threshold.
    calibration : {"isotonic", "temperature"}
        Fitted on the out-of-fold probabilities of the cross-validation.
    n_estimators : int
        Trees of the forest.
    max_epochs : int, optional
        Epochs of the BiLSTM (default: its own; the transfer model has no epochs).
    random_state : int
    source : (DataFrame, Series), optional
        Mouse VISp cells (original column names) and their subclasses: the
        transfer model's source data, training data in every fold.
    progress : callable, optional
        Called with a short status line.
    """
    say = progress or (lambda msg: None)
    features = [str(c) for c in X.columns]
    check_foldable(np.asarray(y, dtype=object), n_splits=n_splits, where=f"the {species} reference")
    classes = [c for c in CLASSES if c in set(y)]
    if len(classes) < 2:
        raise InputError(f"the reference has {len(classes)} class(es); need at least two.")
    codes = pd.Series(y).map({c: i for i, c in enumerate(classes)}).to_numpy()
    if np.isnan(codes.astype(float)).any():
        raise InputError(f"reference labels outside {classes}; keep only {', '.join(CLASSES)}.")
    codes = codes.astype(int)
    values = X.to_numpy(dtype=float)
    fit_params = {}
    if model == "transfer":
        if source is None:
            raise InputError("model 'transfer' needs the mouse source cells: source=(X_mouse, y_mouse).")
        X_source, y_source = source
        keep = pd.Series(y_source).isin(classes).to_numpy()
        fit_params = {"X_source": X_source[keep],
                      "y_source": pd.Series(y_source)[keep].map(classes.index).to_numpy(int)}
    base = make_reference_estimator(model, features, random_state=random_state, n_estimators=n_estimators,
                           max_epochs=max_epochs)
    fold_ids = reference_folds(codes, groups, n_splits, random_state)
    proba = np.zeros((len(codes), len(classes)))
    distance = np.zeros(len(codes))
    started = time.perf_counter()
    for k in range(n_splits):
        say(f"cross-validation fold {k + 1}/{n_splits}")
        train, test = fold_ids != k, fold_ids == k
        est = clone(base).fit(model_input(model, values[train], features), codes[train], **fit_params)
        proba[test] = softmax_safe(stable_predict_proba(
            est, model_input(model, values[test], features), model))
        det = make_ood("mahalanobis", false_alarm_rate=FALSE_ALARM_RATE).fit(values[train], codes[train])
        distance[test] = det.score_samples(values[test])
    calibrated = cross_fitted_calibration(proba, codes, fold_ids, calibration)
    pred = calibrated.argmax(axis=1)
    cv = {"n_splits": n_splits, "grouped_by_donor": groups is not None,
          "accuracy": float(accuracy_score(codes, pred)),
          "balanced_accuracy": float(balanced_accuracy_score(codes, pred)),
          "macro_f1": float(f1_score(codes, pred, average="macro")),
          "seconds": round(time.perf_counter() - started, 2)}
    calib = {"method": calibration,
             "ece_before": expected_calibration_error(proba, codes),
             "ece_after": expected_calibration_error(calibrated, codes),
             "reliability_before": reliability_curve(proba, codes),
             "reliability_after": reliability_curve(calibrated, codes)}
    uncertainty = 1.0 - calibrated.max(axis=1)
    norm = {"distance_mean": float(distance.mean()), "distance_sd": float(distance.std() or 1.0),
            "uncertainty_mean": float(uncertainty.mean()),
            "uncertainty_sd": float(uncertainty.std() or 1.0)}
    oof_scores = combined_ood_score(distance, uncertainty, norm)
    norm["threshold"] = float(np.quantile(oof_scores, 1.0 - FALSE_ALARM_RATE))
    norm["false_alarm_rate"] = FALSE_ALARM_RATE

    say("final fit on all reference cells")
    calibrator = make_calibrator(calibration).fit(proba, codes)
    estimator = clone(base).fit(model_input(model, values, features), codes, **fit_params)
    detector = make_ood("mahalanobis", false_alarm_rate=FALSE_ALARM_RATE).fit(values, codes)
    record = {"n_cells": len(codes), "class_counts": pd.Series(y).value_counts().to_dict(),
              "cv": cv, "calibration": calib,
              "source_cells": len(fit_params["y_source"]) if fit_params else 0,
              "reference_medians": {f: float(v) for f, v in X.median().items()}}
    diagnostics = {"oof_ood_scores": oof_scores, "oof_proba": proba, "oof_calibrated": calibrated,
                   "codes": codes, "fold_ids": fold_ids}
    return ReferenceModel(estimator=estimator, features=features, classes=classes, species=species,
                          model=model, calibrator=calibrator, ood=detector, ood_norm=norm,
                          record=record, diagnostics=diagnostics)


def save_reference_model(ref: ReferenceModel, directory, *, checksums: dict | None = None,
                         overwrite: bool = False, reference_sample: dict | None = None) -> Path:
    """Save with :func:`ephys2tx.models.persistence.save_model` (atomic), with an optional
    sample of the training cells (:func:`ephys2tx.models.predict_shift.reference_sample`)."""
    from ephys2tx.models.persistence import save_model

    mapping = {"format": MAPPING_FORMAT, "species": ref.species, "model": ref.model,
               "features": ref.features, "classes": ref.classes,
               "calibrator": ref.calibrator.to_dict(), "ood": ref.ood.to_dict(),
               "ood_norm": ref.ood_norm, "record": ref.record}
    return save_model(ref.estimator, directory, training_checksums=checksums or {},
                      extra={"mapping": mapping}, overwrite=overwrite, reference_sample=reference_sample)


def _check_mapping_record(path: Path, mapping: dict, estimator) -> None:
    """The ``extra.mapping`` record of ``model.json`` is consistent with itself and the estimator."""
    from ephys2tx.models.map_models import MAP_MODELS

    def bad(field: str, why: str) -> InputError:
        return InputError(f"{path} field mapping.{field} {why}; the model folder is damaged or was "
                          "edited: re-train it with `ephys2tx train`.")

    for field in ("features", "classes"):
        names = mapping.get(field)
        if not isinstance(names, list) or not names or not all(
                isinstance(n, str) and n for n in names):
            raise bad(field, "must be a non-empty list of names")
        if len(set(names)) != len(names):
            raise bad(field, "names the same entry twice")
    if mapping.get("species") not in SPECIES:
        raise bad("species", f"is {mapping.get('species')!r}, not one of {', '.join(SPECIES)}")
    if mapping.get("model") not in (*MODELS, *MAP_MODELS):
        raise bad("model", f"is {mapping.get('model')!r}, not a model of ephys2tx")
    if not callable(getattr(estimator, "predict_proba", None)):
        raise bad("model", f"is {mapping['model']!r}, but the saved weights hold a "
                  f"{type(estimator).__name__}, not a classifier with class probabilities")
    fitted = [str(c) for c in getattr(estimator, "classes_", mapping["classes"])]
    codes = [str(i) for i in range(len(mapping["classes"]))]  # the estimator predicts class codes
    if fitted not in (mapping["classes"], codes):
        raise bad("classes", f"is {mapping['classes']}, but the saved estimator predicts "
                  f"{len(fitted)} classes ({', '.join(fitted)})")
    # training writes the classes in the order of CLASSES, and the estimator predicts their codes:
    # a reordered list would give every cell another class's name
    if mapping["classes"] != [c for c in CLASSES if c in set(mapping["classes"])]:
        raise bad("classes", f"is {mapping['classes']}, not classes of {', '.join(CLASSES)} in that "
                  "order (as training writes them: the estimator predicts their positions)")
    n_in = getattr(estimator, "n_features_in_", len(mapping["features"]))
    if n_in != len(mapping["features"]):
        raise bad("features", f"lists {len(mapping['features'])} features, but the saved estimator "
                  f"takes {n_in}")
    # the training class mix (predict's EM and label-shift prior): a missing or edited count made
    # it uniform, or negative, without a word
    record = mapping.get("record")
    counts = record.get("class_counts") if isinstance(record, dict) else None
    numbers = isinstance(counts, dict) and all(
        type(v) in (int, float) and math.isfinite(v) and v >= 0 for v in counts.values())
    if not numbers or sorted(map(str, counts)) != sorted(mapping["classes"]) or not sum(counts.values()) > 0:
        raise bad("record.class_counts", f"is {short_repr(counts)}; it must give each class "
                  f"({', '.join(mapping['classes'])}) its number of training cells (>= 0, not all 0)")


def load_reference_model(directory) -> ReferenceModel:
    """Load a model directory written by :func:`save_reference_model`.

    Raises
    ------
    InputError
        Not a model directory, another major version, a corrupted weights
        file (sha256), or a model not written by ``ephys2tx train``/``map``.
    """
    from ephys2tx.models.persistence import load_model, read_model_metadata

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"model directory {directory} is a file; give the folder written by "
                         "`ephys2tx train --out DIR`.")
    if not directory.is_dir():
        raise InputError(f"model directory {directory} does not exist; train one with "
                         "`ephys2tx train --out DIR`.")
    meta = read_model_metadata(directory)
    mapping = (meta.get("extra") or {}).get("mapping")
    if not isinstance(mapping, dict) or mapping.get("format") != MAPPING_FORMAT:
        raise InputError(f"{directory} holds a model without calibration/OOD information (not "
                         "written by `ephys2tx train`); re-train it with `ephys2tx train`.")
    estimator = load_model(directory)
    _check_mapping_record(directory / "model.json", mapping, estimator)
    try:
        norm = mapping["ood_norm"]
        keys = ("distance_mean", "distance_sd", "uncertainty_mean", "uncertainty_sd", "threshold")
        if not isinstance(norm, dict) or not all(
                isinstance(norm.get(k), (int, float)) and math.isfinite(norm[k]) for k in keys):
            raise ValueError(f"ood_norm needs the finite numbers {', '.join(keys)}")
        ref = ReferenceModel(estimator=estimator, features=[str(f) for f in mapping["features"]],
                             classes=[str(c) for c in mapping["classes"]],
                             species=str(mapping["species"]), model=str(mapping["model"]),
                             calibrator=calibrator_from_dict(mapping["calibrator"]),
                             ood=ood_from_dict(mapping["ood"]), ood_norm=dict(norm),
                             record=dict(mapping.get("record", {})))
        # the calibrator and the OOD score must fit the estimator's features and classes: one
        # cell through the whole model finds any mismatch here, not in the middle of a prediction
        ref.predict_frame(pd.DataFrame(np.zeros((1, len(ref.features))), columns=ref.features))
        return ref
    except InputError as exc:  # e.g. the calibrator's own checks: say which file
        if str(directory / "model.json") in str(exc):
            raise
        raise InputError(f"{directory / 'model.json'} has a bad calibration/OOD field: {exc} "
                         "Re-train the model with `ephys2tx train`.") from exc
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(f"{directory / 'model.json'} has a missing or bad calibration/OOD field "
                         f"({type(exc).__name__}: {first[:200]}); re-train the model with "
                         "`ephys2tx train`.") from exc


def combine_reference_models(models, *, calibration: str = "isotonic") -> ReferenceModel:
    """The ``ensemble`` reference model built from fitted ones, without refitting anything.

    ``fit_reference_model(..., model="ensemble")`` fits the forest and the boosted
    trees on the same folds and calibrates the mean of their raw probabilities;
    given those two fitted reference models (same features, classes and folds),
    this returns the same thing: a soft-voting estimator over their final
    estimators, an isotonic calibrator on the mean of their out-of-fold raw
    probabilities, and the OOD normalisation recomputed for the new confidence.
    """
    from sklearn.metrics import accuracy_score, f1_score

    from ephys2tx.models.map_models import SoftVotingClassifier

    first = models[0]
    for m in models[1:]:
        if m.features != first.features or m.classes != first.classes or not np.array_equal(
                m.diagnostics["fold_ids"], first.diagnostics["fold_ids"]):
            raise ValueError("reference models to combine need the same features, classes and folds.")
    codes, folds = first.diagnostics["codes"], first.diagnostics["fold_ids"]
    raw = np.mean([m.diagnostics["oof_proba"] for m in models], axis=0)
    calibrated = cross_fitted_calibration(raw, codes, folds, calibration)
    # the distance part of the OOD score is the same for all (same features and folds)
    norm0 = first.ood_norm
    u0 = 1.0 - first.diagnostics["oof_calibrated"].max(axis=1)
    distance = ((first.diagnostics["oof_ood_scores"] - (u0 - norm0["uncertainty_mean"])
                 / norm0["uncertainty_sd"]) * norm0["distance_sd"] + norm0["distance_mean"])
    u = 1.0 - calibrated.max(axis=1)
    norm = {"distance_mean": norm0["distance_mean"], "distance_sd": norm0["distance_sd"],
            "uncertainty_mean": float(u.mean()), "uncertainty_sd": float(u.std() or 1.0),
            "false_alarm_rate": norm0.get("false_alarm_rate", 0.05)}
    scores = combined_ood_score(distance, u, norm)
    norm["threshold"] = float(np.quantile(scores, 1.0 - norm["false_alarm_rate"]))
    voting = SoftVotingClassifier([m.estimator for m in models])
    voting.estimators_ = [m.estimator for m in models]
    voting.classes_ = first.estimator.classes_ if hasattr(first.estimator, "classes_") else np.arange(
        len(first.classes))
    voting.n_features_in_ = len(first.features)
    pred = calibrated.argmax(axis=1)
    record = {**first.record, "cv": {**first.record.get("cv", {}),
                                     "accuracy": float(accuracy_score(codes, pred)),
                                     "macro_f1": float(f1_score(codes, pred, average="macro"))}}
    return ReferenceModel(estimator=voting, features=list(first.features), classes=list(first.classes),
                          species=first.species, model="ensemble",
                          calibrator=make_calibrator(calibration).fit(raw, codes), ood=first.ood,
                          ood_norm=norm, record=record,
                          diagnostics={"oof_ood_scores": scores, "oof_proba": raw,
                                       "oof_calibrated": calibrated, "codes": codes, "fold_ids": folds})


def reference_feature_table(species: str, data_dir=None, *, verify: bool = True) -> pd.DataFrame:
    """The features a reference has (``ephys2tx features``): canonical name, unit, family, coverage.

    Parameters
    ----------
    species : {"mouse", "human"}
    data_dir : path, optional

    Returns
    -------
    DataFrame
        One row per feature of the reference: ``feature``, ``unit``, ``family``,
        ``cells`` (with a value), ``median``, ``plausible range`` (the unit check's),
        and ``from`` (the shipped-map column it is read from in the reference's
        own naming, with the conversion).
    """
    from ephys2tx.features.canonical import CANONICAL_FEATURES
    from ephys2tx.features.column_map import load_column_map

    ref = reference_data(species, data_dir, verify=verify)
    source_map = load_column_map("allen_celltypes" if species == "mouse" else "ipfx")
    by_name = {e.name: e for e in source_map.entries}
    rows = []
    for name in ref.features.columns:
        spec = CANONICAL_FEATURES[name]
        values = ref.features[name]
        entry = by_name.get(name)
        rows.append({"feature": name, "unit": spec.unit, "family": spec.family,
                     "cells": int(values.notna().sum()), "median": float(values.median()),
                     "plausible range": f"[{spec.low:g}, {spec.high:g}]",
                     "from": entry.describe().split(" -> ")[0] if entry else ""})
    return pd.DataFrame(rows)
