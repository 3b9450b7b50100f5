"""Train, save, predict and reference-map: the library behind ``ephys2tx train/predict/map``.

A *reference model* is a classifier (random forest, attention BiLSTM, or the
mouse -> human transfer model) on canonical IPFX features plus

* a probability calibrator (temperature or isotonic) fitted on the
  out-of-fold probabilities of a k-fold cross-validation of the reference
  (:mod:`ephys2tx.models.calibration`);
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

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

import ephys2tx
from ephys2tx import CLASSES
from ephys2tx.data.paths import resolve_data_dir
from ephys2tx.data.user_tables import write_csv
from ephys2tx.errors import InputError
from ephys2tx.evaluation.splits import check_foldable
from ephys2tx.models.calibration import (calibrator_from_dict, cross_fitted_calibration,
                                         expected_calibration_error, make_calibrator,
                                         reliability_curve)
from ephys2tx.models.ood import make_ood, ood_from_dict
from ephys2tx.models.persistence import MODEL_OUTPUT_KIND
from ephys2tx.safety import check_output_dir, check_output_file, check_writable_dir, is_own_output

__all__ = ["MODELS", "SPECIES", "MapResult", "PredictResult", "Reference", "ReferenceModel",
           "TrainResult", "fit_reference_model", "load_reference_model", "map_cells", "predict",
           "reference_data", "save_reference_model", "shift_experiment", "summarise_shift", "train"]

SPECIES = ("mouse", "human", "both")
MODELS = ("forest", "bilstm", "transfer")
MAPPING_FORMAT = 1
#: Kind of a ``map`` output folder in its ownership marker (:mod:`ephys2tx.safety`).
MAPPING_OUTPUT_KIND = "mapping"
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


def _make_estimator(model: str, features: list[str], *, random_state: int, n_estimators: int,
                    max_epochs: int | None):
    if model == "forest":
        from ephys2tx.models.baselines import make_rf

        forest = make_rf(n_estimators=n_estimators, random_state=random_state, n_jobs=-1)
        # half-size bootstrap samples and leaves of >= 2 cells: 3x faster to fit and to
        # predict than the study's forest, same cross-validated accuracy on the mouse reference
        return forest.set_params(forest__max_samples=FOREST_MAX_SAMPLES,
                                 forest__min_samples_leaf=FOREST_MIN_LEAF)
    if model == "bilstm":
        from ephys2tx.features.families import HUMAN_IPFX_SCHEMA
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
        forest = _make_estimator("forest", features, random_state=random_state,
                                 n_estimators=n_estimators, max_epochs=max_epochs)
        return make_map_estimator(model, features, forest=forest, random_state=random_state)
    raise InputError(f"unknown model {model!r}; choose from {', '.join(MODELS)}.")


def _model_input(model: str, values: np.ndarray, features: list[str]):
    """What the estimator reads: named columns for the transfer model, the bare array otherwise."""
    return pd.DataFrame(values, columns=features) if model == "transfer" else values


def _stable_predict_proba(estimator, X, model: str) -> np.ndarray:
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


def _softmax_safe(proba: np.ndarray) -> np.ndarray:
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
        from ephys2tx.data.user_tables import check_finite

        X = X.reindex(columns=self.features).astype(float)
        check_finite(X, where="the features to predict")
        n_present = X.notna().sum(axis=1).to_numpy()
        ok = n_present > 0
        n = len(X)
        proba = np.full((n, len(self.classes)), np.nan)
        score = np.full(n, np.nan)
        if ok.any():
            values = X.to_numpy()[ok]
            raw = _softmax_safe(_stable_predict_proba(
                self.estimator, _model_input(self.model, values, self.features), self.model))
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


def _folds(y: np.ndarray, groups, n_splits: int, random_state: int) -> np.ndarray:
    """Fold id per row: donor-grouped stratified folds when donors are known."""
    fold_ids = np.full(len(y), -1)
    placeholder = np.zeros((len(y), 1))
    if groups is not None and pd.Series(groups).nunique() >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
        parts = splitter.split(placeholder, y, np.asarray(groups))
    else:
        parts = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state).split(placeholder, y)
    for k, (_, test) in enumerate(parts):
        fold_ids[test] = k
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
    base = _make_estimator(model, features, random_state=random_state, n_estimators=n_estimators,
                           max_epochs=max_epochs)
    fold_ids = _folds(codes, groups, n_splits, random_state)
    proba = np.zeros((len(codes), len(classes)))
    distance = np.zeros(len(codes))
    started = time.perf_counter()
    for k in range(n_splits):
        say(f"cross-validation fold {k + 1}/{n_splits}")
        train, test = fold_ids != k, fold_ids == k
        est = clone(base).fit(_model_input(model, values[train], features), codes[train], **fit_params)
        proba[test] = _softmax_safe(_stable_predict_proba(
            est, _model_input(model, values[test], features), model))
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
    estimator = clone(base).fit(_model_input(model, values, features), codes, **fit_params)
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
                         overwrite: bool = False) -> Path:
    """Save with :func:`ephys2tx.models.persistence.save_model` (atomic)."""
    from ephys2tx.models.persistence import save_model

    mapping = {"format": MAPPING_FORMAT, "species": ref.species, "model": ref.model,
               "features": ref.features, "classes": ref.classes,
               "calibrator": ref.calibrator.to_dict(), "ood": ref.ood.to_dict(),
               "ood_norm": ref.ood_norm, "record": ref.record}
    return save_model(ref.estimator, directory, training_checksums=checksums or {},
                      extra={"mapping": mapping}, overwrite=overwrite)


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
    try:
        return ReferenceModel(estimator=estimator, features=[str(f) for f in mapping["features"]],
                              classes=[str(c) for c in mapping["classes"]],
                              species=str(mapping["species"]), model=str(mapping["model"]),
                              calibrator=calibrator_from_dict(mapping["calibrator"]),
                              ood=ood_from_dict(mapping["ood"]), ood_norm=dict(mapping["ood_norm"]),
                              record=dict(mapping.get("record", {})))
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise InputError(f"{directory / 'model.json'} has a missing or bad calibration/OOD field "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         "re-train the model with `ephys2tx train`.") from exc


# --------------------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` wrote."""

    path: Path
    model: ReferenceModel


