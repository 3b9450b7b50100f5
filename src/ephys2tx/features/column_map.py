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
      - column: "Sag (peak/steady)"
        name: sag
        unit: "1"
        expr: "1 - 1/x"              # optional non-linear conversion (see below)

The canonical value is ``sign * f(column - minus) * unit_factor * scale + offset``
where ``f`` is the entry's ``expr`` (identity by default): an arithmetic
expression in ``x`` (the column value) with numbers, ``+ - * / **``,
parentheses and the functions ``log``, ``log10``, ``exp``, ``sqrt`` and ``abs``.
It is parsed with :mod:`ast` and evaluated by walking the tree over a whitelist
(never ``eval``): e.g. ``1 - 1/x`` turns a peak/steady sag ratio into IPFX sag,
``(x - 1) / (x + 1)`` a ratio of consecutive ISIs into the IPFX adaptation index.
Three maps ship with the package (:data:`SHIPPED_MAPS`): ``allen_celltypes``
(the Allen Cell Types / VISp table naming), ``ipfx`` (identity for IPFX
names, as in the human table) and ``ipfx_record`` (the ``summary__*`` IPFX
cell-record columns written by ``ephys2tx extract`` from NWB files). Shipped
maps are not strict: columns the table lacks are skipped.

Without an explicit map, :func:`detect_column_map` picks a shipped map only if
it explains at least :data:`MIN_COVERAGE` of the table's numeric columns, and
breaks ties with the unit checks (a table in IPFX units is not read through
the Allen map, whose ``tau`` is in ms); it says which map and columns it used.
"""

from __future__ import annotations

import ast
import functools
import importlib.resources
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ephys2tx.errors import InputError, short_repr as _show
from ephys2tx.features.canonical import CANONICAL_FEATURES, require_canonical, unit_factor

__all__ = [
    "MIN_COVERAGE",
    "SHIPPED_MAPS",
    "ColumnMap",
    "ColumnMapEntry",
    "SafeExpression",
    "apply_column_map",
    "describe_detection",
    "detect_column_map",
    "expr_losses",
    "load_column_map",
    "match_table_columns",
    "resolve_column_map",
    "shipped_map_path",
]

SHIPPED_MAPS = ("allen_celltypes", "ipfx", "ipfx_record")
#: A shipped map is applied without ``--column-map`` only if it explains at least this
#: share of the table's numeric columns (the id column aside).
MIN_COVERAGE = 0.5
_ENTRY_KEYS = {"column", "name", "unit", "sign", "offset", "scale", "minus", "expr"}


class SafeExpression:
    """An arithmetic expression in ``x``, parsed with :mod:`ast` and evaluated on a whitelist.

    Allowed: numbers, the name ``x``, ``+ - * / **`` (binary), unary ``+ -``,
    parentheses, and calls of ``log`` (natural), ``log10``, ``exp``, ``sqrt``
    and ``abs`` with one argument. Anything else (attributes, other names,
    subscripts, comparisons, keywords, strings) is refused when the map is
    loaded. Evaluation is vectorised over a NumPy array; results that are not
    finite (``1/0``, ``log(-1)``) become NaN (missing).
    """

    FUNCTIONS = {"log": np.log, "log10": np.log10, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs}
    _BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
               ast.Pow: np.power}
    _UNARY = {ast.UAdd: np.positive, ast.USub: np.negative}
    MAX_LENGTH = 200
    MAX_NODES = 60

    def __init__(self, text: str, *, where: str = "column map"):
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{where}: 'expr' must be a non-empty expression in x, e.g. '1 - 1/x'.")
        if len(text) > self.MAX_LENGTH:
            raise InputError(f"{where}: 'expr' is longer than {self.MAX_LENGTH} characters.")
        self.text = text.strip()
        try:
            tree = ast.parse(self.text, mode="eval")
        except SyntaxError as exc:
            raise InputError(f"{where}: 'expr' {self.text!r} is not a valid expression "
                             f"({exc.msg}); write e.g. '1 - 1/x'.") from None
        nodes = list(ast.walk(tree))
        if len(nodes) > self.MAX_NODES:
            raise InputError(f"{where}: 'expr' {self.text!r} is too long; keep it to a short formula.")
        self._check(tree.body, where)
        self._tree = tree.body

    def _check(self, node, where) -> None:
        bad = None
        if isinstance(node, ast.BinOp):
            if type(node.op) not in self._BINARY:
                bad = type(node.op).__name__
            else:
                self._check(node.left, where)
                self._check(node.right, where)
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in self._UNARY:
                bad = type(node.op).__name__
            else:
                self._check(node.operand, where)
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                bad = repr(node.value)
        elif isinstance(node, ast.Name):
            if node.id != "x":
                bad = f"name {node.id!r}"
        elif isinstance(node, ast.Call):
            if (not isinstance(node.func, ast.Name) or node.func.id not in self.FUNCTIONS
                    or len(node.args) != 1 or node.keywords):
                name = node.func.id if isinstance(node.func, ast.Name) else "this call"
                bad = f"call of {name}"
            else:
                self._check(node.args[0], where)
        else:
            bad = type(node).__name__
        if bad is not None:
            raise InputError(f"{where}: 'expr' {self.text!r} uses {bad}, which is not allowed; use "
                             "numbers, x, + - * / **, parentheses and "
                             f"{', '.join(self.FUNCTIONS)}.")

    def _eval(self, node, x):
        if isinstance(node, ast.BinOp):
            return self._BINARY[type(node.op)](self._eval(node.left, x), self._eval(node.right, x))
        if isinstance(node, ast.UnaryOp):
            return self._UNARY[type(node.op)](self._eval(node.operand, x))
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return x
        return self.FUNCTIONS[node.func.id](self._eval(node.args[0], x))

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        with np.errstate(all="ignore"):
            out = np.asarray(self._eval(self._tree, x), dtype=float)
        out = np.broadcast_to(out, x.shape).copy()
        out[~np.isfinite(out)] = np.nan
        return out

    def __repr__(self) -> str:
        return f"SafeExpression({self.text!r})"


@functools.lru_cache(maxsize=256)
def _compiled(text: str) -> SafeExpression:
    return SafeExpression(text)
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
    expr: str | None = None

    @property
    def factor(self) -> float:
        """Total multiplier: sign * unit conversion * scale."""
        return self.sign * unit_factor(self.unit, CANONICAL_FEATURES[self.name].unit) * self.scale

    def describe(self) -> str:
        """Human-readable conversion, for messages and reports."""
        src = self.column + (f" − {self.minus}" if self.minus else "")
        if self.expr:
            src = f"({self.expr} with x = {src})"
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


#: Largest magnitude of a map's ``offset`` and ``scale`` (as for a table's values).
MAX_MAGNITUDE = 1e15
#: ``expr`` is tried on these values when the map is loaded: it must use ``x`` and must not
#: send them all to one value (``x*0``, ``x-x``, ``x**1e-300``, ``x**(10**400)``).
EXPR_TEST_VALUES = (-50.0, -3.0, -1.5, -0.5, -0.1, 0.1, 0.3, 0.5, 0.7, 1.5, 2.5, 10.0, 200.0)


def _number(value, key: str, where: str) -> float:
    from ephys2tx.io import yaml_number

    out = yaml_number(value)
    if out is None:
        kind = "empty (None)" if value is None else _what(value)
        raise InputError(f"{where}: {key!r} must be a number, got {kind}; write "
                         f"a number, e.g. {key}: {'-1' if key == 'sign' else '0.001'}.")
    if not np.isfinite(out) or abs(out) > MAX_MAGNITUDE:
        raise InputError(f"{where}: {key!r} must be a finite number of magnitude <= "
                         f"{MAX_MAGNITUDE:g}, got {_show(value)}; fix the number.")
    return out


def _what(value) -> str:
    """What a YAML value is, for messages: ``a list ([1, 2])``, ``text ('tau')``, ``nothing``."""
    if value is None:
        return "nothing"
    import numbers

    kind = {bool: "true/false", str: "text", list: "a list", dict: "a mapping"}.get(
        type(value), "a number" if isinstance(value, numbers.Real) else type(value).__name__)
    return f"{kind} ({_show(value)})"


def _text(spec: dict, key: str, where: str, default: str | None = None) -> str | None:
    value = spec.get(key, default)
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where}: {key!r} must be text, got {_show(value)}; quote it.")
    return value


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
        raise InputError(f"column map {source} must be a YAML mapping with a 'columns' list; it holds "
                         f"{_what(spec)}{' (is it a table?)' if isinstance(spec, str) and ',' in spec else ''}"
                         "; see docs/mapping.md.")
    _check_keys(spec, _MAP_KEYS, f"column map {source}")
    raw = spec.get("columns")
    if not isinstance(raw, list) or not raw:
        raise InputError(f"column map {source} needs a non-empty 'columns' list (it holds {_what(raw)}) "
                         "of entries with "
                         "'column', 'name' and 'unit'.")
    entries, seen = [], {}
    for i, item in enumerate(raw):
        where = f"column map {source}, entry {i + 1}"
        if not isinstance(item, dict):
            raise InputError(f"{where} must be a mapping with 'column', 'name' and 'unit', got "
                             f"{_what(item)}, e.g. - {{column: 'Tau (ms)', name: tau, unit: ms}}.")
        _check_keys(item, _ENTRY_KEYS, where)
        for key in ("column", "name"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise InputError(f"{where} needs a {key!r} string (got {_show(item.get(key))}); "
                                 "quote names that YAML reads as numbers or true/false.")
        # table headers are read stripped of surrounding blanks: so are the map's names
        item = {**item, "column": item["column"].strip(), "name": item["name"].strip()}
        where = f"column map {source}, column {item['column']!r}"
        feature = require_canonical(item["name"], where=where)
        unit = item.get("unit", feature.unit)
        if isinstance(unit, bool) or not isinstance(unit, (str, int)) or not str(unit).strip():
            raise InputError(f"{where}: 'unit' must be a unit such as {feature.unit!r} (the unit of "
                             f"{item['name']}), got {_show(unit)}.")
        unit = str(unit).strip()
        unit_factor(unit, feature.unit, where=f"{where} ({item['name']} is in {feature.unit})")
        sign = _number(item.get("sign", 1), "sign", where)
        if sign not in (1.0, -1.0):
            raise InputError(f"{where}: 'sign' must be 1 or -1, got {_show(item['sign'])}.")
        if item["name"] in seen:
            raise InputError(f"column map {source} maps canonical {item['name']!r} twice (columns "
                             f"{seen[item['name']]!r} and {item['column']!r}); keep one.")
        if item["column"] in seen.values():
            other = next(k for k, v in seen.items() if v == item["column"])
            raise InputError(f"column map {source} reads column {item['column']!r} twice (as {other} "
                             f"and as {item['name']}); one column of the table is one feature: "
                             "keep the entry that names what the column measures.")
        seen[item["name"]] = item["column"]
        minus = item.get("minus")
        if minus is not None and (not isinstance(minus, str) or not minus.strip()):
            raise InputError(f"{where}: 'minus' must be a column name, got {_show(minus)}.")
        minus = minus.strip() if minus is not None else None
        if minus is not None and minus == item["column"]:
            raise InputError(f"{where}: 'minus' names the column itself, so every value would be "
                             "0; name the column to subtract.")
        scale = _number(item.get("scale", 1.0), "scale", where)
        if scale == 0:
            raise InputError(f"{where}: 'scale' is 0, so every value would be the offset; give "
                             "the factor that converts the column (e.g. 0.001).")
        if abs(scale) < 1 / MAX_MAGNITUDE:
            raise InputError(f"{where}: 'scale' {scale:g} is so small that every value would be about "
                             f"the offset (at least {1 / MAX_MAGNITUDE:g} in magnitude); give the factor "
                             "that converts the column (e.g. 0.001).")
        expr = item.get("expr")
        if expr is not None:  # validated now, not when applied
            expr = _check_expression(SafeExpression(expr, where=where), where).text
        entries.append(ColumnMapEntry(
            column=item["column"], name=item["name"], unit=unit, sign=sign,
            offset=_number(item.get("offset", 0.0), "offset", where),
            scale=scale, minus=minus, expr=expr))
    id_column = spec.get("id_column")
    if id_column is not None and (not isinstance(id_column, str) or not id_column.strip()):
        raise InputError(f"column map {source}: 'id_column' must be a column name, got "
                         f"{_show(id_column)}.")
    strict = spec.get("strict", True)
    if not isinstance(strict, bool):
        raise InputError(f"column map {source}: 'strict' must be true or false (unquoted), got "
                         f"{_show(strict)}; true: every listed column must be in the table.")
    name = _text(spec, "name", f"column map {source}", Path(source).stem)
    description = _text(spec, "description", f"column map {source}", "")
    return ColumnMap(name=name, entries=tuple(entries), strict=strict, description=description or "",
                     id_column=id_column, source=source)


def _check_expression(expression: SafeExpression, where: str) -> SafeExpression:
    """Refuse an ``expr`` that ignores ``x`` or sends distinct values to one value."""
    import ast as _ast

    if not any(isinstance(node, _ast.Name) for node in _ast.walk(expression._tree)):
        raise InputError(f"{where}: 'expr' {expression.text!r} does not use x, so every cell would "
                         "get the same value; write the conversion of the column value x, e.g. "
                         "'1 - 1/x'.")
    _check_not_constant(expression, np.asarray(EXPR_TEST_VALUES), where, "test values")
    return expression


def _check_not_constant(expression: SafeExpression, x: np.ndarray, where: str, what: str) -> None:
    """Refuse when at least 3 distinct finite ``x`` give finite results that are all equal."""
    x = np.unique(x[np.isfinite(x)])
    y = expression(x)
    finite = np.isfinite(y)
    if finite.sum() >= 3 and np.unique(y[finite]).size == 1:
        raise InputError(f"{where}: 'expr' {expression.text!r} gives {float(y[finite][0]) + 0.0:g} for "
                         f"every one of {int(finite.sum())} different {what} (e.g. x = "
                         f"{', '.join(f'{v:g}' for v in x[finite][:3])}), so it would erase the "
                         "feature; fix the expr.")


def shipped_map_path(name: str) -> Path:
    """Path of a shipped map (one of :data:`SHIPPED_MAPS`)."""
    ref = importlib.resources.files("ephys2tx.features") / "column_maps" / f"{name}.yaml"
    return Path(str(ref))


def load_column_map(path_or_name: str | os.PathLike) -> ColumnMap:
    """Load a column map from a YAML path, or a shipped map by name."""
    text = str(path_or_name)
    if not text.strip():
        raise InputError(f"the column map name is empty; give a YAML file or one of "
                         f"{', '.join(SHIPPED_MAPS)}.")
    path = Path(text)
    if text in SHIPPED_MAPS and not path.is_file():  # a folder named `ipfx` is not a map
        return _shipped_map(text)
    return _load_yaml_map(path, text)


@functools.cache
def _shipped_map(name: str) -> ColumnMap:
    return _load_yaml_map(shipped_map_path(name), name)


def _load_yaml_map(path: Path, text: str) -> ColumnMap:
    from ephys2tx.io import read_yaml_file

    spec = read_yaml_file(path, kind="column map",
                          hint=f"give a YAML file or one of {', '.join(SHIPPED_MAPS)} (docs/mapping.md)")
    return column_map_from_dict(spec, source=str(path))


def resolve_column_map(spec: str | os.PathLike | ColumnMap | None, columns, *,
                       table: pd.DataFrame | None = None) -> ColumnMap:
    """The map to use: ``spec`` if given, else :func:`detect_column_map` on the table.

    Parameters
    ----------
    spec : path, shipped map name, ColumnMap or None
    columns : sequence of str
        The table's columns (used when ``table`` is not given).
    table : DataFrame, optional
        The table itself (id column excluded): its numeric columns define the
        coverage and its values break ties between maps by the unit checks.
    """
    if isinstance(spec, ColumnMap):
        return spec
    if spec is not None:
        return load_column_map(spec)
    if table is None:
        table = pd.DataFrame(columns=list(columns))
    return detect_column_map(table)


_QUOTES = "\u201c\u201d\u2018\u2019\u00ab\u00bb\u201e"  # “ ” ‘ ’ « » „


def _loose(name: str) -> str:
    """A column name compared without case and blanks (spaces, ``_`` and ``-`` alike)."""
    import re

    return re.sub(r"[\s_\-]+", "_", str(name).strip().casefold())


def match_table_columns(cmap: ColumnMap, columns) -> ColumnMap:
    """``cmap`` with each absent column renamed to the table's column of the same loose name.

    Only for maps that are not strict (the shipped maps): a table whose header
    says ``TAU``, ``Input Resistance`` or ``input-resistance`` is read as
    ``tau`` and ``input_resistance``. A name is taken only when exactly one
    column of the table has it and no other entry reads that column; an exact
    name always wins. A strict (user) map names its columns exactly.
    """
    if cmap.strict:
        return cmap
    columns = [str(c) for c in columns]
    present = set(columns)
    by_loose: dict[str, list[str]] = {}
    for col in columns:
        by_loose.setdefault(_loose(col), []).append(col)
    taken = {c for e in cmap.entries for c in (e.column, e.minus) if c in present}

    def fitted(name):
        if name is None or name in present:
            return name
        found = [c for c in by_loose.get(_loose(name), []) if c not in taken]
        if len(found) != 1:
            return name
        taken.add(found[0])
        return found[0]

    entries = tuple(replace(e, column=fitted(e.column), minus=fitted(e.minus)) for e in cmap.entries)
    return cmap if entries == cmap.entries else replace(cmap, entries=entries)


def _entry_applies(entry: ColumnMapEntry, present: set) -> bool:
    return entry.column in present and (entry.minus is None or entry.minus in present)


def detect_column_map(table: pd.DataFrame, *, min_coverage: float = MIN_COVERAGE) -> ColumnMap:
    """The shipped map that explains the table, or an InputError asking for ``--column-map``.

    A shipped map is a candidate when it matches at least one column. Each is
    scored by the columns it explains; among the best, a map whose converted
    values fail the unit/range checks loses (``tau`` in seconds through the
    Allen map, whose ``tau`` is in ms, would be 1000 times too small). The
    winner must explain at least ``min_coverage`` of the table's numeric
    columns (all columns if the table has no values), so that a table in
    another lab's naming that happens to share a name or two ("Sag ratio",
    "tau") is never read silently through the wrong map. The result's
    ``extra`` records ``detected``, ``matched`` (columns used), ``coverage``
    and ``unmatched`` (numeric columns no entry uses).
    """
    from ephys2tx.features.canonical import check_units

    present = set(map(str, table.columns))
    numeric = _numeric_columns(table)
    scored = []
    for name in SHIPPED_MAPS:
        cmap = match_table_columns(load_column_map(name), present)
        used = [e for e in cmap.entries if _entry_applies(e, present)]
        if not used:
            continue
        columns = sorted({c for e in used for c in (e.column, e.minus) if c})
        issues = 0
        if len(table):
            try:
                canonical, sources = apply_column_map(cmap, table, where="the table")
                issues = len(check_units(canonical, sources))
            except InputError:  # a bad value: reported when the chosen map is applied
                issues = 0
        scored.append((len(columns) - 2 * issues, len(columns), name, cmap, columns, issues))
    if not scored:
        raise InputError("no column of the table is an IPFX or Allen Cell Types feature name; "
                         "write a column map (see docs/mapping.md) and pass --column-map.")
    scored.sort(key=lambda item: (-item[0], -item[1]))
    best = scored[0]
    tied = [item for item in scored[1:] if item[:2] == best[:2]]
    _, n_cols, name, cmap, columns, issues = best
    # feature-like columns: the numeric ones, and those the map reads (one bad value can make
    # a feature column non-numeric; that is reported when the map is applied)
    candidates = list(dict.fromkeys([*numeric, *columns]))
    coverage = len(columns) / max(len(candidates), 1)
    if coverage < min_coverage:  # first: a tie of two maps that each read one column is no tie
        def listed(item):
            return ", ".join(item[4][:5]) + (", ..." if len(item[4]) > 5 else "")

        matches = (listed(best) if not tied else
                   "; ".join(f"map {item[2]}: {listed(item)}" for item in [best, *tied]))
        names = " or ".join(item[2] for item in [best, *tied])
        raise InputError(
            f"only {len(columns)} of the table's {len(candidates)} numeric columns match the shipped "
            f"{'maps' if tied else 'map'} {names} ({matches}); "
            f"it is not applied without being asked: pass --column-map {name} if these columns really "
            "are that naming and those units, or write a column map for your table (docs/mapping.md).")
    if tied:
        raise InputError(f"the table's columns fit the shipped maps {name} and {tied[0][2]} "
                         f"equally well ({', '.join(columns[:4])}); pass --column-map with the one "
                         "that names your columns, or write your own (docs/mapping.md).")
    unmatched = [c for c in candidates if c not in set(columns)]
    return replace(cmap, extra={**cmap.extra, "detected": True, "matched": columns,
                                "coverage": coverage, "unmatched": unmatched,
                                "unit_issues": issues})


def _numeric_columns(table: pd.DataFrame) -> list[str]:
    """The table's numeric (not boolean) columns; every column of a table without rows."""
    if not len(table):
        return [str(c) for c in table.columns]
    return [str(c) for c in table.columns
            if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])]


