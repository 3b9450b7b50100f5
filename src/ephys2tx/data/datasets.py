"""Loaders for the public Patch-seq tables.

Each loader validates its files once (checksum, required columns, numeric
values, known labels), joins features with metadata, applies the documented QC
and returns a :class:`PatchSeqDataset`.

Label decisions (documented in ``docs/data.md``):

* mouse VISp: ``T type subclass`` ``"<X> interneuron"`` -> ``X`` for Lamp5,
  Pvalb, Sst, Vip. ``Sst Chodl`` (long-range projecting, a separate subclass
  in the Tasic 2018 taxonomy) and ``Sncg`` are *not* merged into the four
  classes; they are kept aside in :attr:`PatchSeqDataset.held_out` for
  out-of-distribution checks.
* human: ``Revised_subclass_label`` PVALB, SST, VIP and LAMP5/PAX6/Other ->
  Lamp5 (the CGE-derived non-VIP group, whose largest member is LAMP5).
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from ephys2tx import CLASSES
from ephys2tx.io import sha256_file
from ephys2tx.data.missing_codes import mask_missing_codes
from ephys2tx.data.paths import ENV_VAR, resolve_data_dir
from ephys2tx.data.registry import DATASET_FILES, DataFile
from ephys2tx.errors import InputError
from ephys2tx.schemas import HUMAN_IPFX_SCHEMA, MOUSE_VISP_SCHEMA, validate_families

#: Default QC: a cell missing more than this fraction of its features is dropped.
DEFAULT_MAX_MISSING = 0.25

#: The mouse five-subclass task (comparable with Gouwens 2020): the four classes and Sncg.
FIVE_CLASSES: tuple[str, ...] = ("Lamp5", "Pvalb", "Sncg", "Sst", "Vip")

MOUSE_LABELS = {
    "Lamp5 interneuron": "Lamp5",
    "Pvalb interneuron": "Pvalb",
    "Sst interneuron": "Sst",
    "Vip interneuron": "Vip",
    "Sncg interneuron": "Sncg",
    "Sst Chodl interneuron": "Sst Chodl",
}
HUMAN_LABELS = {"PVALB": "Pvalb", "SST": "Sst", "VIP": "Vip", "LAMP5/PAX6/Other": "Lamp5"}
BRIDGE_LABELS = {"Lamp5": "Lamp5", "Vip": "Vip", "Sncg": "Sncg", "Pvalb": "Pvalb", "Sst": "Sst"}

#: Columns that carry the label or are derived from transcriptomics: never model inputs.
LABEL_PROXY_COLUMNS = (
    "Genotype (full)", "T type assignment probability", "T type class",
    "T type class assignment probability", "T type subclass",
    "T type subclass assignment probability", "VISp Viewer MET type", "VISp Viewer T type",
    "Fluorescent protein positive", "full_genotype", "corresponding_AIT2.3.1_alias",
    "Transcriptomic_type ", "subclass_label", "Revised_subclass_label",
    "M_H_Hodge_cross_species_types", "marker_sum_norm_label", "cre", "subclass", "t-type",
)

_MOUSE_META_FEATURES = ("AP maximum rate of rise (Upstroke) (mV/ms)", "Latency", "tau")


@dataclass(frozen=True)
class PatchSeqDataset:
    """A labelled electrophysiology table, ready for modelling.

    Attributes
    ----------
    name, species : str
        Dataset name (``mouse_visp``, ``human``, ...) and ``mouse``/``human``.
    features : pandas.DataFrame
        One row per cell (index: cell id as str), float columns; NaN is missing.
    labels : pandas.Series
        Subclass per cell: :data:`ephys2tx.CLASSES` (or :data:`FIVE_CLASSES`).
    groups : pandas.Series or None
        Donor (patient or animal) per cell, for grouped splits.
    metadata : pandas.DataFrame
        Everything else known about the cell. Never a model input.
    families : dict
        Ordered ``family -> columns``; every feature column in exactly one.
    qc_report : list of dict
        One record per QC step: ``step``, ``n_before``, ``n_after``, ``detail``.
    checksums : dict
        ``relpath -> sha256`` of the files read.
    held_out : PatchSeqDataset or None
        Cells that passed QC but belong to a subclass outside the four classes
        (e.g. Sncg), for out-of-distribution checks.
    """

    name: str
    species: str
    features: pd.DataFrame
    labels: pd.Series
    groups: pd.Series | None
    metadata: pd.DataFrame
    families: dict[str, list[str]]
    qc_report: list[dict] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)
    held_out: PatchSeqDataset | None = None

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return len(self.features)

    def class_counts(self) -> dict[str, int]:
        """Cells per class: :data:`ephys2tx.CLASSES` order, then any other class (e.g. Sncg) by name."""
        counts = self.labels.value_counts()
        order = [c for c in CLASSES if c in counts.index]
        order += sorted(c for c in counts.index if c not in CLASSES)
        return {c: int(counts[c]) for c in order}

    def subset(self, index) -> PatchSeqDataset:
        """The same dataset restricted to the cells ``index`` (ids)."""
        return replace(
            self,
            features=self.features.loc[index],
            labels=self.labels.loc[index],
            groups=None if self.groups is None else self.groups.loc[index],
            metadata=self.metadata.loc[index],
        )


# --------------------------------------------------------------------------- file checks


def _check_data_dir(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise InputError(
            f"data directory {data_dir} is a file, not a folder; point --data-dir (or ${ENV_VAR}) "
            "at the folder that holds the data files."
        )
    if not data_dir.is_dir():
        raise InputError(
            f"data directory {data_dir} does not exist; run `ephys2tx fetch --data-dir {data_dir}` "
            f"to download the data, or point --data-dir (or ${ENV_VAR}) at the folder that holds it."
        )


def _checked_file(data_dir: Path, spec: DataFile, dataset: str, verify: bool,
                  checksums: dict[str, str]) -> Path:
    path = data_dir / spec.relpath
    if path.is_dir():
        raise InputError(
            f"{path} is a folder, not the data file of dataset {dataset}; move the folder away, then run "
            f"`ephys2tx fetch --data-dir {data_dir}` or put the published file there."
        )
    if not path.is_file():
        raise InputError(
            f"missing file {path} (dataset {dataset}); run `ephys2tx fetch --data-dir {data_dir}` "
            "or restore the file under its published name."
        )
    # Recorded also without ``verify``: the checksums identify the data a model was trained on
    # (e.g. in the reference-model cache key), so a modified file must not pass for the published one.
    digest = sha256_file(path)
    if verify:
        if digest != spec.sha256:
            raise InputError(
                f"checksum mismatch for {path}: sha256 {digest[:12]}..., expected "
                f"{spec.sha256[:12]}...; the file is modified or another release: "
                f"{_restore_hint(path)}, or pass --no-verify to use it as it is."
            )
    checksums[spec.relpath] = digest
    return path


def _restore_hint(path: Path) -> str:
    """How to get the published copy of the data file ``path`` back (it replaces the local one)."""
    return f"restore the published file with `ephys2tx fetch --overwrite --data-dir {path.parent.parent}`"


def _matching_ids(left: pd.Index, right: pd.Index, left_path: Path, left_column: str,
                  right_path: Path, right_column: str) -> pd.Index:
    """Ids of ``left`` also in ``right`` (in ``left``'s order); none in common is an InputError."""
    common = left.intersection(right, sort=False)
    if len(common) == 0:
        raise InputError(
            f"no {left_column} of {left_path} (e.g. {left[0]!r}) is a {right_column} of "
            f"{right_path} (e.g. {right[0]!r}): the tables share no id. The two files must come "
            "from the same release: restore the published files with `ephys2tx fetch "
            f"--overwrite --data-dir {left_path.parent.parent}`."
        )
    return common


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """Read a data file: parsable, at least one row, every row complete (also with --no-verify)."""
    from ephys2tx.data.user_tables import check_complete_rows

    try:
        table = pd.read_csv(path, encoding="utf-8-sig", low_memory=False, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot parse {path} as CSV ({exc}); {_restore_hint(path)}."
                         .replace("\n", " ")) from exc
    if len(table) == 0:
        raise InputError(f"{path} has a header but no rows; {_restore_hint(path)}.")
    check_complete_rows(path)
    return table


def _require_columns(table: pd.DataFrame, columns, path: Path) -> None:
    for col in columns:
        if col not in table.columns:
            raise InputError(
                f"file {path} lacks column {col!r}; rename the column back, or "
                f"{_restore_hint(path)}."
            )


def _numeric(table: pd.DataFrame, columns, path: Path, id_column: str) -> pd.DataFrame:
    """Columns as float; a non-numeric or non-finite value is an InputError naming the cell."""
    from ephys2tx.data.user_tables import check_finite, numeric_column

    out = {col: numeric_column(table[col], column=col, where=str(path), ids=table[id_column])
           for col in columns}
    frame = pd.DataFrame(out, index=table.index)
    check_finite(frame.set_axis(table[id_column].astype(str), axis=0), where=str(path))
    return frame


def _map_labels(raw: pd.Series, mapping: Mapping[str, str], path: Path, column: str,
                ids: pd.Series) -> pd.Series:
    known = raw.isna() | raw.isin(list(mapping))
    if not known.all():
        pos = (~known).to_numpy().nonzero()[0][0]
        raise InputError(
            f"column {column!r} of {path} has unknown label {raw.iloc[pos]!r} "
            f"(cell {ids.iloc[pos]}); expected one of {sorted(mapping)}."
        )
    return raw.map(mapping)


# --------------------------------------------------------------------------- QC


def _step(report: list[dict], step: str, before: int, after: int, detail: str = "") -> None:
    report.append({"step": step, "n_before": int(before), "n_after": int(after),
                   "n_dropped": int(before - after), "detail": detail})


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _mask_codes(features: pd.DataFrame, report: list[dict]) -> pd.DataFrame:
    """Missing-value codes -> NaN (:mod:`ephys2tx.data.missing_codes`), one QC record per rule."""
    masked, counts = mask_missing_codes(features)
    n = len(features)
    for row in counts.itertuples(index=False):
        report.append({"step": f"missing-value code -> NaN: {row.rule}", "n_before": n, "n_after": n,
                       "n_dropped": 0, "rule": row.rule, "n_values": row.n_values,
                       "n_cells": row.n_cells,
                       "detail": f"{_count(row.n_values, 'value')} in {_count(row.n_cells, 'cell')} "
                                 f"({_count(len(row.columns), 'column')}: "
                                 f"{', '.join(row.columns[:3])}{', ...' if len(row.columns) > 3 else ''})"})
    return masked


def _apply_qc(features: pd.DataFrame, labels: pd.Series, report: list[dict],
              max_missing: float) -> tuple[pd.Index, pd.Index]:
    """Return (kept 4-class ids, held-out-subclass ids) after QC, recording counts."""
    n0 = len(features)
    dup_rows = features.duplicated(keep="first")
    ids = features.index[~dup_rows]
    _step(report, "drop exact duplicate feature rows", n0, len(ids),
          f"{int(dup_rows.sum())} cells whose features equal an earlier cell's")

    frac_missing = features.loc[ids].isna().mean(axis=1)
    keep = frac_missing <= max_missing
    _step(report, f"drop cells missing > {max_missing:.0%} of features", len(ids),
          int(keep.sum()))
    ids = ids[keep.to_numpy()]

    lab = labels.loc[ids]
    in_classes = lab.isin(CLASSES)
    other = lab.notna() & ~in_classes
    dropped = lab[~in_classes].fillna("no label").value_counts()
    _step(report, "drop cells without a 4-class label", len(ids), int(in_classes.sum()),
          ", ".join(f"{k}: {v}" for k, v in dropped.items()))
    return ids[in_classes.to_numpy()], ids[other.to_numpy()]


def _assemble(name, species, features, labels, groups, metadata, families, report,
              checksums, max_missing) -> PatchSeqDataset:
    from ephys2tx.data.user_tables import check_finite

    validate_families(families, list(features.columns), where=f"dataset {name}")
    files = ", ".join(checksums) or f"dataset {name}"
    if len(features) == 0:
        raise InputError(f"{files} has no cells; it needs a header and one row per cell.")
    check_finite(features, where=files)
    features = _mask_codes(features, report)
    kept, other = _apply_qc(features, labels, report, max_missing)
    if len(kept) == 0 and labels.notna().any():
        given = labels.dropna()
        if len(given) and pd.to_numeric(given.astype(str), errors="coerce").notna().all():
            raise InputError(f"the labels of {files} are numbers (e.g. {given.iloc[0]!r}), not class names; "
                             f"the label column must hold {', '.join(CLASSES)}.")
        detail = str(report[-1]["detail"] or "all")
        if len(detail) > 160:
            detail = detail[:157].rstrip() + "..."
        raise InputError(f"no cell of {files} is left after QC with one of the classes "
                         f"{', '.join(CLASSES)} (dropped: {detail}); check the "
                         "labels and the missing values.")
    held = None
    if len(other):
        held = PatchSeqDataset(
            name=f"{name}_held_out", species=species, features=features.loc[other],
            labels=labels.loc[other], groups=None if groups is None else groups.loc[other],
            metadata=metadata.loc[other], families=families, checksums=checksums,
        )
    return PatchSeqDataset(
        name=name, species=species, features=features.loc[kept], labels=labels.loc[kept],
        groups=None if groups is None else groups.loc[kept], metadata=metadata.loc[kept],
        families=families, qc_report=report, checksums=checksums, held_out=held,
    )


def _dedupe_ids(table: pd.DataFrame, id_column: str, path: Path, report: list[dict],
                what: str) -> pd.DataFrame:
    """Drop rows whose id repeats with identical content; conflicting repeats are an error."""
    dup = table[id_column].duplicated(keep=False)
    if not dup.any():
        return table
    exact = table.duplicated(keep="first")
    conflicting = table[dup & ~table.duplicated(keep=False)]
    if len(conflicting):
        raise InputError(
            f"{path} has conflicting rows for {id_column} {conflicting[id_column].iloc[0]}; "
            "keep one row per cell."
        )
    out = table[~exact]
    _step(report, f"drop repeated {id_column} rows of {path.name}", len(table), len(out),
          "same id, identical content")
    return out


# --------------------------------------------------------------------------- mouse VISp


def _mouse_donors() -> pd.DataFrame | None:
    """Donor ids of the Gouwens 2020 cells, from the metadata that ships with ipfx."""
    try:
        ref = importlib.resources.files("ipfx") / "data_release" / "20200625_patchseq_metadata_mouse.csv"
        with importlib.resources.as_file(ref) as path:
            table = pd.read_csv(path, usecols=["cell_specimen_id", "donor_id", "biological_sex", "age"])
    except (ModuleNotFoundError, FileNotFoundError, ValueError):
        return None
    table = table.drop_duplicates("cell_specimen_id")
    table.index = table.pop("cell_specimen_id").astype(str)
    return table


def load_mouse_visp(data_dir=None, *, verify: bool = True,
                    max_missing: float = DEFAULT_MAX_MISSING) -> PatchSeqDataset:
    """Mouse VISp GABAergic cells (Gouwens et al. 2020), 32 features in 12 families."""
    root = resolve_data_dir(data_dir)
    _check_data_dir(root)
    files = DATASET_FILES["mouse_visp"]
    checksums: dict[str, str] = {}
    ephys_path = _checked_file(root, files["ephys"], "mouse_visp", verify, checksums)
    meta_path = _checked_file(root, files["meta"], "mouse_visp", verify, checksums)
    ephys = _read_csv(ephys_path)
    meta = _read_csv(meta_path)
    ephys_cols = [c for c in MOUSE_VISP_SCHEMA.columns if c not in _MOUSE_META_FEATURES]
    _require_columns(ephys, ["Cell ID", *ephys_cols], ephys_path)
    _require_columns(meta, ["Cell ID", "T type subclass", *_MOUSE_META_FEATURES], meta_path)
    report: list[dict] = []
    ephys = _dedupe_ids(ephys, "Cell ID", ephys_path, report, "feature")
    meta = _dedupe_ids(meta, "Cell ID", meta_path, report, "metadata")

    x_ephys = _numeric(ephys, ephys_cols, ephys_path, "Cell ID")
    x_ephys.index = ephys["Cell ID"].astype(str)
    x_meta = _numeric(meta, _MOUSE_META_FEATURES, meta_path, "Cell ID")
    x_meta.index = meta["Cell ID"].astype(str)
    meta_table = meta.drop(columns=list(_MOUSE_META_FEATURES)).set_index(
        meta["Cell ID"].astype(str)).drop(columns="Cell ID")
    labels_all = _map_labels(meta["T type subclass"], MOUSE_LABELS, meta_path,
                             "T type subclass", meta["Cell ID"])
    labels_all.index = meta_table.index

    common = _matching_ids(x_ephys.index, x_meta.index, ephys_path, "Cell ID", meta_path, "Cell ID")
    _step(report, "join features with metadata on Cell ID", len(x_ephys), len(common))
    features = x_ephys.loc[common].join(x_meta.loc[common])[MOUSE_VISP_SCHEMA.columns]
    metadata = meta_table.loc[common]
    donors = _mouse_donors()
    groups = None
    if donors is not None:
        metadata = metadata.join(donors, how="left")
        groups = metadata["donor_id"].astype("string").fillna("unknown:" + metadata.index.to_series())
        groups.name = "donor"
    return _assemble("mouse_visp", "mouse", features, labels_all.loc[common], groups, metadata,
                     MOUSE_VISP_SCHEMA.as_dict(), report, checksums, max_missing)


def with_held_out_class(dataset: PatchSeqDataset, subclass: str, name: str) -> PatchSeqDataset:
    """``dataset`` with the held-out cells of ``subclass`` added back as a class (appended).

    The added cells passed the same QC (missing-value codes, duplicates,
    missingness) as the others; the step is recorded in ``qc_report``.
    """
    held = dataset.held_out
    if held is None or not (held.labels == subclass).any():
        raise InputError(f"dataset {dataset.name} holds no held-out {subclass} cells.")
    ids = held.labels.index[held.labels == subclass]
    added = held.subset(ids)
    rest = held.labels.index[held.labels != subclass]
    step = {"step": f"add the held-out {subclass} cells as a class", "n_before": dataset.n_cells,
            "n_after": dataset.n_cells + len(ids), "n_dropped": -len(ids),
            "detail": f"{len(ids)} {subclass} cells"}
    groups = None if dataset.groups is None else pd.concat([dataset.groups, added.groups])
    return replace(
        dataset, name=name, features=pd.concat([dataset.features, added.features]),
        labels=pd.concat([dataset.labels, added.labels]), groups=groups,
        metadata=pd.concat([dataset.metadata, added.metadata]),
        qc_report=[*dataset.qc_report, step],
        held_out=held.subset(rest) if len(rest) else None)


def load_mouse_visp_5class(data_dir=None, *, verify: bool = True,
                           max_missing: float = DEFAULT_MAX_MISSING) -> PatchSeqDataset:
    """Mouse VISp with Sncg as a fifth subclass (:data:`FIVE_CLASSES`; Sst Chodl held out).

    The task of Gouwens et al. 2020, for comparison with the published scores:
    :func:`load_mouse_visp` with its Sncg cells appended as a class.
    """
    return with_held_out_class(load_mouse_visp(data_dir, verify=verify, max_missing=max_missing),
                               "Sncg", "mouse_visp_5class")


# --------------------------------------------------------------------------- human


def load_human(data_dir=None, *, verify: bool = True,
               max_missing: float = DEFAULT_MAX_MISSING) -> PatchSeqDataset:
    """Human neocortical GABAergic cells (Lee, Dalley et al. 2023), 93 IPFX features."""
    root = resolve_data_dir(data_dir)
    _check_data_dir(root)
    files = DATASET_FILES["human"]
    checksums: dict[str, str] = {}
    ephys_path = _checked_file(root, files["ephys"], "human", verify, checksums)
    meta_path = _checked_file(root, files["meta"], "human", verify, checksums)
    donor_path = _checked_file(root, files["donors"], "human", verify, checksums)
    ephys = _read_csv(ephys_path)
    meta = _read_csv(meta_path)
    donors = _read_csv(donor_path)
    columns = HUMAN_IPFX_SCHEMA.columns
    _require_columns(ephys, ["specimen_id", *columns], ephys_path)
    _require_columns(meta, ["specimen_id_x", "Donor", "condition", "Revised_subclass_label"], meta_path)
    _require_columns(donors, ["Donor"], donor_path)
    report: list[dict] = []
    ephys = _dedupe_ids(ephys, "specimen_id", ephys_path, report, "feature")
    meta = _dedupe_ids(meta, "specimen_id_x", meta_path, report, "metadata")

    features = _numeric(ephys, columns, ephys_path, "specimen_id")
    features.index = ephys["specimen_id"].astype(str)
    meta = meta.set_index(meta["specimen_id_x"].astype(str)).drop(columns="specimen_id_x")
    donor_info = donors.drop_duplicates("Donor").set_index("Donor")
    _matching_ids(pd.Index(meta["Donor"].dropna().unique()), donor_info.index, meta_path, "Donor",
                  donor_path, "Donor")
    donor_info = donor_info.drop(columns=[c for c in donor_info.columns if c in meta.columns])
    meta = meta.join(donor_info, on="Donor")
    labels_all = _map_labels(meta["Revised_subclass_label"], HUMAN_LABELS, meta_path,
                             "Revised_subclass_label", meta.index.to_series())

    common = _matching_ids(features.index, meta.index, ephys_path, "specimen_id", meta_path,
                           "specimen_id_x")
    _step(report, "join features with metadata on specimen_id", len(features), len(common))
    groups = meta.loc[common, "Donor"].astype("string")
    groups.name = "donor"
    return _assemble("human", "human", features.loc[common], labels_all.loc[common], groups,
                     meta.loc[common], HUMAN_IPFX_SCHEMA.as_dict(), report, checksums, max_missing)


# --------------------------------------------------------------------------- mouse L1 bridge


def load_mouse_l1_bridge(data_dir=None, *, verify: bool = True,
                         max_missing: float = 1.0) -> PatchSeqDataset:
    """Mouse L1 cells in the human IPFX naming (Chartrand et al. 2023).

    Only the columns that the human schema also has are features (the other
    columns are QC flags or features without a human counterpart). Labels are
    Lamp5/Vip (Sncg in :attr:`held_out`). By default no missingness QC, so all
    cells stay available for the cross-species verification.
    """
    root = resolve_data_dir(data_dir)
    _check_data_dir(root)
    files = DATASET_FILES["mouse_l1_bridge"]
    checksums: dict[str, str] = {}
    ephys_path = _checked_file(root, files["ephys"], "mouse_l1_bridge", verify, checksums)
    meta_path = _checked_file(root, files["meta"], "mouse_l1_bridge", verify, checksums)
    ephys = _read_csv(ephys_path)
    meta = _read_csv(meta_path)
    _require_columns(ephys, ["cell_name"], ephys_path)
    _require_columns(meta, ["spec_id", "subclass"], meta_path)
    report: list[dict] = []
    ephys = _dedupe_ids(ephys, "cell_name", ephys_path, report, "feature")
    meta = meta.loc[:, ~meta.columns.duplicated()]
    meta = _dedupe_ids(meta, "spec_id", meta_path, report, "metadata")
    columns = [c for c in HUMAN_IPFX_SCHEMA.columns if c in ephys.columns]
    features = _numeric(ephys, columns, ephys_path, "cell_name")
    features.index = ephys["cell_name"].astype(str)
    meta = meta.set_index(meta["spec_id"].astype(str))
    _matching_ids(features.index, meta.index, ephys_path, "cell_name", meta_path, "spec_id")
    labels = _map_labels(meta["subclass"], BRIDGE_LABELS, meta_path, "subclass",
                         meta.index.to_series())
    labels = labels.reindex(features.index)
    metadata = meta.reindex(features.index)
    n_meta = int(metadata["spec_id"].notna().sum())
    _step(report, "attach metadata on cell_name = spec_id", len(features), len(features),
          f"{n_meta} cells have metadata; the others have no label")
    return _assemble("mouse_l1_bridge", "mouse", features, labels, None, metadata,
                     HUMAN_IPFX_SCHEMA.restricted_to(columns), report, checksums, max_missing)


LOADERS = {
    "mouse_visp": load_mouse_visp,
    "mouse_visp_5class": load_mouse_visp_5class,
    "human": load_human,
    "mouse_l1_bridge": load_mouse_l1_bridge,
}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, **kwargs) -> PatchSeqDataset:
    """Load a registered dataset by name (``mouse_visp``, ``mouse_visp_5class``, ``human``, ``mouse_l1_bridge``).

    Parameters
    ----------
    name : str
        Dataset name.
    data_dir : path-like, optional
        Data directory; see :func:`ephys2tx.data.paths.resolve_data_dir`.
    **kwargs
        ``verify`` (checksums, default True) and ``max_missing`` (QC threshold).
    """
    if name not in LOADERS:
        raise InputError(f"unknown dataset {name!r}; choose from {', '.join(LOADERS)}.")
    return LOADERS[name](data_dir, **kwargs)


def load_bridge_features(data_dir=None, *, verify: bool = True) -> pd.DataFrame:
    """All numeric IPFX columns of the mouse L1 bridge table, for every cell (no QC, no labels).

    Missing-value codes are NaN (:func:`~ephys2tx.data.missing_codes.mask_missing_codes`).

    Used to verify the mouse -> human feature mapping on the cells that are
    also in the VISp table.
    """
    root = resolve_data_dir(data_dir)
    _check_data_dir(root)
    spec = DATASET_FILES["mouse_l1_bridge"]["ephys"]
    path = _checked_file(root, spec, "mouse_l1_bridge", verify, {})
    table = _read_csv(path)
    _require_columns(table, ["cell_name"], path)
    numeric = [c for c in table.columns if c != "cell_name" and pd.api.types.is_numeric_dtype(table[c])]
    out = table[numeric].astype(float)
    out.index = table["cell_name"].astype(str)
    return mask_missing_codes(out)[0]