def train(species: str, model: str, out, *, data_dir=None, n_splits: int = 5,
          calibration: str = DEFAULT_CALIBRATION, n_estimators: int = FOREST_TREES,
          max_epochs: int | None = None, random_state: int = 0, overwrite: bool = False,
          verify: bool = True, progress=None) -> TrainResult:
    """Train on the full reference of ``species`` and save a model directory at ``out``.

    Parameters
    ----------
    species : {"mouse", "human", "both"}
        ``both`` stacks the two references on the 21 harmonised features.
    model : {"forest", "bilstm", "transfer"}
        ``transfer`` (human only) trains on the human cells with the mouse
        VISp cells as source data; the model directory records both tables'
        checksums.
    out : path
        Model directory to write (atomically).
    data_dir : path, optional
    n_splits, calibration, n_estimators, max_epochs, random_state :
        See :func:`fit_reference_model`.
    overwrite : bool
        Replace an existing ``out``.
    verify : bool
        Check the data files' sha256.
    progress : callable, optional

    Raises
    ------
    InputError
        Unknown species/model/calibration, ``transfer`` for a species other
        than human, or an existing ``out`` without ``overwrite``.
    """
    out = Path(out)
    if model not in MODELS:
        raise InputError(f"unknown model {model!r}; choose from {', '.join(MODELS)}.")
    if species not in SPECIES:
        raise InputError(f"unknown species {species!r}; choose from {', '.join(SPECIES)}.")
    if model == "transfer" and species != "human":
        raise InputError(f"--model transfer predicts human subclasses (human cells, with mouse cells "
                         f"as source data), not {species}; use --species human.")
    if calibration not in CALIBRATIONS:
        raise InputError(f"unknown calibration {calibration!r}; use {' or '.join(CALIBRATIONS)}.")
    check_output_dir(out, kind=MODEL_OUTPUT_KIND, overwrite=overwrite,
                     inputs=[resolve_data_dir(data_dir)])
    ref = reference_data(species, data_dir, verify=verify)
    checksums, source = dict(ref.checksums), None
    if model == "transfer":
        from ephys2tx.data.datasets import load_dataset

        mouse = load_dataset("mouse_visp", data_dir, verify=verify)
        source = (mouse.features, mouse.labels)
        checksums.update(mouse.checksums)
    fitted = fit_reference_model(ref.features, ref.labels, species=species, model=model,
                                 groups=ref.groups, n_splits=n_splits, calibration=calibration,
                                 n_estimators=n_estimators, max_epochs=max_epochs,
                                 random_state=random_state, source=source, progress=progress)
    path = save_reference_model(fitted, out, checksums=checksums, overwrite=overwrite)
    return TrainResult(path=path, model=fitted)


