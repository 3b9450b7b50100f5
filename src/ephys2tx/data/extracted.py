"""Extracted feature tables (``ephys2tx extract`` output) as :class:`~ephys2tx.data.datasets.PatchSeqDataset`.

:func:`read_feature_table` reads the parquet file with its family map (the
writer is :func:`ephys2tx.features.nwb.extract.extract_features`); this is how
``ephys2tx extract`` output enters the models: the 12 families
become the dataset's family map, and the subclass labels come from a column
of the table, a separate table (``id,subclass``) or a Series. The same QC as
for the shared tables applies (:func:`ephys2tx.data.datasets._apply_qc`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pandas as pd

from ephys2tx import CLASSES
from ephys2tx.errors import InputError
from ephys2tx.io import sha256_file

#: Parquet schema metadata keys of an extracted table.
META_FAMILIES = b"ephys2tx.families"
META_SUMMARY = b"ephys2tx.summary_columns"
META_SETTINGS = b"ephys2tx.settings"
META_NOTES = b"ephys2tx.notes"

#: Label values that mean "no label" (compared stripped and lower-cased): pandas' own spellings
#: of a missing value, which a table written by another program keeps as text.
MISSING_LABELS = frozenset({"", "nan", "-nan", "na", "n/a", "#n/a", "#na", "<na>", "none", "null",
                            "-", "?"})

#: Label column looked for, in order, when ``label_column`` is not given (case-insensitive).
LABEL_CANDIDATES = ("subclass", "t type subclass", "label", "cell_type", "class")
SPECIES = ("mouse", "human")
LabelSource = pd.Series | str | os.PathLike | None


@dataclasses.dataclass(frozen=True)
class FeatureTable:
    """A table written by :func:`extract_features`, as stored.

    Attributes
    ----------
    frame : DataFrame
        Every column of the file (index: cell id as str): the family columns,
        the ``summary__*`` columns and any column added later (e.g. labels).
    families : dict
        Ordered family name -> column names (14 families; 12 for a compact table).
    summary_columns : list of str
        The IPFX summary feature columns (in no family).
    settings : dict
        Extraction settings (``ap_window``, ``compact``, ...).
    """

    frame: pd.DataFrame
    families: dict[str, list[str]]
    summary_columns: list[str]
    settings: dict

    @property
    def feature_columns(self) -> list[str]:
        """The family columns, family by family."""
        return [c for cols in self.families.values() for c in cols]


def read_feature_table(path: str | Path) -> FeatureTable:
    """Read a parquet table written by :func:`extract_features` with its metadata.

    Raises
    ------
    InputError
        Missing or unreadable file, or a parquet file without the family map
        (not written by ``ephys2tx extract``).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError(f"feature table {path} not found; create it with `ephys2tx extract`")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read {path} as parquet: {first}") from exc
    meta = table.schema.metadata or {}
    if META_FAMILIES not in meta:
        raise InputError(f"{path} has no '{META_FAMILIES.decode()}' schema metadata; it was not written "
                         "by `ephys2tx extract` (or was re-saved without its metadata)")
    frame = table.to_pandas()
    frame.index = _cell_ids(frame.index, path)
    families = _metadata(path, meta, META_FAMILIES, None, dict)
    bad = next((fam for fam, cols in families.items() if not isinstance(cols, list) or not cols
                or not all(isinstance(c, str) for c in cols)), None)
    if bad is not None:
        raise InputError(f"{path}: family {bad!r} of its '{META_FAMILIES.decode()}' metadata is not a "
                         "list of column names; the file was altered: extract it again.")
    missing = [c for cols in families.values() for c in cols if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: its '{META_FAMILIES.decode()}' metadata names column "
                         f"{missing[0]!r}, which the table lacks ({len(missing)} such); the file was "
                         "altered: extract it again.")
    for col in (c for cols in families.values() for c in cols):
        if not pd.api.types.is_numeric_dtype(frame[col]) or pd.api.types.is_bool_dtype(frame[col]):
            raise InputError(f"feature column {col!r} of {path} is not numeric ({frame[col].dtype}); "
                             "the file was altered: extract it again.")
    return FeatureTable(frame=frame, families=families,
                        summary_columns=_metadata(path, meta, META_SUMMARY, b"[]", list),
                        settings=_metadata(path, meta, META_SETTINGS, b"{}", dict))


