"""Train, save, predict and reference-map: the library behind ``ephys2tx train/predict/map``.

A *reference model* is a classifier (random forest or attention BiLSTM) on
canonical IPFX features plus

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
import shutil
import tempfile
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
from ephys2tx.errors import InputError
from ephys2tx.models.calibration import (calibrator_from_dict, cross_fitted_calibration,
                                         expected_calibration_error, make_calibrator,
                                         reliability_curve)
from ephys2tx.models.ood import make_ood, ood_from_dict

__all__ = ["MODELS", "SPECIES", "MapResult", "PredictResult", "Reference", "ReferenceModel",
           "TrainResult", "fit_reference_model", "load_reference_model", "map_cells", "predict",
           "reference_data", "save_reference_model", "shift_experiment", "train"]

SPECIES = ("mouse", "human", "both")
MODELS = ("forest", "bilstm", "transfer")
MAPPING_FORMAT = 1
#: Forest used by ``map`` and by default in ``train``: fast to fit and to predict.
FOREST_TREES = 100
FOREST_MAX_SAMPLES = 0.5
FOREST_MIN_LEAF = 2
FALSE_ALARM_RATE = 0.05
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
        raise InputError("model 'transfer' is not available yet for train/predict: the mouse->human "
                         "transfer models cannot be saved in a model directory; use --model bilstm or forest.")
    raise InputError(f"unknown model {model!r}; choose from {', '.join(MODELS)}.")


def _softmax_safe(proba: np.ndarray) -> np.ndarray:
    proba = np.clip(np.asarray(proba, float), 0.0, 1.0)
    total = proba.sum(axis=1, keepdims=True)
    return proba / np.where(total > 0, total, 1.0)


@dataclass
class ReferenceModel:
    """A fitted classifier with its calibrator, OOD detector and training record."""

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
        X = X.reindex(columns=self.features).astype(float)
        n_present = X.notna().sum(axis=1).to_numpy()
        ok = n_present > 0
        n = len(X)
        proba = np.full((n, len(self.classes)), np.nan)
        score = np.full(n, np.nan)
        if ok.any():
            values = X.to_numpy()[ok]
            raw = _softmax_safe(self.estimator.predict_proba(values))
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
                        groups=None, n_splits: int = 5, calibration: str = "temperature",
                        n_estimators: int = FOREST_TREES, max_epochs: int | None = None,
                        random_state: int = 0,
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
    model : {"forest", "bilstm"}
    groups : array-like, optional
        Donor per cell (folds never split a donor).
    n_splits : int
        Folds of the cross-validation that measures the metrics, fits the
        calibrator and sets the OOD threshold.
    calibration : {"temperature", "isotonic"}
    n_estimators : int
        Trees of the forest.
    max_epochs : int, optional
        BiLSTM epochs (default: the model's own).
    random_state : int
    progress : callable, optional
        Called with a short status line.
    """
    say = progress or (lambda msg: None)
    features = [str(c) for c in X.columns]
    classes = [c for c in CLASSES if c in set(y)]
    if len(classes) < 2:
        raise InputError(f"the reference has {len(classes)} class(es); need at least two.")
    codes = pd.Series(y).map({c: i for i, c in enumerate(classes)}).to_numpy()
    if np.isnan(codes.astype(float)).any():
        raise InputError(f"reference labels outside {classes}; keep only {', '.join(CLASSES)}.")
    codes = codes.astype(int)
    values = X.to_numpy(dtype=float)
    base = _make_estimator(model, features, random_state=random_state, n_estimators=n_estimators,
                           max_epochs=max_epochs)
    fold_ids = _folds(codes, groups, n_splits, random_state)
    proba = np.zeros((len(codes), len(classes)))
    distance = np.zeros(len(codes))
    started = time.perf_counter()
    for k in range(n_splits):
        say(f"cross-validation fold {k + 1}/{n_splits}")
        train, test = fold_ids != k, fold_ids == k
        est = clone(base).fit(values[train], codes[train])
        proba[test] = _softmax_safe(est.predict_proba(values[test]))
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
    estimator = clone(base).fit(values, codes)
    detector = make_ood("mahalanobis", false_alarm_rate=FALSE_ALARM_RATE).fit(values, codes)
    record = {"n_cells": int(len(codes)), "class_counts": pd.Series(y).value_counts().to_dict(),
              "cv": cv, "calibration": calib,
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
    if not directory.is_dir():
        raise InputError(f"model directory {directory} does not exist; train one with "
                         "`ephys2tx train --out DIR`.")
    meta = read_model_metadata(directory)
    mapping = (meta.get("extra") or {}).get("mapping")
    if not isinstance(mapping, dict) or mapping.get("format") != MAPPING_FORMAT:
        raise InputError(f"{directory} holds a model without calibration/OOD information (not "
                         "written by `ephys2tx train`); re-train it with `ephys2tx train`.")
    estimator = load_model(directory)
    return ReferenceModel(estimator=estimator, features=list(mapping["features"]),
                          classes=list(mapping["classes"]), species=mapping["species"],
                          model=mapping["model"],
                          calibrator=calibrator_from_dict(mapping["calibrator"]),
                          ood=ood_from_dict(mapping["ood"]), ood_norm=dict(mapping["ood_norm"]),
                          record=dict(mapping.get("record", {})))


# --------------------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` wrote."""

    path: Path
    model: ReferenceModel


def train(species: str, model: str, out, *, data_dir=None, n_splits: int = 5,
          calibration: str = "temperature", n_estimators: int = FOREST_TREES,
          max_epochs: int | None = None, random_state: int = 0, overwrite: bool = False,
          verify: bool = True, progress=None) -> TrainResult:
    """Train on the full reference of ``species`` and save a model directory at ``out``."""
    out = Path(out)
    if model not in MODELS:
        raise InputError(f"unknown model {model!r}; choose from {', '.join(MODELS)}.")
    if species not in SPECIES:
        raise InputError(f"unknown species {species!r}; choose from {', '.join(SPECIES)}.")
    if out.exists() and not overwrite:
        raise InputError(f"output {out} already exists; choose another path or pass --overwrite.")
    if model == "transfer":
        _make_estimator(model, [], random_state=0, n_estimators=1, max_epochs=None)
    ref = reference_data(species, data_dir, verify=verify)
    fitted = fit_reference_model(ref.features, ref.labels, species=species, model=model,
                                 groups=ref.groups, n_splits=n_splits, calibration=calibration,
                                 n_estimators=n_estimators, max_epochs=max_epochs,
                                 random_state=random_state, progress=progress)
    path = save_reference_model(fitted, out, checksums=ref.checksums, overwrite=overwrite)
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

    Raises
    ------
    InputError
        Any bad input; a unit/range issue unless ``force``.
    """
    from ephys2tx.data.user_tables import read_user_table
    from ephys2tx.features.canonical import check_units
    from ephys2tx.features.column_map import apply_column_map, resolve_column_map

    table = read_user_table(input_path, id_column=id_column)
    cmap = resolve_column_map(column_map, table.data.columns)
    canonical, sources = apply_column_map(cmap, table.data, where=str(input_path))
    notes = []
    for issue in check_units(canonical, sources):
        if not force:
            raise InputError(issue.message())
        notes.append("continuing (--force): " + issue.message())
    return Query(ids=table.data.index, id_column=table.id_column, features=canonical,
                 sources=sources, column_map=cmap.name, warnings=notes)


def _check_out_file(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise InputError(f"output {out} already exists; choose another path or pass --overwrite.")
    if out.exists() and out.is_dir():
        raise InputError(f"output {out} is a directory; give a file path for the predictions.")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv_atomic(frame: pd.DataFrame, out: Path) -> Path:
    """Write a CSV to a temporary sibling, then rename it onto ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        table = pa.Table.from_pandas(frame, preserve_index=False)
        with os.fdopen(fd, "wb") as handle:
            pa_csv.write_csv(table, handle, pa_csv.WriteOptions(quoting_style="needed"))  # 10x to_csv
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


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


def predict(model_dir, input_path, out, *, column_map=None, id_column: str | None = None,
            force: bool = False, overwrite: bool = False) -> PredictResult:
    """Predict subclass, calibrated probabilities, confidence and OOD flag for a user table."""
    out = Path(out)
    _check_out_file(out, overwrite)
    ref = load_reference_model(model_dir)
    query = read_query(input_path, column_map=column_map, id_column=id_column, force=force)
    if not set(ref.features) & set(query.features.columns):
        raise InputError(f"none of the model's features is in {input_path} after column map "
                         f"{query.column_map!r}; check the column map (model features start "
                         f"with {ref.features[:3]}).")
    predictions = ref.predict_frame(query.features)
    notes = _prediction_warnings(query, ref, predictions)
    frame = _assemble_output(query, predictions)
    write_csv_atomic(frame, out)
    return PredictResult(path=out, predictions=frame, warnings=notes, model=ref)


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
               "random_state": random_state, "mapping_format": MAPPING_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def cached_reference_model(ref: Reference, features: list[str], *, cache_dir=None,
                           n_estimators: int = FOREST_TREES, random_state: int = 0,
                           progress=None) -> tuple[ReferenceModel, bool]:
    """A forest reference model on exactly ``features``, loaded from or saved to the cache.

    Returns
    -------
    (ReferenceModel, bool)
        The model and whether it came from the cache.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(ref.species, features, ref.checksums, n_estimators=n_estimators,
                    random_state=random_state)
    path = cache / f"{ref.species}-{key}"
    if path.is_dir():
        try:
            return load_reference_model(path), True
        except InputError:
            shutil.rmtree(path, ignore_errors=True)  # stale or corrupted entry: rebuild it
    fitted = fit_reference_model(ref.features[features], ref.labels, species=ref.species,
                                 model="forest", groups=ref.groups, n_estimators=n_estimators,
                                 random_state=random_state, progress=progress)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        save_reference_model(fitted, path, checksums=ref.checksums)
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


def map_cells(input_path, species: str, out_dir, *, column_map=None, align: str | None = None,
              id_column: str | None = None, force: bool = False, overwrite: bool = False,
              data_dir=None, cache_dir=None, verify: bool = True, n_estimators: int = FOREST_TREES,
              random_state: int = 0, progress=None) -> MapResult:
    """Reference-map a query table onto the ``species`` reference, on the features it shares.

    Writes ``out_dir/predictions.csv``, ``out_dir/report.md`` and figures
    (query embedded on the reference, class proportions, reliability diagram).
    """
    from ephys2tx.features.alignment import ALIGN_METHODS
    from ephys2tx.features.alignment import align as align_features
    from ephys2tx.report.mapping_report import write_mapping_report

    started = time.perf_counter()
    out_dir = Path(out_dir)
    if species not in ("mouse", "human"):
        raise InputError(f"map --species must be mouse or human, got {species!r}.")
    if align is not None and align not in ALIGN_METHODS:
        raise InputError(f"unknown --align {align!r}; use one of {', '.join(ALIGN_METHODS)}.")
    if out_dir.exists() and not overwrite:
        raise InputError(f"output {out_dir} already exists; choose another path or pass --overwrite.")
    query = read_query(input_path, column_map=column_map, id_column=id_column, force=force)
    ref = reference_data(species, data_dir, verify=verify)
    features = [f for f in ref.features.columns
                if f in query.features.columns and query.features[f].notna().any()]
    if not features:
        raise InputError(f"no feature of {input_path} (after column map {query.column_map!r}) is in "
                         f"the {species} reference ({', '.join(list(ref.features.columns)[:4])}, ...); "
                         "check the column map.")
    model, from_cache = cached_reference_model(ref, features, cache_dir=cache_dir,
                                               n_estimators=n_estimators,
                                               random_state=random_state, progress=progress)
    X = query.features[features]
    if align is not None:
        X = align_features(X, ref.features[features], align, random_state=random_state)
    predictions = model.predict_frame(X)
    notes = _prediction_warnings(query, model, predictions)
    frame = _assemble_output(query, predictions)
    write_mapping_report(out_dir, frame, query_features=X, reference=ref, model=model,
                         align=align, column_map=query.column_map, input_path=Path(input_path),
                         from_cache=from_cache, warnings=notes, overwrite=overwrite)
    return MapResult(out_dir=out_dir, predictions=frame, features=features, from_cache=from_cache,
                     align=align, warnings=notes, model=model,
                     seconds=time.perf_counter() - started)


# --------------------------------------------------------------------------- shift experiment


def shift_experiment(species: str = "mouse", data_dir=None, *, test_size: float = 0.3,
                     gain: float = 1.4, offset_sd: float = 0.8, n_estimators: int = FOREST_TREES,
                     random_state: int = 0, verify: bool = True, reference: Reference | None = None
                     ) -> pd.DataFrame:
    """Does alignment help on an artificially shifted held-out split of the reference?

    A stratified ``test_size`` share of the reference is held out; a forest is
    trained on the rest. The held-out cells are distorted per feature
    (``x -> mean + gain * (x - mean) + s_j * offset_sd * sd``, random sign
    ``s_j``), as a different rig or analysis pipeline might, then predicted
    without alignment and with each alignment method.

    Returns
    -------
    DataFrame
        One row per condition: ``condition``, ``accuracy``, ``macro_f1``.
    """
    from sklearn.model_selection import train_test_split

    from ephys2tx.features.alignment import align as align_features

    ref = reference if reference is not None else reference_data(species, data_dir, verify=verify)
    X, y = ref.features, ref.labels
    train_ids, test_ids = train_test_split(X.index, test_size=test_size, stratify=y,
                                           random_state=random_state)
    est = _make_estimator("forest", list(X.columns), random_state=random_state,
                          n_estimators=n_estimators, max_epochs=None)
    est.fit(X.loc[train_ids].to_numpy(float), y.loc[train_ids].to_numpy())
    rng = np.random.RandomState(random_state)
    mean, sd = X.loc[train_ids].mean(), X.loc[train_ids].std()
    signs = pd.Series(rng.choice([-1.0, 1.0], size=X.shape[1]), index=X.columns)
    test = X.loc[test_ids]
    shifted = mean + gain * (test - mean) + signs * offset_sd * sd
    conditions = {"no shift": test, "shifted, no alignment": shifted}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conditions["shifted + quantile alignment"] = align_features(shifted, X.loc[train_ids], "quantile")
        conditions["shifted + OT alignment"] = align_features(shifted, X.loc[train_ids], "ot",
                                                              random_state=random_state)
    rows = []
    truth = y.loc[test_ids].to_numpy()
    for name, frame in conditions.items():
        pred = est.predict(frame.to_numpy(float))
        rows.append({"condition": name, "accuracy": float(accuracy_score(truth, pred)),
                     "macro_f1": float(f1_score(truth, pred, average="macro"))})
    return pd.DataFrame(rows)
