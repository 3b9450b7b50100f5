"""Query tables: a user's table in canonical features, checked, embedded onto the reference; predictions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ephys2tx.errors import InputError
from ephys2tx.mapping.reference import ReferenceModel

@dataclass(frozen=True)
class Query:
    """A user table converted to canonical features."""

    ids: pd.Index
    id_column: str
    features: pd.DataFrame
    sources: dict
    column_map: str
    warnings: list


#: Columns of the predictions table (and prefixes of its per-class and per-variant columns): the
#: input's id column, written first, must not share their names.
OUTPUT_COLUMNS = ("predicted_subclass", "confidence", "ood_score", "ood_flag", "n_features")
OUTPUT_PREFIXES = ("prob_", "predicted_subclass_", "confidence_")


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
    from ephys2tx.features.canonical import check_units, check_values_kept
    from ephys2tx.features.column_map import (apply_column_map, describe_detection, expr_losses,
                                              match_table_columns, resolve_column_map)

    if not isinstance(force, (bool, np.bool_)):  # force="no" is a true string
        raise InputError(f"force must be True or False, got {force!r}.")
    cmap = None if column_map is None else resolve_column_map(column_map, ())
    if id_column is None and cmap is not None:
        id_column = cmap.id_column
    table = read_user_table(input_path, id_column=id_column, id_hint="name it with --id-column")
    if cmap is not None:
        for entry in cmap.entries:
            if table.id_column in (entry.column, entry.minus):
                raise InputError(f"column map {cmap.source} reads column {table.id_column!r} (for "
                                 f"{entry.name}), which is the id column of {input_path}; map a "
                                 "feature column, or name the id column with --id-column (or the "
                                 "map's id_column).")
    if table.id_column in OUTPUT_COLUMNS or table.id_column.startswith(OUTPUT_PREFIXES):
        raise InputError(f"the id column of {input_path} is named {table.id_column!r}, the name of an "
                         "output column of predict/map; rename it (e.g. to cell_id) and, if needed, "
                         "pass the new name with --id-column.")
    # a shipped map reads `TAU` or `Input Resistance` as tau and input_resistance
    cmap = (match_table_columns(cmap, table.data.columns) if cmap is not None
            else resolve_column_map(None, table.data.columns, table=table.data))
    # Missing-value codes (0 mV thresholds, 0 s ISIs...) are NaN, in the table's naming and in IPFX's.
    masked = mask_missing_codes(table.data)[0]
    canonical, sources = apply_column_map(cmap, masked, where=str(input_path))
    check_finite(canonical, where=str(input_path), sources=sources)
    canonical = mask_missing_codes(canonical)[0]
    if not canonical.notna().to_numpy().any():
        raise InputError(f"no cell of {input_path} has a value for any feature read by column map "
                         f"{cmap.name!r} (every value is empty, a missing-value code such as 0 mV "
                         "or a duration <= 0, or inf/NaN from an expr); check the table and the column map.")
    notes = [note for note in [describe_detection(cmap, table.data),
                               _skipped_entries(cmap, table.data.columns)] if note]
    notes += expr_losses(cmap, masked, where=str(input_path))  # cells an expr turns into missing
    raw = apply_column_map(cmap, table.data, where=str(input_path))[0]  # before any code is masked
    declared = {e.name: e.unit for e in cmap.entries if e.expr is None}  # hints name the map's unit
    for issue in [*check_units(canonical, sources, declared),
                  *check_values_kept(raw, canonical, sources)]:
        if not force:
            raise InputError(issue.message())
        notes.append("continuing (--force): " + issue.message())
    return Query(ids=table.data.index, id_column=table.id_column, features=canonical,
                 sources=sources, column_map=cmap.name, warnings=notes)


def _skipped_entries(cmap, columns) -> str | None:
    """A note naming the entries of a user's ``strict: false`` map that the table cannot fill."""
    from ephys2tx.features.column_map import shipped_map_path

    if cmap.strict or Path(cmap.source).parent == shipped_map_path("ipfx").parent:
        return None  # the shipped maps list far more than any table has
    present = {str(c) for c in columns}
    skipped = [f"{e.name} ({', '.join(repr(c) for c in (e.column, e.minus) if c and c not in present)})"
               for e in cmap.entries if any(c and c not in present for c in (e.column, e.minus))]
    if not skipped:
        return None
    return (f"column map {cmap.source} (strict: false): {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} "
            f"skipped, the table lacks the column: {', '.join(skipped[:6])}{', ...' if len(skipped) > 6 else ''}; "
            "fix the names, or set strict: true to make this an error.")