def _cell_ids(index: pd.Index, path: Path) -> pd.Index:
    """The table's cell ids as text, as the ids of users' tables are read (``12.0`` is ``12``);
    an empty or repeated id is refused (the labels and every output are joined on them)."""
    from ephys2tx.data.user_tables import _id_strings

    ids = pd.Series(index, dtype=object)
    empty = (ids.isna() | (ids.astype(str).str.strip() == "")).to_numpy()
    if empty.any():
        row = int(empty.argmax())
        raise InputError(f"{path} has an empty cell id on row {row + 1}; give every cell an id "
                         "(extract it again).")
    ids = _id_strings(ids)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise InputError(f"{path} has the cell id {dup.iloc[0]!r} on {int((ids == dup.iloc[0]).sum())} "
                         f"rows ({len(dup)} repeated row(s)); keep one row per cell.")
    return pd.Index(ids.to_numpy(), name=index.name)


def _metadata(path: Path, meta: dict, key: bytes, default: bytes | None, kind: type):
    """One JSON entry of the parquet schema metadata, of type ``kind``, or an InputError."""
    try:
        value = json.loads(meta.get(key, default))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, too deep
        raise InputError(f"{path}: its '{key.decode()}' metadata is not valid JSON; the file was "
                         "altered: extract it again.") from exc
    if not isinstance(value, kind):
        raise InputError(f"{path}: its '{key.decode()}' metadata is a JSON {type(value).__name__}, "
                         f"not a {kind.__name__}; the file was altered: extract it again.")
    return value


def normalise_labels(raw: pd.Series) -> pd.Series:
    """Map subclass spellings onto :data:`ephys2tx.CLASSES`.

    ``Pvalb``, ``PVALB``, ``pvalb`` and ``Pvalb interneuron`` all become
    ``Pvalb``; the human ``LAMP5/PAX6/Other`` group becomes ``Lamp5`` (as for
    the shared human table). Other labels (e.g. ``Sncg``) are kept, stripped,
    and end up in the dataset's ``held_out`` part; empty values and the usual spellings of a
    missing value (:data:`MISSING_LABELS`: ``nan``, ``NA``, ``N/A``, ``None``, ``null``, ``-``,
    any case) become NA: those cells are unlabelled, not of a subclass named "nan".
    """
    from ephys2tx.data.datasets import HUMAN_LABELS, MOUSE_LABELS

    lookup = {k.lower(): v for k, v in {**MOUSE_LABELS, **HUMAN_LABELS}.items()}
    lookup.update({c.lower(): c for c in CLASSES})

    def one(value):
        if pd.isna(value) or str(value).strip().lower() in MISSING_LABELS:
            return pd.NA
        text = re.sub(r"\s+", " ", str(value).strip())
        return lookup.get(text.lower(), lookup.get(re.sub(r" interneuron$", "", text.lower()), text))

    return raw.map(one).astype(object)


def _pick_label_column(columns, label_column: str | None, where: str) -> str:
    """The label column: ``label_column`` (also when it differs only in case or blanks from one
    column), else the first of :data:`LABEL_CANDIDATES`, else the only column."""
    if label_column is not None:
        if label_column in columns:
            return label_column
        loose = [c for c in columns if str(c).strip().lower() == label_column.strip().lower()]
        if len(loose) == 1:
            return loose[0]
        raise InputError(f"{where} has no label column {label_column!r}; columns start with "
                         f"{list(columns)[:6]}")
    by_lower = {str(c).strip().lower(): c for c in columns}
    for cand in LABEL_CANDIDATES:
        if cand in by_lower:
            return by_lower[cand]
    if len(columns) == 1:
        return columns[0]
    raise InputError(f"{where} has no label column (looked for {', '.join(LABEL_CANDIDATES)}; its "
                     f"columns start with {list(columns)[:6]}); name it with --label-column "
                     "(label_column=)")


def _labels_from_file(path: Path, label_column: str | None, id_column: str | None) -> pd.Series:
    from ephys2tx.data.user_tables import read_user_table

    table = read_user_table(path, id_column=id_column)
    return table.data[_pick_label_column(list(table.data.columns), label_column, str(path))]