# --------------------------------------------------------------------------- query tables


@dataclass(frozen=True)
class Query:
    """A user table converted to canonical features."""

    ids: pd.Index
    id_column: str
    features: pd.DataFrame
    sources: dict
    column_map: str
    warnings: list


def read_query(input_path, *, column_map=None, id_column: str | None = None,
               force: bool = False) -> Query:
    """Read a user table, apply the column map and check units/ranges.

    Parameters
    ----------
    input_path : path
        CSV, TSV, Parquet or Excel table, one row per cell.
    column_map : path, shipped map name or ColumnMap, optional
        Default: the shipped map matching the most columns.
    id_column : str, optional
        Default: the map's ``id_column``, else detected.
    force : bool
        Turn unit/range problems into warnings.

    Raises
    ------
    InputError
        Any bad input; a unit/range issue unless ``force``.
    """
    from ephys2tx.data.missing_codes import mask_missing_codes
    from ephys2tx.data.user_tables import check_finite, read_user_table
    from ephys2tx.features.canonical import check_units
    from ephys2tx.features.column_map import (apply_column_map, describe_detection,
                                              resolve_column_map)

    cmap = None if column_map is None else resolve_column_map(column_map, ())
    if id_column is None and cmap is not None:
        id_column = cmap.id_column
    table = read_user_table(input_path, id_column=id_column, id_hint="name it with --id-column")
    cmap = cmap or resolve_column_map(None, table.data.columns, table=table.data)
    # Missing-value codes (0 mV thresholds, 0 s ISIs...) are NaN, in the table's naming and in IPFX's.
    canonical, sources = apply_column_map(cmap, mask_missing_codes(table.data)[0], where=str(input_path))
    check_finite(canonical, where=str(input_path), sources=sources)
    canonical = mask_missing_codes(canonical)[0]
    notes = [note for note in [describe_detection(cmap)] if note]
    for issue in check_units(canonical, sources):
        if not force:
            raise InputError(issue.message())
        notes.append("continuing (--force): " + issue.message())
    return Query(ids=table.data.index, id_column=table.id_column, features=canonical,
                 sources=sources, column_map=cmap.name, warnings=notes)


def _is_predictions_table(path: Path) -> bool:
    """Whether ``path`` looks like a predictions CSV written by ``ephys2tx predict`` (its header)."""
    try:
        with open(path, encoding="utf-8") as handle:
            header = handle.readline(65536)
    except (OSError, UnicodeDecodeError):
        return False
    names = {c.strip().strip('"') for c in header.rstrip("\r\n").split(",")}
    return {"predicted_subclass", "confidence", "ood_score", "ood_flag", "n_features"} <= names


def _input_paths(*paths) -> list:
    """The given paths that name files or folders (a shipped column map name does not)."""
    return [p for p in paths if isinstance(p, (str, os.PathLike)) and Path(p).exists()]


def check_cache_dir(cache: Path, out_dir: Path) -> None:
    """The reference-model cache must be a writable folder outside the output folder."""
    real_cache, real_out = Path(os.path.abspath(cache)), Path(os.path.abspath(out_dir))
    if real_cache == real_out or real_out in real_cache.parents:
        raise InputError(f"--cache-dir {cache} is inside the output folder {out_dir}; put the cache "
                         "elsewhere.")
    check_writable_dir(cache, what="reference-model cache (--cache-dir or $EPHYS2TX_CACHE)")


def _assemble_output(query: Query, predictions: pd.DataFrame) -> pd.DataFrame:
    out = predictions.copy()
    out.insert(0, query.id_column, query.ids.astype(str))
    return out.reset_index(drop=True)


