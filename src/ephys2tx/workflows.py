"""The ``train``, ``predict`` and ``map`` workflows: read inputs, compute, write outputs.

The application layer above :mod:`ephys2tx.report` (it writes through it) and
below the CLI, which only parses arguments and calls these functions. The
computation lives in :mod:`ephys2tx.mapping`; these functions check every
output location first, then read, compute and write atomically.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ephys2tx import CLASSES
from ephys2tx.data.paths import resolve_data_dir
from ephys2tx.errors import InputError
from ephys2tx.io import write_csv
from ephys2tx.mapping.cache import cached_reference_model, check_cache_dir, default_cache_dir
from ephys2tx.mapping.query import (assemble_output, embedding_onto_reference, input_paths,
                                    is_predictions_table, prediction_warnings, read_query)
from ephys2tx.mapping.reference import (CALIBRATIONS, DEFAULT_CALIBRATION, FOREST_TREES, MODELS,
                                        SPECIES, ReferenceModel, fit_reference_model,
                                        load_reference_model, reference_data, save_reference_model)
from ephys2tx.models.persistence import MODEL_OUTPUT_KIND
from ephys2tx.report.mapping_report import MAPPING_OUTPUT_KIND, write_mapping_report
from ephys2tx.safety import check_output_dir, check_output_file, releases_claims

__all__ = ["MAPPING_OUTPUT_KIND", "MapResult", "PredictResult", "TrainResult", "map_cells",
           "predict", "train"]



#: The largest seed (numpy's seeds are 32-bit), as ``--seed`` allows.
MAX_SEED = 2**32 - 1


def _whole_number(name: str, value, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int if it is a whole number in range (not a bool), else an InputError."""
    import numbers

    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and value >= minimum and (maximum is None or value <= maximum):
        return int(value)
    bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
    seed = (" (a fixed seed: the workflows are reproducible, so None or a numpy Generator is "
            "not taken)" if name == "random_state" else "")
    raise InputError(f"{name} must be a whole number {bound}{seed}, got {value!r}.")


def _flag(name: str, value) -> bool:
    """``value`` if it is True or False, else an InputError: ``overwrite="no"`` is a true string,
    so it replaced an output, silently."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InputError(f"{name} must be True or False, got {value!r}"
                     f"{' (a non-empty string is true in Python)' if isinstance(value, str) else ''}.")


def _text(name: str, value, example: str) -> str | None:
    """``value`` if it is None or a str, else an InputError naming the argument and an example."""
    if value is None or isinstance(value, str):
        return value
    raise InputError(f"{name} must be a str (e.g. {example}) or None, got {type(value).__name__} "
                     f"{value!r:.60}.")


def _progress(value):
    if value is None or callable(value):
        return value
    raise InputError(f"progress must be a function taking one message (e.g. print) or None, got "
                     f"{type(value).__name__}.")


def _path(name: str, value):
    """``value`` if it names a file or folder (str or path), else an InputError saying what to pass."""
    import os

    if isinstance(value, (str, os.PathLike)):
        return value
    hint = (" save the table first (e.g. frame.to_csv('cells.csv', index=False)) and pass its path"
            if isinstance(value, pd.DataFrame) else " pass a str or pathlib.Path")
    raise InputError(f"{name} must be a path, got {type(value).__name__};{hint}.")


def _check_texts(**values) -> None:
    """The text arguments of predict and map (``layer`` may also be a layer number)."""
    examples = {"id_column": "'cell_id'", "layer": "'L2/3'", "layer_column": "'layer'",
                "prior": "'Lamp5=0.6,Vip=0.4'"}
    for name, value in values.items():
        if name == "layer" and isinstance(value, int) and not isinstance(value, bool):
            continue  # --layer 5 is L5
        _text(name, value, examples[name])


# --------------------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` wrote."""

    path: Path
    model: ReferenceModel