def as_dataset(path: str | os.PathLike, labels: LabelSource = None, *, label_column: str | None = None,
               id_column: str | None = None, name: str | None = None, species: str = "mouse",
               max_missing: float | None = None):
    """Load a table written by ``ephys2tx extract`` as a ``PatchSeqDataset``.

    Parameters
    ----------
    path : path-like
        Parquet feature table.
    labels : Series, path-like or None
        Subclass of each cell:

        * a Series indexed by cell id (the NWB file stem);
        * a table file (CSV, TSV, Parquet, Excel) with an id column (detected
          as in ``ephys2tx.data.user_tables``, or ``id_column``) and a label
          column (``label_column``, else the first of :data:`LABEL_CANDIDATES`,
          else the only other column);
        * None: the column ``label_column`` of the feature table itself, if
          given; otherwise the dataset is unlabelled (labels NA, no QC).

        Spellings are normalised by :func:`normalise_labels`.
    label_column : str, optional
        Name of the label column (in ``labels`` or, if ``labels`` is None, in
        the feature table).
    id_column : str, optional
        Id column of the ``labels`` table (default: detected).
    name : str, optional
        Dataset name (default: the file stem).
    species : {"mouse", "human"}
    max_missing : float, optional
        QC threshold: cells missing more than this fraction of the features
        are dropped (default ``ephys2tx.data.datasets.DEFAULT_MAX_MISSING``).

    Returns
    -------
    PatchSeqDataset
        Features = the 12 family columns; ``families`` = the family map of
        the file; ``metadata`` = the ``summary__*`` IPFX summary features and
        other non-feature columns of the table; ``groups`` = None (the files
        carry no donor). With labels, the shared tables' QC applies: exact
        duplicate rows, cells missing more than ``max_missing`` of the
        features and cells without one of the four classes are dropped (the
        latter kept in ``held_out`` if they have another label), and each
        step is recorded in ``qc_report``.

    Raises
    ------
    InputError
        Unreadable table or labels, unknown columns, an invalid ``species``,
        or labels that match no cell id.
    """
    from ephys2tx.data.datasets import DEFAULT_MAX_MISSING, PatchSeqDataset, _assemble, _step
    from ephys2tx.schemas import validate_families

    if species not in SPECIES:
        raise InputError(f"species must be one of {', '.join(SPECIES)}, got {species!r}")
    path = Path(path)
    table = read_feature_table(path)
    if len(table.frame) == 0:
        raise InputError(f"{path} holds no cells (a header without rows); extract cells into it with "
                         "`ephys2tx extract`, or pass a table with at least one row")
    features = table.frame[table.feature_columns].astype(float)
    name = name or path.stem
    checksums = {str(path): sha256_file(path)}
    if labels is None and label_column is not None:
        raw = table.frame[_pick_label_column(list(table.frame.columns), label_column, str(path))]
        source = f"column {label_column!r}"
    elif isinstance(labels, pd.Series):
        raw = labels.copy()
        raw.index = raw.index.map(str)
        source = "the given labels"
    elif labels is not None:
        raw = _labels_from_file(Path(labels), label_column, id_column)
        checksums[str(labels)] = sha256_file(Path(labels))
        source = str(labels)
    else:
        raw = None
    metadata = table.frame.drop(columns=table.feature_columns + ([raw.name] if raw is not None
                                                                 and raw.name in table.frame else []))
    if raw is None:
        validate_families(table.families, list(features.columns), where=str(path))
        return PatchSeqDataset(name=name, species=species, features=features,
                               labels=pd.Series(pd.NA, index=features.index, dtype=object, name="subclass"),
                               groups=None, metadata=metadata, families=table.families,
                               checksums=checksums)
    if raw.index.has_duplicates:
        raise InputError(f"labels from {source} repeat cell ids (e.g. {raw.index[raw.index.duplicated()][0]!r}); "
                         "give one label per cell")
    matched = features.index.intersection(raw.index)
    if len(matched) == 0:
        raise InputError(f"no cell id of {path} (e.g. {features.index[0]!r}) appears in the labels from "
                         f"{source} (e.g. {raw.index[0] if len(raw) else 'none'!r}); cell ids are the NWB "
                         "file stems")
    report: list[dict] = []
    _step(report, f"attach labels from {source}", len(features), len(features),
          f"{len(matched)} cells have a label entry; {len(raw) - len(matched)} labels match no cell")
    labels_all = normalise_labels(raw.reindex(features.index)).rename("subclass")
    return _assemble(name, species, features, labels_all, None, metadata, table.families, report,
                     checksums, DEFAULT_MAX_MISSING if max_missing is None else max_missing)