def _prediction_warnings(query: Query, ref: ReferenceModel, predictions: pd.DataFrame) -> list[str]:
    notes = list(query.warnings)
    missing = [f for f in ref.features if f not in query.features.columns
               or query.features[f].isna().all()]
    if missing:
        notes.append(f"{len(missing)} of the model's {len(ref.features)} features are absent from "
                     f"the input (imputed with reference medians), e.g. {missing[0]}; "
                     "`ephys2tx map` trains a reference model on exactly the features you have.")
    empty = predictions.index[predictions["n_features"] == 0]
    if len(empty):
        notes.append(f"{len(empty)} cell(s) have no value for any model feature and get no "
                     f"prediction (kept, empty), e.g. {empty[0]}.")
    return notes


@dataclass(frozen=True)
class PredictResult:
    """What ``predict`` computed and wrote."""

    path: Path
    predictions: pd.DataFrame
    warnings: list
    model: ReferenceModel
    alarm: object = None  # ShiftReport from the OOD flags (ephys2tx.models.shift_alarm.ood_alarm)


def predict(model_dir, input_path, out, *, column_map=None, id_column: str | None = None,
            force: bool = False, overwrite: bool = False, layer: str | None = None,
            layer_column: str | None = None, prior: str | None = None, data_dir=None,
            verify: bool = True) -> PredictResult:
    """Predict subclass, calibrated probabilities, confidence and OOD flag for a user table.

    Parameters
    ----------
    model_dir : path
        Written by :func:`train` / :func:`save_reference_model`.
    input_path : path
        CSV, TSV, Parquet or Excel table, one row per cell.
    out : path
        Output CSV (written atomically): the id column, then the columns of
        :meth:`ReferenceModel.predict_frame`, one row per input row in order.
    column_map, id_column, force :
        See :func:`read_query`.
    overwrite : bool
        Replace an existing ``out``.
    layer, layer_column, prior : str, optional
        A class prior the user knows (see :func:`map_cells`), applied by Bayes'
        rule; the prior-free call is kept beside. A layer prior reads the
        reference metadata from ``data_dir``.
    data_dir, verify :
        Where the reference metadata is (only for ``layer``/``layer_column``).

    Returns
    -------
    PredictResult

    Raises
    ------
    InputError
        ``out`` exists without ``overwrite``; a missing, incompatible or
        corrupted model directory; any bad table or column map; no model
        feature in the table. Nothing is written then.
    """
    out = check_output_file(out, overwrite=overwrite, recognise=_is_predictions_table,
                            inputs=_input_paths(model_dir, input_path, column_map),
                            written_by="ephys2tx predict (no predictions header)")
    ref = load_reference_model(model_dir)
    query = read_query(input_path, column_map=column_map, id_column=id_column, force=force)
    if not set(ref.features) & set(query.features.columns):
        raise InputError(f"none of the model's features is in {input_path} after column map "
                         f"{query.column_map!r}; check the column map (model features start "
                         f"with {ref.features[:3]}).")
    predictions = ref.predict_frame(query.features)
    notes = _prediction_warnings(query, ref, predictions)
    from ephys2tx.data.layers import user_class_prior
    from ephys2tx.models.shift_adapt import prior_predictions, read_layer_column
    from ephys2tx.models.shift_alarm import ood_alarm

    layer_values = None if layer_column is None else read_layer_column(
        input_path, layer_column, query.ids, id_column=query.id_column)
    user_prior, prior_notes = user_class_prior(ref.classes, ref.species, len(predictions), layer=layer,
                                               layer_values=layer_values, prior=prior,
                                               data_dir=data_dir, verify=verify)
    if user_prior is not None:
        predictions = prior_predictions(ref, predictions, user_prior)
        notes += prior_notes
    alarm = ood_alarm(predictions["ood_flag"], ood_expected=float(ref.ood_norm.get("false_alarm_rate", 0.05)))
    frame = _assemble_output(query, predictions)
    write_csv(frame, out)
    return PredictResult(path=out, predictions=frame, warnings=notes, model=ref, alarm=alarm)


# --------------------------------------------------------------------------- map


def default_cache_dir() -> Path:
    """User cache of reference models (``$EPHYS2TX_CACHE`` overrides)."""
    env = os.environ.get("EPHYS2TX_CACHE", "")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ephys2tx")) / "reference_models"