def describe_detection(cmap: ColumnMap, table: pd.DataFrame | None = None) -> str | None:
    """One line saying which shipped map was detected and which columns it reads.

    For a map the user named (not detected), with ``table``: a line naming the
    numeric columns of ``table`` that no entry reads, if any (else None).
    """
    info = cmap.extra or {}
    if not info.get("detected"):
        if table is None:
            return None
        read = {c for e in cmap.entries for c in (e.column, e.minus) if c}
        unread = [c for c in _numeric_columns(table) if c not in read]
        if not unread:
            return None
        return (f"column map {cmap.name} does not read {len(unread)} numeric column(s) of the table "
                f"({', '.join(unread[:4])}{', ...' if len(unread) > 4 else ''}); a column that is a "
                "reference feature (`ephys2tx features` lists them) needs an entry in the map.")
    matched, unmatched = info.get("matched", []), info.get("unmatched", [])
    text = (f"no --column-map given: using the shipped map {cmap.name}, which reads "
            f"{len(matched)} column(s) ({', '.join(matched[:6])}{', ...' if len(matched) > 6 else ''})")
    if unmatched:
        text += (f"; {len(unmatched)} other numeric column(s) are ignored "
                 f"({', '.join(unmatched[:4])}{', ...' if len(unmatched) > 4 else ''})")
    return text + "."


