"""Column maps: a user's column names and units -> canonical IPFX features.

A column map is a YAML file::

    name: my_lab
    description: features exported by our analysis scripts
    strict: true          # default; every listed column must be in the table
    id_column: Cell       # optional; default: detected (cell_id, specimen_id, Cell ID, ...)
    columns:
      - column: "AP width (ms)"      # the user's column
        name: width_rheo             # canonical IPFX name (see ephys2tx.features.canonical)
        unit: ms                     # the column's unit; converted to the canonical unit (s)
      - column: "AHP (mV)"
        name: fast_trough_deltav_rheo
        unit: mV
        sign: -1                     # optional: flip the sign
      - column: "Peak V (ramp) (mV)"
        minus: "Threshold V (ramp) (mV)"   # optional: subtract another column first
        name: peak_deltav_ramp
        unit: mV
        offset: 0.0                  # optional, in the canonical unit, added last
        scale: 1.0                   # optional extra multiplier

The canonical value is ``sign * (column - minus) * unit_factor * scale + offset``.
Three maps ship with the package (:data:`SHIPPED_MAPS`): ``allen_celltypes``
(the Allen Cell Types / VISp table naming), ``ipfx`` (identity for IPFX
names, as in the human table) and ``ipfx_record`` (the ``summary__*`` IPFX
cell-record columns written by ``ephys2tx extract`` from NWB files). Shipped
maps are not strict: columns the table lacks are skipped.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ephys2tx.errors import InputError
from ephys2tx.features.canonical import CANONICAL_FEATURES, require_canonical, unit_factor

__all__ = [
    "SHIPPED_MAPS",
    "ColumnMap",
    "ColumnMapEntry",
    "apply_column_map",
    "load_column_map",
    "resolve_column_map",
    "shipped_map_path",
]

SHIPPED_MAPS = ("allen_celltypes", "ipfx", "ipfx_record")
_ENTRY_KEYS = {"column", "name", "unit", "sign", "offset", "scale", "minus"}
_MAP_KEYS = {"name", "description", "strict", "id_column", "columns"}


@dataclass(frozen=True)
class ColumnMapEntry:
    """One user column (optionally minus another) -> one canonical feature."""

    column: str
    name: str
    unit: str
    sign: float = 1.0
    offset: float = 0.0
    scale: float = 1.0
    minus: str | None = None

    @property
    def factor(self) -> float:
        """Total multiplier: sign * unit conversion * scale."""
        return self.sign * unit_factor(self.unit, CANONICAL_FEATURES[self.name].unit) * self.scale

    def describe(self) -> str:
        """Human-readable conversion, for messages and reports."""
        src = self.column + (f" − {self.minus}" if self.minus else "")
        parts = [f"{src} [{self.unit}]"]
        if self.factor != 1.0:
            parts.append(f"× {self.factor:g}")
        if self.offset:
            parts.append(f"+ {self.offset:g}")
        return " ".join(parts) + f" -> {self.name} [{CANONICAL_FEATURES[self.name].unit}]"


@dataclass(frozen=True)
class ColumnMap:
    """A validated column map."""

    name: str
    entries: tuple[ColumnMapEntry, ...]
    strict: bool = True
    description: str = ""
    id_column: str | None = None
    source: str = "<memory>"
    extra: dict = field(default_factory=dict)

    @property
    def canonical_names(self) -> list[str]:
        """Canonical names produced, in entry order."""
        return [e.name for e in self.entries]


def _number(value, key: str, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {key!r} must be a number, got {value!r}.") from exc
    if not np.isfinite(out):
        raise InputError(f"{where}: {key!r} must be finite, got {value!r}.")
    return out


def _check_keys(mapping: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise InputError(f"{where} has unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}.")


def column_map_from_dict(spec: dict, *, source: str = "<memory>") -> ColumnMap:
    """Validate a parsed YAML mapping and build a :class:`ColumnMap`.

    Raises
    ------
    InputError
        Unknown keys, unknown canonical names, unknown or mismatched units,
        a canonical name mapped twice, bad sign/offset/scale.
    """
    if not isinstance(spec, dict):
        raise InputError(f"column map {source} must be a YAML mapping with a 'columns' list.")
    _check_keys(spec, _MAP_KEYS, f"column map {source}")
    raw = spec.get("columns")
    if not isinstance(raw, list) or not raw:
        raise InputError(f"column map {source} needs a non-empty 'columns' list of entries with "
                         "'column', 'name' and 'unit'.")
    entries, seen = [], {}
    for i, item in enumerate(raw):
        where = f"column map {source}, entry {i + 1}"
        if not isinstance(item, dict):
            raise InputError(f"{where} must be a mapping with 'column', 'name' and 'unit'.")
        _check_keys(item, _ENTRY_KEYS, where)
        for key in ("column", "name"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise InputError(f"{where} needs a {key!r} string.")
        where = f"column map {source}, column {item['column']!r}"
        feature = require_canonical(item["name"], where=where)
        unit = str(item.get("unit", feature.unit))
        unit_factor(unit, feature.unit, where=f"{where} ({item['name']} is in {feature.unit})")
        sign = _number(item.get("sign", 1), "sign", where)
        if sign not in (1.0, -1.0):
            raise InputError(f"{where}: 'sign' must be 1 or -1, got {item['sign']!r}.")
        if item["name"] in seen:
            raise InputError(f"column map {source} maps canonical {item['name']!r} twice (columns "
                             f"{seen[item['name']]!r} and {item['column']!r}); keep one.")
        seen[item["name"]] = item["column"]
        minus = item.get("minus")
        if minus is not None and not isinstance(minus, str):
            raise InputError(f"{where}: 'minus' must be a column name.")
        entries.append(ColumnMapEntry(
            column=item["column"], name=item["name"], unit=unit, sign=sign,
            offset=_number(item.get("offset", 0.0), "offset", where),
            scale=_number(item.get("scale", 1.0), "scale", where), minus=minus))
    return ColumnMap(name=str(spec.get("name", Path(source).stem)), entries=tuple(entries),
                     strict=bool(spec.get("strict", True)), description=str(spec.get("description", "")),
                     id_column=spec.get("id_column"), source=source)


def shipped_map_path(name: str) -> Path:
    """Path of a shipped map (one of :data:`SHIPPED_MAPS`)."""
    ref = importlib.resources.files("ephys2tx.features") / "column_maps" / f"{name}.yaml"
    return Path(str(ref))


def load_column_map(path_or_name: str | os.PathLike) -> ColumnMap:
    """Load a column map from a YAML path, or a shipped map by name."""
    text = str(path_or_name)
    path = Path(text)
    if not path.exists() and text in SHIPPED_MAPS:
        return _shipped_map(text)
    return _load_yaml_map(path, text)


@functools.cache
def _shipped_map(name: str) -> ColumnMap:
    return _load_yaml_map(shipped_map_path(name), name)


def _load_yaml_map(path: Path, text: str) -> ColumnMap:
    import yaml

    if not path.is_file():
        raise InputError(f"column map {text} does not exist; give a YAML file or one of "
                         f"{', '.join(SHIPPED_MAPS)}.")
    try:
        # libyaml's loader when available: 10x faster on the 93-entry shipped map
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        spec = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.YAMLError as exc:
        first = str(exc).replace("\n", " ")
        raise InputError(f"column map {path} is not valid YAML: {first}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"column map {path} is not UTF-8 text (byte {exc.start}); save it as "
                         "UTF-8.") from exc
    return column_map_from_dict(spec, source=str(path))


def resolve_column_map(spec: str | os.PathLike | ColumnMap | None, columns) -> ColumnMap:
    """The map to use: ``spec`` if given, else the shipped map matching the most columns."""
    if isinstance(spec, ColumnMap):
        return spec
    if spec is not None:
        return load_column_map(spec)
    present = set(columns)
    best, best_n = None, 0
    for name in SHIPPED_MAPS:
        cmap = load_column_map(name)
        n = sum(e.column in present and (e.minus is None or e.minus in present) for e in cmap.entries)
        if n > best_n:
            best, best_n = cmap, n
    if best is None:
        raise InputError("no column of the table is an IPFX or Allen Cell Types feature name; "
                         "write a column map (see docs/mapping.md) and pass --column-map.")
    return best


def _numeric_column(table: pd.DataFrame, column: str, where: str) -> np.ndarray:
    raw = table[column]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        return raw.to_numpy(dtype=float, na_value=np.nan)
    values = pd.to_numeric(raw, errors="coerce")
    suspect = values.isna() & raw.notna()
    if suspect.any():
        text = raw[suspect].astype(str).str.strip()
        bad = text[text != ""]
        if len(bad):
            cell = bad.index[0]
            raise InputError(f"column {column!r} of {where} has non-numeric value {raw[cell]!r} "
                             f"(cell {cell}); fix it or leave it empty for missing.")
    return values.to_numpy(dtype=float, na_value=np.nan)


def apply_column_map(cmap: ColumnMap, table: pd.DataFrame, *, where: str = "the table"
                     ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Canonical features of ``table`` (index kept) and ``canonical -> source column``.

    Raises
    ------
    InputError
        A strict map names a column the table lacks, a value is not numeric,
        or no entry of the map applies.
    """
    out, sources = {}, {}
    for entry in cmap.entries:
        needed = [entry.column] + ([entry.minus] if entry.minus else [])
        missing = [c for c in needed if c not in table.columns]
        if missing:
            if cmap.strict:
                raise InputError(f"column map {cmap.source} names column {missing[0]!r} "
                                 f"(for {entry.name}), which {where} does not have; fix the map "
                                 "or the column name.")
            continue
        values = _numeric_column(table, entry.column, where)
        if entry.minus:
            values = values - _numeric_column(table, entry.minus, where)
        out[entry.name] = values * entry.factor + entry.offset
        sources[entry.name] = entry.column
    if not out:
        raise InputError(f"no column of column map {cmap.source} is in {where}; pass a column map "
                         "that names the table's columns (see docs/mapping.md).")
    return pd.DataFrame(out, index=table.index), sources