@releases_claims
def train(species: str, model: str, out, *, data_dir=None, n_splits: int = 5,
          calibration: str = DEFAULT_CALIBRATION, n_estimators: int = FOREST_TREES,
          max_epochs: int | None = None, random_state: int = 0, overwrite: bool = False,
          verify: bool = True, progress=None, threads: int | None = None) -> TrainResult:
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
    threads : int, optional
        Torch, BLAS and OpenMP threads of the fits (default
        :func:`ephys2tx.models.threads.default_threads`: 1 on at most 2 cores).
        The forest's trees are fitted by its own ``n_jobs`` workers.

    Raises
    ------
    InputError
        Unknown species/model/calibration, ``transfer`` for a species other
        than human, a bad ``threads``, or an existing ``out`` without ``overwrite``.
    """
    from ephys2tx.models.threads import limit_threads, resolve_threads

    out = Path(_path("out", out))
    n_splits = _whole_number("n_splits", n_splits, 2)
    n_estimators = _whole_number("n_estimators", n_estimators, 1)
    random_state = _whole_number("random_state", random_state, 0, MAX_SEED)
    overwrite, verify = _flag("overwrite", overwrite), _flag("verify", verify)
    progress = _progress(progress)
    if max_epochs is not None:
        max_epochs = _whole_number("max_epochs", max_epochs, 1)
        if model != "bilstm":  # the forest and the transfer model (stacked trees) have no epochs
            raise InputError(f"--max-epochs sets the epochs of --model bilstm; --model {model} has "
                             "none: leave it out.")
    if model not in MODELS:
        raise InputError(f"unknown model {model!r}; choose from {', '.join(MODELS)}.")
    if species not in SPECIES:
        raise InputError(f"unknown species {species!r}; choose from {', '.join(SPECIES)}.")
    if model == "transfer" and species != "human":
        raise InputError(f"--model transfer predicts human subclasses (human cells, with mouse cells "
                         f"as source data), not {species}; use --species human.")
    if calibration not in CALIBRATIONS:
        raise InputError(f"unknown calibration {calibration!r}; use {' or '.join(CALIBRATIONS)}.")
    threads = resolve_threads(threads)
    check_output_dir(out, kind=MODEL_OUTPUT_KIND, overwrite=overwrite,
                     inputs=[resolve_data_dir(data_dir)])
    ref = reference_data(species, data_dir, verify=verify)
    checksums, source = dict(ref.checksums), None
    if model == "transfer":
        from ephys2tx.data.datasets import load_dataset

        mouse = load_dataset("mouse_visp", data_dir, verify=verify)
        source = (mouse.features, mouse.labels)
        checksums.update(mouse.checksums)
    with limit_threads(threads, torch=model != "forest"):
        fitted = fit_reference_model(ref.features, ref.labels, species=species, model=model,
                                     groups=ref.groups, n_splits=n_splits, calibration=calibration,
                                     n_estimators=n_estimators, max_epochs=max_epochs,
                                     random_state=random_state, source=source, progress=progress)
    from ephys2tx.models.predict_shift import reference_sample

    # a bounded sample of the training cells: predict tests a query against it (shift alarm)
    sample = reference_sample(ref.features[fitted.features], ref.labels, fitted.classes,
                              random_state=random_state)
    path = save_reference_model(fitted, out, checksums=checksums, overwrite=overwrite,
                                reference_sample=sample)
    return TrainResult(path=path, model=fitted)


# --------------------------------------------------------------------------- predict


@dataclass(frozen=True)
class PredictResult:
    """What ``predict`` computed and wrote."""

    path: Path
    predictions: pd.DataFrame
    warnings: list
    model: ReferenceModel
    alarm: object = None  # ShiftReport, computed before any adaptation
    shift: object = None  # ShiftOutcome: alarm, shift handling, user prior (ephys2tx.models.predict_shift)


@releases_claims
def predict(model_dir, input_path, out, *, column_map=None, id_column: str | None = None,
            force: bool = False, overwrite: bool = False, layer: str | None = None,
            layer_column: str | None = None, prior: str | None = None, data_dir=None,
            verify: bool = True, align: str = "auto", random_state: int = 0) -> PredictResult:
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
    align : str
        Shift handling (:mod:`ephys2tx.models.predict_shift`, ``PREDICT_ALIGN_METHODS``):
        ``em`` re-estimates the query's class mix (Saerens et al. 2002), ``em@300``
        more cautiously, ``em_test`` only if a class-mix test rejects; ``auto`` decides
        from the data and says what it chose. An adapted call keeps the model's own call beside.
    random_state : int
        Of the shift alarm's permutation tests.

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
    from ephys2tx.models.predict_shift import PREDICT_ALIGN_METHODS

    if align not in PREDICT_ALIGN_METHODS:
        raise InputError(f"unknown --align {align!r}; use one of {', '.join(PREDICT_ALIGN_METHODS)}.")
    for name, value in (("model_dir", model_dir), ("input_path", input_path), ("out", out)):
        _path(name, value)
    random_state = _whole_number("random_state", random_state, 0, MAX_SEED)
    force, overwrite, verify = _flag("force", force), _flag("overwrite", overwrite), _flag("verify", verify)
    _check_texts(id_column=id_column, layer=layer, layer_column=layer_column, prior=prior)
    out = check_output_file(out, overwrite=overwrite, recognise=is_predictions_table,
                            inputs=input_paths(model_dir, input_path, column_map,
                                               *([resolve_data_dir(data_dir)]  # read for a layer prior
                                                 if layer is not None or layer_column is not None
                                                 else [])),
                            written_by="ephys2tx predict (no predictions header)")
    if out.suffix.lower() != ".csv":  # never CSV bytes under .xlsx/.parquet, nor a file for a folder
        raise InputError(f"--out {out} must name a .csv file: predictions are written as CSV "
                         f"(e.g. --out {out.with_suffix('.csv') if out.name else 'predictions.csv'}).")
    ref = load_reference_model(model_dir)
    from ephys2tx.models.persistence import load_reference_sample
    from ephys2tx.models.predict_shift import reference_frames

    reference, reference_labels = reference_frames(load_reference_sample(model_dir), ref)
    query = read_query(input_path, column_map=column_map, id_column=id_column, force=force)
    if not [f for f in ref.features if f in query.features and query.features[f].notna().any()]:
        raise InputError(f"none of the model's features is in {input_path} after column map "
                         f"{query.column_map!r}; check the column map (model features start "
                         f"with {ref.features[:3]}).")
    from ephys2tx.data.layers import user_class_prior
    from ephys2tx.models.predict_shift import predict_with_shift
    from ephys2tx.models.shift_adapt import read_layer_column

    layer_values = None if layer_column is None else read_layer_column(
        input_path, layer_column, query.ids, id_column=query.id_column)
    user_prior, prior_notes = user_class_prior(ref.classes, ref.species, len(query.ids), layer=layer,
                                               layer_values=layer_values, prior=prior,
                                               data_dir=data_dir, verify=verify)
    shift = predict_with_shift(ref, query.features, align=align, user_prior=user_prior,
                               reference=reference, reference_labels=reference_labels,
                               random_state=random_state)
    predictions = shift.predictions
    notes = prediction_warnings(query, ref, predictions)
    shift.notes.extend(prior_notes)
    frame = assemble_output(query, predictions)
    write_csv(frame, out)
    return PredictResult(path=out, predictions=frame, warnings=notes, model=ref, alarm=shift.alarm,
                         shift=shift)


# --------------------------------------------------------------------------- map


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


@releases_claims
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

    started = time.perf_counter()
    out_dir = Path(_path("out_dir", out_dir))
    _path("input_path", input_path)
    n_estimators = _whole_number("n_estimators", n_estimators, 1)
    random_state = _whole_number("random_state", random_state, 0, MAX_SEED)
    force, overwrite, verify = _flag("force", force), _flag("overwrite", overwrite), _flag("verify", verify)
    _check_texts(id_column=id_column, layer=layer, layer_column=layer_column, prior=prior)
    progress = _progress(progress)
    align = "none" if align is None else align
    model = DEFAULT_MAP_MODEL if model is None else model
    if species not in ("mouse", "human"):
        raise InputError(f"map --species must be mouse or human, got {species!r}.")
    if align not in ALIGN_METHODS:
        raise InputError(f"unknown --align {align!r}; use one of {', '.join(ALIGN_METHODS)}.")
    if model not in MAP_MODELS:
        raise InputError(f"unknown --model {model!r}; use one of {', '.join(MAP_MODELS)}.")
    inputs = input_paths(input_path, column_map, resolve_data_dir(data_dir))
    check_output_dir(out_dir, kind=MAPPING_OUTPUT_KIND, overwrite=overwrite, inputs=inputs)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    check_cache_dir(cache, out_dir, inputs=inputs, option="--cache-dir" if cache_dir is not None
                    else "$EPHYS2TX_CACHE" if os.environ.get("EPHYS2TX_CACHE") else "the default cache")
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
    notes = mapping_notes(query, ref) + prediction_warnings(query, fitted, predictions)
    shift.notes.extend(prior_notes)
    frame = assemble_output(query, predictions)
    embedding = embedding_onto_reference(ref.features[fitted.features], X[fitted.features])
    write_mapping_report(out_dir, frame, embedding=embedding, reference=ref, model=fitted,
                         align=shift.adapt.method, column_map=query.column_map,
                         input_path=Path(input_path), from_cache=from_cache, warnings=notes,
                         overwrite=overwrite, shift=shift)
    return MapResult(out_dir=out_dir, predictions=frame, features=features, from_cache=from_cache,
                     align=shift.adapt.method, warnings=notes, model=fitted,
                     seconds=time.perf_counter() - started, shift=shift)