def _numeric_column(table: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """The column as floats (:func:`~ephys2tx.data.user_tables.numeric_column`); a float64
    column is the table's own values, read-only, not a copy (every use here makes new arrays)."""
    from ephys2tx.data.user_tables import numeric_column

    raw = table[column]
    if isinstance(raw, pd.Series) and raw.dtype == np.float64:
        values = raw.to_numpy().view()
        values.flags.writeable = False
        return values
    return numeric_column(raw, column=column, where=where).to_numpy(dtype=float, na_value=np.nan)


def _with_map_spelling(cmap: ColumnMap, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with columns renamed to the map's names that are the same text in another
    Unicode form (``ä`` as one code point or as ``a`` + combining diaeresis look the same)."""
    import unicodedata

    def nfc(text):
        return unicodedata.normalize("NFC", str(text))

    present = {str(c) for c in table.columns}
    by_nfc: dict[str, list] = {}
    for col in table.columns:
        by_nfc.setdefault(nfc(col), []).append(col)
    rename = {}
    for name in {c for e in cmap.entries for c in (e.column, e.minus) if c and c not in present}:
        found = by_nfc.get(nfc(name), [])
        if len(found) == 1 and found[0] not in rename:
            rename[found[0]] = name
    return table.rename(columns=rename) if rename else table


def expr_losses(cmap: ColumnMap, table: pd.DataFrame, *, where: str = "the table") -> list[str]:
    """Notes on ``expr`` entries that turn some cells' finite values into missing ones.

    ``sqrt(x - 0.2)`` on a column with values below 0.2, ``log(x)`` on zeros: those
    cells are read as missing (an ``expr`` that loses every cell is an error in
    :func:`apply_column_map`); the note says how many and gives an example.
    """
    notes = []
    table = _with_map_spelling(cmap, table)
    for entry in cmap.entries:
        if not entry.expr or not _entry_applies(entry, set(table.columns)):
            continue
        values = _numeric_column(table, entry.column, where)
        if entry.minus:
            values = values - _numeric_column(table, entry.minus, where)
        lost = np.isfinite(values) & ~np.isfinite(_compiled(entry.expr)(values))
        if lost.any():
            notes.append(f"column map {cmap.source}, column {entry.column!r}: expr {entry.expr!r} gives no "
                         f"finite value for {int(lost.sum())} of {int(np.isfinite(values).sum())} cells of "
                         f"{where} (e.g. x = {float(values[lost][0]):g}); they are read as missing for "
                         f"{entry.name}.")
    return notes


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
    table = _with_map_spelling(cmap, table)
    for entry in cmap.entries:
        needed = [entry.column] + ([entry.minus] if entry.minus else [])
        missing = [c for c in needed if c not in table.columns]
        if missing:
            if cmap.strict:
                near = [str(c) for c in table.columns if _loose(c) == _loose(missing[0])]
                quoted = [str(c) for c in table.columns
                          if _loose(c) == _loose(missing[0].strip(_QUOTES)) and missing[0].strip(_QUOTES) != missing[0]]
                hint = (f"; the table has {near[0]!r}, which differs in case or blanks: write the "
                        "name exactly as in the table" if near else
                        f"; the table has {quoted[0]!r}: the quotes in the map are typographic ones (from a "
                        "word processor), part of the name: write plain quotes \" or '" if quoted else
                        "; fix the map or the column name")
                raise InputError(f"column map {cmap.source} names column {missing[0]!r} "
                                 f"(for {entry.name}), which {where} does not have{hint}.")
            continue
        values = _numeric_column(table, entry.column, where)
        if entry.minus:
            values = values - _numeric_column(table, entry.minus, where)
        if entry.expr:
            before = np.isfinite(values)
            result = _compiled(entry.expr)(values)
            if before.any() and not np.isfinite(result).any():
                raise InputError(f"column map {cmap.source}, column {entry.column!r}: expr "
                                 f"{entry.expr!r} gives no finite value for any cell of {where} "
                                 f"(e.g. x = {float(values[before][0]):g}); fix the expr.")
            _check_not_constant(_compiled(entry.expr), values, f"column map {cmap.source}, column "
                                f"{entry.column!r}", f"values of {where}")
            values = result
        out[entry.name] = values * entry.factor + entry.offset
        sources[entry.name] = entry.column
    if not out:
        raise InputError(f"no column of column map {cmap.source} is in {where}; pass a column map "
                         "that names the table's columns (see docs/mapping.md).")
    return pd.DataFrame(out, index=table.index), sources
