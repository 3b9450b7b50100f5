"""The on-disk cache of reference models (``map`` trains one per feature set and reuses it)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import ephys2tx
from ephys2tx.errors import InputError
from ephys2tx.evaluation.splits import check_foldable
from ephys2tx.mapping.reference import (DEFAULT_CALIBRATION, FALSE_ALARM_RATE, FOREST_MAX_SAMPLES,
                                        FOREST_MIN_LEAF, FOREST_TREES, MAPPING_FORMAT, Reference,
                                        ReferenceModel, fit_reference_model, load_reference_model,
                                        save_reference_model)
from ephys2tx.models.persistence import MODEL_OUTPUT_KIND
from ephys2tx.safety import check_cache_dir as check_folder
from ephys2tx.safety import is_own_output

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


def check_cache_dir(cache: Path, out_dir: Path, inputs=(), *, option: str = "--cache-dir") -> None:
    """The reference-model cache must be a writable folder outside the output folder and the inputs."""
    check_folder(cache, what="reference-model cache (--cache-dir or $EPHYS2TX_CACHE)", option=option,
                 outputs=(out_dir,), inputs=inputs)