def cache_key(species: str, features, checksums: dict, *, model: str = "forest",
              n_estimators: int = FOREST_TREES, random_state: int = 0) -> str:
    """sha256 of species + feature set + data checksums + package version + model settings."""
    payload = {"species": species, "features": sorted(features), "checksums": dict(sorted(checksums.items())),
               "version": ephys2tx.__version__, "model": model, "n_estimators": n_estimators,
               "max_samples": FOREST_MAX_SAMPLES, "min_samples_leaf": FOREST_MIN_LEAF,
               "random_state": random_state, "mapping_format": MAPPING_FORMAT,
               "calibration": DEFAULT_CALIBRATION, "false_alarm_rate": FALSE_ALARM_RATE,
               "weights": "skops"}  # entries of the pickle format get other keys: never read
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def cached_reference_model(ref: Reference, features: list[str], *, cache_dir=None,
                           n_estimators: int = FOREST_TREES, random_state: int = 0,
                           progress=None, model: str = "forest") -> tuple[ReferenceModel, bool]:
    """A reference model (``model``, default forest) on exactly ``features``, from or to the cache.

    Returns
    -------
    (ReferenceModel, bool)
        The model and whether it came from the cache.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(ref.species, features, ref.checksums, n_estimators=n_estimators,
                    random_state=random_state, model=model)
    path = cache / f"{ref.species}-{key}"
    check_foldable(ref.labels.to_numpy(), n_splits=5, where=f"the {ref.species} reference",
                   folds_option=None)
    rebuild = False
    if path.is_dir() and not path.is_symlink():
        try:
            return load_reference_model(path), True
        except InputError as exc:
            if not is_own_output(path, MODEL_OUTPUT_KIND):
                raise InputError(f"the reference-model cache entry {path} was not written by "
                                 f"ephys2tx and cannot be used ({exc}); remove it, or pass another "
                                 "--cache-dir.") from exc
            rebuild = True  # a stale or damaged entry of ours: replaced once the new one is complete
    elif path.exists() or path.is_symlink():
        raise InputError(f"the reference-model cache entry {path} is a file or link, not a model "
                         "folder; remove it, or pass another --cache-dir.")
    fitted = fit_reference_model(ref.features[features], ref.labels, species=ref.species,
                                 model=model, groups=ref.groups, n_estimators=n_estimators,
                                 random_state=random_state, progress=progress)
    try:
        save_reference_model(fitted, path, checksums=ref.checksums, overwrite=rebuild)
    except InputError:  # another process wrote it meanwhile
        pass
    return fitted, False


@dataclass(frozen=True)
class MapResult:
    """What ``map`` computed and wrote."""

    out_dir: Path
    predictions: pd.DataFrame
    features: list
    from_cache: bool
    align: str | None
    warnings: list
    model: ReferenceModel
    seconds: float
    shift: object = None  # ShiftOutcome: alarm, shift handling, user prior


def map_cells(input_path, species: str, out_dir, *, column_map=None, align: str | None = "auto",
              id_column: str | None = None, force: bool = False, overwrite: bool = False,
              data_dir=None, cache_dir=None, verify: bool = True, n_estimators: int = FOREST_TREES,
              random_state: int = 0, progress=None, model: str | None = None,
              layer: str | None = None, layer_column: str | None = None,
              prior: str | None = None) -> MapResult:
    """Reference-map a query table onto the ``species`` reference, on the features it shares.

    A reference model (``model``) is trained on exactly the query's features (or
    loaded from the cache, keyed by species, feature set, model, data checksums and
    settings), the query is tested for a shift (before any alignment), the shift
    is handled (``align``, with the user's class prior if any), predicted, and
    ``out_dir`` is written atomically: ``predictions.csv``, ``report.md`` and
    figures (query embedded on the reference, class proportions, reliability
    diagram).

    Parameters
    ----------
    input_path : path
        CSV, TSV, Parquet or Excel table, one row per cell.
    species : {"mouse", "human"}
    out_dir : path
    column_map, id_column, force :
        See :func:`read_query`.
    align : str
        Shift handling (:data:`ephys2tx.models.shift_adapt.ALIGN_METHODS`): ``auto``
        (default) decides from the data; ``none``/None, ``quantile``, ``ot``, ``em``,
        ``bbse``, ``cc``, ``cc_gen``, ``cc_mix``. A shift alarm is computed first,
        on the unaligned features (:mod:`ephys2tx.models.shift_alarm`).
    model : str, optional
        ``forest``, ``hgb``, ``ensemble``, ``forest_aug`` or ``bilstm``
        (default: :data:`ephys2tx.models.shift_adapt.DEFAULT_MAP_MODEL`, chosen by the
        shift benchmark).
    layer, layer_column, prior : str, optional
        A class prior the user knows: one cortical layer for all cells, a column
        of the input holding each cell's layer, or an explicit class mix
        (``Lamp5=0.6,Vip=0.3,...``); see :func:`ephys2tx.data.layers.user_class_prior`.
    overwrite : bool
        Replace an existing ``out_dir``.
    data_dir : path, optional
    cache_dir : path, optional
        Default :func:`default_cache_dir`.
    verify : bool
        Check the data files' sha256.
    n_estimators, random_state :
        Of the reference forest (part of the cache key).
    progress : callable, optional

    Returns
    -------
    MapResult

    Raises
    ------
    InputError
        Bad arguments, ``out_dir`` exists without ``overwrite``, any bad table
        or column map, or no feature shared with the reference. Nothing is
        written then.
    """
    from ephys2tx.data.layers import user_class_prior
    from ephys2tx.models.map_models import MAP_MODELS
    from ephys2tx.models.shift_adapt import (ALIGN_METHODS, DEFAULT_MAP_MODEL, mapping_notes,
                                             predict_under_shift, read_layer_column)
    from ephys2tx.report.mapping_report import write_mapping_report

    started = time.perf_counter()
    out_dir = Path(out_dir)
    align = "none" if align is None else align
    model = model or DEFAULT_MAP_MODEL
    if species not in ("mouse", "human"):
        raise InputError(f"map --species must be mouse or human, got {species!r}.")
    if align not in ALIGN_METHODS:
        raise InputError(f"unknown --align {align!r}; use one of {', '.join(ALIGN_METHODS)}.")
    if model not in MAP_MODELS:
        raise InputError(f"unknown --model {model!r}; use one of {', '.join(MAP_MODELS)}.")
    check_output_dir(out_dir, kind=MAPPING_OUTPUT_KIND, overwrite=overwrite,
                     inputs=_input_paths(input_path, column_map, resolve_data_dir(data_dir)))
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    check_cache_dir(cache, out_dir)
    query = read_query(input_path, column_map=column_map, id_column=id_column, force=force)
    ref = reference_data(species, data_dir, verify=verify)
    features = [f for f in ref.features.columns
                if f in query.features.columns and query.features[f].notna().any()]
    if not features:
        raise InputError(f"no feature of {input_path} (after column map {query.column_map!r}) is in "
                         f"the {species} reference ({', '.join(list(ref.features.columns)[:4])}, ...); "
                         "check the column map.")
    layer_values = None if layer_column is None else read_layer_column(
        input_path, layer_column, query.ids, id_column=query.id_column)
    user_prior, prior_notes = user_class_prior(
        [c for c in CLASSES if c in set(ref.labels)], species, len(query.ids), layer=layer,
        layer_values=layer_values, prior=prior, data_dir=data_dir, verify=verify)
    fitted, from_cache = cached_reference_model(ref, features, cache_dir=cache,
                                                n_estimators=n_estimators, model=model,
                                                random_state=random_state, progress=progress)
    X = query.features[features]
    shift = predict_under_shift(fitted, X, ref.features[features], ref.labels, align=align,
                                user_prior=user_prior, random_state=random_state)
    predictions = shift.predictions
    notes = mapping_notes(query, ref) + _prediction_warnings(query, fitted, predictions)
    shift.notes.extend(prior_notes)
    frame = _assemble_output(query, predictions)
    write_mapping_report(out_dir, frame, query_features=X, reference=ref, model=fitted,
                         align=shift.adapt.method, column_map=query.column_map,
                         input_path=Path(input_path), from_cache=from_cache, warnings=notes,
                         overwrite=overwrite, shift=shift)
    return MapResult(out_dir=out_dir, predictions=frame, features=features, from_cache=from_cache,
                     align=shift.adapt.method, warnings=notes, model=fitted,
                     seconds=time.perf_counter() - started, shift=shift)


# --------------------------------------------------------------------------- shift experiment


def shift_experiment(species: str = "mouse", data_dir=None, *, test_size: float = 0.3,
                     gain: float = 1.4, offset_sd: float = 0.8, n_estimators: int = FOREST_TREES,
                     seeds=(0,), skewed_keep: float = 0.2, verify: bool = True,
                     reference: Reference | None = None) -> pd.DataFrame:
    """Does alignment help on an artificially shifted held-out split of the reference?

    Per seed, a stratified ``test_size`` share of the reference is held out and
    a forest is trained on the rest. The held-out cells are distorted per
    feature (``x -> mean + gain * (x - mean) + s_j * offset_sd * sd``, random
    sign ``s_j``), as a different rig or analysis pipeline might, then
    predicted without alignment and with each alignment method. Two queries
    are drawn from the held-out cells:

    * ``reference mix``: all of them (the reference's class proportions);
    * ``skewed mix``: every cell of the rarest class and ``skewed_keep`` of the
      others, so the query's class proportions differ from the reference's:
      the case in which aligning marginal distributions can mislead.

    Parameters
    ----------
    species : {"mouse", "human"}
    data_dir : path, optional
    test_size : float
    gain, offset_sd : float
        The distortion.
    n_estimators : int
        Trees of the forest.
    seeds : sequence of int
        One split, distortion and forest per seed.
    skewed_keep : float
        Share of the other classes kept in the skewed query.
    verify : bool
    reference : Reference, optional
        Already loaded reference data (else read from ``data_dir``).

    Returns
    -------
    DataFrame
        One row per seed, query and condition: ``seed``, ``query``,
        ``condition``, ``n_cells``, ``accuracy``, ``macro_f1``.
    """
    from sklearn.model_selection import train_test_split

    from ephys2tx.features.alignment import align as align_features

    ref = reference if reference is not None else reference_data(species, data_dir, verify=verify)
    X, y = ref.features, ref.labels
    rows = []
    for seed in seeds:
        train_ids, test_ids = train_test_split(X.index, test_size=test_size, stratify=y,
                                               random_state=seed)
        est = _make_estimator("forest", list(X.columns), random_state=seed,
                              n_estimators=n_estimators, max_epochs=None)
        est.fit(X.loc[train_ids].to_numpy(float), y.loc[train_ids].to_numpy())
        rng = np.random.RandomState(seed)
        mean, sd = X.loc[train_ids].mean(), X.loc[train_ids].std()
        signs = pd.Series(rng.choice([-1.0, 1.0], size=X.shape[1]), index=X.columns)
        rarest = y.loc[test_ids].value_counts().idxmin()
        keep = (y.loc[test_ids] == rarest) | (rng.random_sample(len(test_ids)) < skewed_keep)
        queries = {"reference mix": test_ids, "skewed mix": test_ids[keep.to_numpy()]}
        for query, ids in queries.items():
            test = X.loc[ids]
            shifted = mean + gain * (test - mean) + signs * offset_sd * sd
            conditions = {"no shift": test, "shifted, no alignment": shifted}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                conditions["shifted + quantile alignment"] = align_features(
                    shifted, X.loc[train_ids], "quantile")
                conditions["shifted + OT alignment"] = align_features(
                    shifted, X.loc[train_ids], "ot", random_state=seed)
            truth = y.loc[ids].to_numpy()
            label = query if query == "reference mix" else \
                f"skewed mix ({rarest} {np.mean(truth == rarest):.0%})"
            for name, frame in conditions.items():
                pred = est.predict(frame.to_numpy(float))
                rows.append({"seed": seed, "query": label, "condition": name, "n_cells": len(ids),
                             "accuracy": float(accuracy_score(truth, pred)),
                             "macro_f1": float(f1_score(truth, pred, average="macro"))})
    return pd.DataFrame(rows)


def summarise_shift(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD over seeds of :func:`shift_experiment`, per query and condition."""
    kind = table["query"].str.split(" \\(").str[0]
    grouped = table.assign(query=kind).groupby(["query", "condition"], sort=False)
    out = grouped[["accuracy", "macro_f1"]].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    return out.assign(n_seeds=grouped.size()).reset_index()
