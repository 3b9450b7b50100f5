"""Reference mapping: reference data and models, query tables, and the model cache.

* :mod:`~ephys2tx.mapping.reference`: the reference cells of a species, and the
  reference model (classifier + calibrator + OOD detector, fitted by k-fold CV
  on :func:`ephys2tx.evaluation.splits.make_splits` folds), saved and loaded;
* :mod:`~ephys2tx.mapping.query`: a user's table read into canonical features,
  checked (units, ranges, missing-value codes), embedded onto the reference (2-D PCA),
  and the predictions assembled;
* :mod:`~ephys2tx.mapping.cache`: the on-disk cache of reference models used by ``map``.

The workflows that also write outputs (``train``, ``predict``, ``map_cells``)
live in :mod:`ephys2tx.workflows`, above the report layer; they stay importable
from here for existing code (``from ephys2tx.mapping import map_cells``).
"""

from ephys2tx.mapping.cache import cache_key, cached_reference_model, check_cache_dir, default_cache_dir
from ephys2tx.mapping.query import Query, read_query
from ephys2tx.mapping.reference import (CALIBRATIONS, DEFAULT_CALIBRATION, FOREST_TREES, MODELS,
                                        SPECIES, TRANSFER_DESIGN, Reference, ReferenceModel,
                                        combine_reference_models, combined_ood_score,
                                        fit_reference_model, load_reference_model,
                                        make_reference_estimator, reference_data,
                                        reference_feature_table, save_reference_model,
                                        stable_predict_proba)

#: Names kept importable from here, defined in :mod:`ephys2tx.workflows` (one level up).
_WORKFLOWS = ("MAPPING_OUTPUT_KIND", "MapResult", "PredictResult", "TrainResult", "map_cells",
              "predict", "train")

__all__ = ["CALIBRATIONS", "DEFAULT_CALIBRATION", "FOREST_TREES", "MODELS", "SPECIES",
           "TRANSFER_DESIGN", "Query", "Reference", "ReferenceModel", "cache_key",
           "cached_reference_model", "check_cache_dir", "combine_reference_models",
           "combined_ood_score", "default_cache_dir", "fit_reference_model",
           "load_reference_model", "make_reference_estimator", "read_query", "reference_data",
           "reference_feature_table", "save_reference_model", "stable_predict_proba", *_WORKFLOWS]


def __getattr__(name: str):
    """Backward-compatible access to the workflows (imported on first use, not at import)."""
    if name in _WORKFLOWS:
        import importlib

        return getattr(importlib.import_module("ephys2tx.workflows"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