def is_predictions_table(path: Path) -> bool:
    """Whether ``path`` looks like a predictions CSV written by ``ephys2tx predict`` (its header)."""
    try:
        with open(path, encoding="utf-8") as handle:
            header = handle.readline(65536)
    except (OSError, UnicodeDecodeError):
        return False
    names = {c.strip().strip('"') for c in header.rstrip("\r\n").split(",")}
    return {"predicted_subclass", "confidence", "ood_score", "ood_flag", "n_features"} <= names


def input_paths(*paths) -> list:
    """The given paths that name files or folders (a shipped column map name does not)."""
    return [p for p in paths if isinstance(p, (str, os.PathLike)) and Path(p).exists()]


def assemble_output(query: Query, predictions: pd.DataFrame) -> pd.DataFrame:
    """The predictions table of ``map``: the query's cell ids first, then the prediction columns."""
    out = predictions.reset_index(drop=True)  # a new frame: the predictions are left as they are
    out.insert(0, query.id_column, query.ids.astype(str))
    return out


#: How many absent model features ``predict`` names.
MISSING_SHOWN = 6
#: Above this share (numerator, denominator) of absent model features, ``predict`` recommends ``map``.
MAX_MISSING_SHARE = (1, 3)


def prediction_warnings(query: Query, ref: ReferenceModel, predictions: pd.DataFrame) -> list[str]:
    """The query's warnings, plus absent model features and cells left without a prediction."""
    notes = list(query.warnings)
    missing = [f for f in ref.features if f not in query.features.columns
               or query.features[f].isna().all()]
    if missing:
        shown = ", ".join(missing[:MISSING_SHOWN]) + (", ..." if len(missing) > MISSING_SHOWN else "")
        notes.append(f"{len(missing)} of the model's {len(ref.features)} features are absent from "
                     f"the input (imputed with reference medians): {shown}.")
        if len(missing) * MAX_MISSING_SHARE[1] > len(ref.features) * MAX_MISSING_SHARE[0]:
            notes.append(f"more than a third of the model's features are missing ({len(missing)} of "
                         f"{len(ref.features)}): the model reads training medians in their place, which "
                         "pulls its calls towards the typical training cell; use `ephys2tx map`, which "
                         "trains a reference model on exactly the features you have.")
    empty = predictions.index[predictions["n_features"] == 0]
    if len(empty):
        notes.append(f"{len(empty)} cell(s) have no value for any model feature and get no "
                     f"prediction (kept, empty), e.g. {empty[0]}.")
    return notes


def embedding_onto_reference(reference_features: pd.DataFrame, query_features: pd.DataFrame
                             ) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA of the standardised reference, with the query projected onto it.

    Missing values are filled with the reference medians; standardised values
    are clipped to +-10. Returns the reference and the query coordinates
    (a second coordinate of zeros when there is one feature).
    """
    from sklearn.decomposition import PCA

    med = reference_features.median()
    ref = reference_features.fillna(med)
    mean, sd = ref.mean(), ref.std().replace(0, 1.0)
    z_ref = ((ref - mean) / sd).clip(-10, 10).to_numpy()
    z_q = ((query_features[reference_features.columns].fillna(med) - mean) / sd).clip(-10, 10).to_numpy()
    n_comp = min(2, z_ref.shape[1])
    pca = PCA(n_components=n_comp, random_state=0).fit(z_ref)
    a, b = pca.transform(z_ref), pca.transform(z_q)
    if n_comp == 1:
        a, b = np.column_stack([a, np.zeros(len(a))]), np.column_stack([b, np.zeros(len(b))])
    return a, b
