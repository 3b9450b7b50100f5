"""Read a user's feature table (CSV, TSV, Parquet or Excel) and find its cell-id column.

The table must have one row per cell and one id column whose values are
unique. Every row must have as many fields as the header (a row cut short, e.g.
a file truncated mid-row, is an error, never padded with missing values), and
every number must be finite and at most :data:`MAX_ABS_VALUE` in magnitude: an
``inf``, ``-inf`` or ``1e300`` is an error naming the file, column and cell
(policy: fix the value, or leave the cell empty for missing). Every problem is an :class:`~ephys2tx.errors.InputError` whose one-line
message names the file (and column) and says how to fix it.

Output tables (predictions) are written atomically with :func:`ephys2tx.io.write_csv` (pyarrow,
ten times faster than ``DataFrame.to_csv``; booleans as ``true``/``false``,
missing values empty).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ephys2tx.errors import InputError

__all__ = ["ID_CANDIDATES", "MAX_ABS_VALUE", "UserTable", "check_complete_rows", "check_finite",
           "detect_id_column", "feature_frame", "numeric_column", "read_table", "read_user_table", "table_header"]

#: Largest magnitude accepted for a feature value; larger values (and inf/-inf) are errors.
#: No electrophysiology feature in any unit comes near it, and squares of it stay finite.
MAX_ABS_VALUE = 1e15

#: Id column names tried in order (compared case-insensitively, ignoring spaces/underscores).
ID_CANDIDATES = ("cell_id", "cell id", "cell_specimen_id", "specimen_id", "specimen_id_x",
                 "cell_name", "spec_id", "cell", "id", "name", "sample_id", "sample")

_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
             ".xlsx": "excel", ".xlsm": "excel", ".xls": "excel"}


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


def check_complete_rows(path: str | os.PathLike, *, sep: str = ",", encoding: str = "utf-8-sig") -> None:
    """Refuse a delimited text file with a row shorter than its header (cut off or ragged).

    Raises
    ------
    InputError
        Naming the line, the number of fields found and expected.
    """
    import csv

    path = Path(path)
    try:
        with open(path, newline="", encoding=encoding) as handle:
            reader = csv.reader(handle, delimiter=sep)
            header = next((row for row in reader if any(field.strip() for field in row)), None)
            if header is None:
                return
            width = len(header)
            for row in reader:
                if row and len(row) < width and any(field.strip() for field in row):
                    raise InputError(
                        f"{path} line {reader.line_num} has {len(row)} of the {width} fields of "
                        "its header: the row is incomplete (a file cut off, or a missing "
                        "separator); restore the complete file, or fill the row.")
                if len(row) > width and any(field.strip() for field in row[width:]):
                    _check_header_form(path, header, sep)
                    raise InputError(
                        f"{path} line {reader.line_num} has {len(row)} fields, more than the "
                        f"{width} of its header (a value without a column name, or a separator "
                        "inside a number); name every column, or quote the value.")
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read {path} as delimited text: it is not UTF-8 ({exc.reason} at "
                         f"byte {exc.start}); save it as UTF-8 CSV (or as Parquet or Excel).") from exc
    except csv.Error as exc:
        raise InputError(f"cannot read {path} as delimited text: {exc}".replace("\n", " ")) from exc


_SEPARATORS = {",": "commas", "\t": "tabs", ";": "semicolons", "|": "vertical bars"}


def _check_header_form(path: Path, header: list, sep: str) -> None:
    """Name the likely cause when the header has fewer fields than the rows below it.

    A header of one field that holds another separator (``cell_id;tau;sag``) is a
    file separated by that character; a header starting with ``#`` is a comment
    line above the real header.
    """
    if header and header[0].lstrip().startswith("#"):
        raise InputError(f"{path} starts with the line {header[0][:40]!r}..., a comment above the "
                         "column names; delete the lines above the header row.")
    if len(header) == 1:
        found = [s for s in _SEPARATORS if s != sep and s in header[0]]
        if found:
            other = found[0]
            fix = ("name the file .tsv" if other == "\t" and sep == "," else
                   "name the file .csv" if other == "," and sep == "\t" else
                   "save it as comma-separated CSV with decimal points (or as Excel or Parquet)")
            raise InputError(f"{path} is separated by {_SEPARATORS[other]}, not "
                             f"{_SEPARATORS[sep]} (its header is the one field "
                             f"{header[0][:40]!r}); {fix}.")


def check_finite(frame: pd.DataFrame, *, where: str, sources: dict | None = None) -> None:
    """Refuse inf, -inf and values beyond :data:`MAX_ABS_VALUE` in the numeric columns of ``frame``.

    Parameters
    ----------
    frame : DataFrame
        Index: cell ids (named in the message).
    where : str
        The file (or table) the values come from.
    sources : dict, optional
        ``column -> column name in the file`` (for converted columns).

    Raises
    ------
    InputError
        Naming the file, column and cell, and saying how to fix it.
    """
    import numpy as np

    for col in frame.columns:
        values = frame[col]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        array = values.to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            bad = np.isinf(array) | (np.abs(array) > MAX_ABS_VALUE)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            name = (sources or {}).get(col, col)
            raise InputError(
                f"column {name!r} of {where} has the value {float(array[pos])!r} (cell "
                f"{frame.index[pos]}, {int(bad.sum())} such value(s)); values must be finite "
                f"numbers of magnitude <= {MAX_ABS_VALUE:g}: fix it, or leave the cell empty for "
                "missing.")


def _beyond_float_range(text: str) -> bool:
    """Whether ``text`` is a number too large for a float (``1e400``: read as inf)."""
    import math

    try:
        return math.isinf(float(text)) and "inf" not in text.lower()
    except ValueError:
        return False


def numeric_column(raw: pd.Series, *, column: str, where: str, ids: pd.Series | None = None
                   ) -> pd.Series:
    """A column as floats; text that is no number, or a number beyond the float range, is refused.

    Parameters
    ----------
    raw : Series
        The column as read.
    column : str
        Its name in the file.
    where : str
        The file.
    ids : Series, optional
        Cell ids aligned with ``raw`` (default: ``raw``'s index).

    Raises
    ------
    InputError
        Naming the file, column, value and cell: ``1e400`` is out of range (a
        float cannot hold it), ``abc`` is non-numeric.
    """
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        return raw.astype(float)
    _refuse_non_measurements(raw, column=column, where=where, ids=ids)
    values = pd.to_numeric(raw, errors="coerce")
    suspect = values.isna() & raw.notna()
    if suspect.any():
        text = raw[suspect].astype(str).str.strip()
        bad = text[text != ""]
        if len(bad):
            label = bad.index[0]
            cell = label if ids is None else ids[label]
            if _beyond_float_range(bad.iloc[0]):
                raise InputError(
                    f"column {column!r} of {where} has the value {raw[label]!r} (cell {cell}), "
                    "beyond the range of a floating-point number (it is not finite); values must "
                    f"be finite numbers of magnitude <= {MAX_ABS_VALUE:g}: fix it, or leave the "
                    "cell empty for missing.")
            raise InputError(f"column {column!r} of {where} has non-numeric value {raw[label]!r} "
                             f"(cell {cell}); fix it or leave it empty for missing"
                             f"{_separator_hint(bad.iloc[0])}.")
    return values.astype(float)


def _refuse_non_measurements(raw: pd.Series, *, column: str, where: str,
                             ids: pd.Series | None) -> None:
    """Refuse True/False values and dates or durations, which ``pd.to_numeric`` would silently
    turn into 1/0 and nanoseconds (a Parquet or Excel boolean or date column, or a CSV column of
    true/false that pandas reads as booleans)."""
    import numpy as np

    def cell(label):
        return label if ids is None else ids[label]

    kind = pd.api.types.infer_dtype(raw, skipna=True)
    if pd.api.types.is_bool_dtype(raw) or kind in ("boolean", "mixed"):
        flags = raw.map(lambda v: isinstance(v, (bool, np.bool_)))
        if flags.any():
            label = flags.index[flags.to_numpy()][0]
            raise InputError(f"column {column!r} of {where} holds True/False values (cell "
                             f"{cell(label)}: {bool(raw[label])}), not measurements; give its values "
                             "as numbers, or leave a cell empty for missing.")
    if kind in ("datetime64", "datetime", "date", "timedelta64", "timedelta", "period", "time"):
        present = raw.notna()
        label = present.index[present.to_numpy()][0]
        what = "durations" if kind.startswith("timedelta") else "dates or times"
        raise InputError(f"column {column!r} of {where} holds {what} (cell {cell(label)}: "
                         f"{str(raw[label])!r}), not numbers; give the feature as a number in its "
                         "unit (e.g. seconds, as 0.012), or leave a cell empty for missing.")


def feature_frame(X, features: list[str], *, where: str) -> pd.DataFrame:
    """``X``'s columns named in ``features``, in that order, as floats (absent ones NaN).

    ``where`` names ``X`` in messages (e.g. ``"the table to predict"``).

    Raises
    ------
    InputError
        ``X`` is not a DataFrame (columns are read by name, never by position), has none of the
        features, repeats one, or holds one that is boolean or not a number.
    """
    shown = ", ".join(features[:4]) + (", ..." if len(features) > 4 else "")
    if not isinstance(X, pd.DataFrame):
        raise InputError(f"the model reads features by column name: pass a pandas DataFrame whose "
                         f"columns are its features ({shown}), e.g. pd.DataFrame(values, "
                         f"columns=model.features); got {type(X).__name__}.")
    columns = pd.Index(X.columns)
    present = [f for f in features if f in columns]
    if not present:
        raise InputError(f"none of the model's {len(features)} features ({shown}) is a column of "
                         f"{where} (its columns start with {[str(c) for c in columns[:4]]}); "
                         "name the columns as the model's features, or read the table with "
                         "ephys2tx.mapping.read_query and a column map.")
    repeated = [f for f in present if (columns == f).sum() > 1]
    if repeated:
        raise InputError(f"{where} has {int((columns == repeated[0]).sum())} columns "
                         f"named {repeated[0]!r}; keep one column per feature.")
    frame = X.reindex(columns=features)
    for column in present:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values):
            raise InputError(f"feature {column!r} of {where} is True/False, not a "
                             "measurement; give its values as numbers.")
        if not pd.api.types.is_numeric_dtype(values):
            _refuse_non_measurements(values, column=column, where=where, ids=None)
            try:
                values.astype(float)
            except (TypeError, ValueError):
                numbers = pd.to_numeric(values, errors="coerce")  # pd.NA and None are missing
                bad = numbers.isna() & values.notna()
                if bad.any():  # (a pd.NA among numbers named the first number as non-numeric)
                    raise InputError(f"feature {column!r} of {where} has non-numeric value "
                                     f"{values[bad].iloc[0]!r} (cell "
                                     f"{values.index[bad.to_numpy()][0]}); fix it, or leave it "
                                     "empty for missing.") from None
                frame[column] = numbers.astype(float)
    return frame.astype(float, copy=False)  # reindex made the copy


def _separator_hint(text: str) -> str:
    """A hint when ``text`` is a number written with a decimal comma or thousands separators."""
    import re

    if re.fullmatch(r"[-+]?\d+,\d+", text) and not re.fullmatch(r"[-+]?\d{1,3},\d{3}", text):
        return (f" ({text} looks like a decimal comma: write {text.replace(',', '.')}, or save the "
                "table with decimal points)")
    if re.fullmatch(r"[-+]?\d{1,3},\d{3}", text):  # 4,812: grouping or a decimal comma
        return (f" ({text} has a thousands separator or a decimal comma: write "
                f"{text.replace(',', '')} or {text.replace(',', '.')}, as meant)")
    if re.fullmatch(r"[-+]?\d{1,3}([, '\u00a0\u202f]\d{3})+(\.\d+)?", text):
        plain = re.sub(r"[, '\u00a0\u202f]", "", text)
        return (f" ({text} has a thousands separator: write {plain}, or save the table without "
                "digit grouping)")
    return ""


def _table_kind(path: Path) -> str:
    """The reader of an input table (csv, tsv, parquet, excel), after checking it is a file."""
    if path.is_dir():
        raise InputError(f"input table {path} is a folder; give a table file (CSV, TSV, Parquet or "
                         "Excel).")
    if not path.exists():
        raise InputError(f"input table {path} does not exist; check the path.")
    if not path.is_file():  # a pipe, a device (/dev/null), a socket: never read
        raise InputError(f"input table {path} is not a regular file; give a table file (CSV, TSV, "
                         "Parquet or Excel).")
    kind = _SUFFIXES.get(path.suffix.lower())
    compressed = {".gz": "gunzip", ".bz2": "bunzip2", ".xz": "unxz", ".zst": "unzstd"}
    if kind is None and path.suffix.lower() in compressed:
        raise InputError(f"input table {path} is compressed ({path.suffix}); decompress it first "
                         f"({compressed[path.suffix.lower()]} {path.name}) and give the "
                         f"{Path(path.stem).suffix or '.csv'} file.")
    if kind is None:
        raise InputError(f"input table {path} has suffix {path.suffix!r}; use .csv, .tsv, "
                         ".parquet or .xlsx.")
    if kind in ("csv", "tsv"):
        with open(path, "rb") as handle:
            if handle.read(2) == b"\x1f\x8b":
                raise InputError(f"input table {path} is gzip-compressed, not text; decompress it "
                                 f"first (gunzip -c {path.name} > cells{path.suffix}) and give that "
                                 "file.")
    return kind


def _separator(path: Path, kind: str) -> str:
    """The field separator of a CSV/TSV file: a tab for .tsv; for .csv a semicolon when its
    header has more fields split at semicolons than at commas (the CSV of a spreadsheet in a
    decimal-comma locale), else a comma."""
    import csv

    if kind == "tsv":
        return "\t"
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            line = next((text for text in handle if text.strip()), "")
    except UnicodeDecodeError:
        return ","  # reported, naming the byte, by the reader
    fields = {sep: len(next(csv.reader([line], delimiter=sep), [])) for sep in (",", ";")}
    return ";" if fields[";"] > fields[","] else ","


_DECIMAL_COMMA = re.compile(r"[-+]?\d*,\d+(?:[eE][-+]?\d+)?")
_DECIMAL_POINT = re.compile(r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?")


def _decimal_mark(path: Path, sep: str, *, skip=(), rows: int = 2000) -> str:
    """``","`` when a semicolon-separated file writes its numbers with decimal commas.

    The first ``rows`` data rows are read (the columns named in ``skip``, cell
    ids, left out). Numbers with a comma and none with a point: decimal commas;
    both: an InputError naming one of each, since no reading is safe.
    """
    import csv

    if sep != ";":
        return "."
    comma = point = None
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=sep)
        header = next((row for row in reader if any(field.strip() for field in row)), [])
        keep = [i for i, name in enumerate(header) if name.strip() not in set(skip)]
        for n, row in enumerate(reader):
            if n >= rows:
                break
            for i in keep:
                field = row[i].strip() if i < len(row) else ""
                if comma is None and _DECIMAL_COMMA.fullmatch(field):
                    comma = (header[i].strip(), reader.line_num, field)
                elif point is None and _DECIMAL_POINT.fullmatch(field):
                    point = (header[i].strip(), reader.line_num, field)
    if comma and point:
        raise InputError(
            f"{path} is separated by semicolons and mixes decimal commas (column {comma[0]!r}, "
            f"line {comma[1]}: {comma[2]}) with decimal points (column {point[0]!r}, line "
            f"{point[1]}: {point[2]}); write every number with one decimal mark (or save the "
            "table as Excel or Parquet).")
    return "," if comma else "."


def _delimited_header(path: Path, kind: str) -> list[str]:
    """The header row of a CSV/TSV file: its first line with a non-blank field."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=_separator(path, kind))
            header = next((row for row in reader if any(field.strip() for field in row)), [])
            return [field.replace("\x00", "") for field in header]  # pandas drops NUL bytes too
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read {path} as delimited text: it is not UTF-8 ({exc.reason} at "
                         f"byte {exc.start}); save it as UTF-8 CSV (or as Parquet or Excel).") from exc
    except csv.Error as exc:
        raise InputError(f"cannot read {path} as delimited text: {exc}".replace("\n", " ")) from exc


def table_header(path: str | os.PathLike) -> list[str] | None:
    """The column names of a CSV/TSV table or Excel workbook as :func:`read_table` gives them
    (None for Parquet, whose columns keep their types)."""
    path = Path(path)
    kind = _table_kind(path)
    if kind == "excel":
        try:
            _check_one_sheet(path)  # which sheet holds the cells is said before any id column
            header = _excel_header_row(path)[1]
        except InputError:
            raise
        except Exception:  # noqa: BLE001 - read_table names what is wrong with the workbook
            return None
        return [str(name).strip() for name in header if not pd.isna(name)]
    if kind not in ("csv", "tsv"):
        return None
    header = _delimited_header(path, kind)
    if len(header) == 1:  # a comment line, or a file separated by another character
        _check_header_form(path, header, _separator(path, kind))
    return [field.strip() for field in header]


def _excel_header_row(path: Path) -> tuple[int, list]:
    """The header row of the first sheet: its first row filled across at least half the table.

    Blank rows, and a title or note of one or two cells above the table, are skipped.
    """
    head = pd.read_excel(path, sheet_name=0, header=None, nrows=50)
    filled = head.notna().sum(axis=1).to_numpy()
    if not filled.any():
        return 0, []
    row = int((filled >= max(1, filled.max() / 2)).argmax())
    return row, list(head.iloc[row])


def _check_one_sheet(path: Path) -> None:
    """Refuse a workbook with data on more than one sheet: which sheet holds the cells is unclear."""
    with pd.ExcelFile(path) as book:
        names = book.sheet_names
        if len(names) < 2:
            return
        filled = [name for name in names
                  if pd.read_excel(book, sheet_name=name, header=None, nrows=50).notna().any().any()]
    if len(filled) > 1:
        shown = ", ".join(repr(str(n)) for n in filled[:4]) + (", ..." if len(filled) > 4 else "")
        raise InputError(f"{path} has {len(filled)} sheets with data ({shown}); ephys2tx reads one "
                         f"table: save the sheet that holds the cells as its own file (.xlsx or CSV), "
                         f"or delete the other sheets.")


def _read_parquet(path: Path) -> pd.DataFrame:
    """``pd.read_parquet(path)`` (pyarrow, numpy dtypes, the pandas metadata's index) without
    de-duplicating text values.

    pandas asks pyarrow to share one Python string among equal values
    (``deduplicate_objects``), a hash of every text value: two thirds of the
    reading time of a table of 300,000 distinct cell ids. The frame is equal
    (tests/test_user_tables.py); repeated text values are separate objects.
    """
    import pyarrow.parquet as pq

    return pq.read_table(path, use_pandas_metadata=True).to_pandas(deduplicate_objects=False)


def read_table(path: str | os.PathLike, *, text_columns=()) -> pd.DataFrame:
    """Read CSV/TSV, Parquet or Excel (a workbook with data on one sheet only) by file suffix.

    Column names are stripped of surrounding blanks, blank lines (and blank
    rows above an Excel table) before the header are skipped, and rows with no
    value at all (``,,,,`` lines that spreadsheets export) are dropped; the
    index keeps each row's position among the data rows.

    Parameters
    ----------
    path : path
    text_columns : collection of str
        CSV/TSV columns read as text, never as numbers (cell ids: ``007``,
        ``1.10`` and ``2E5`` are names, not 7, 1.1 and 200000).

    Raises
    ------
    InputError
        Missing file, unknown suffix, unparsable or empty table.
    """
    path = Path(path)
    kind = _table_kind(path)
    sep = _separator(path, kind) if kind in ("csv", "tsv") else None
    if sep is not None:  # first: its messages name the line, pandas' do not always
        check_complete_rows(path, sep=sep)
    header_row, header = 0, None
    try:
        if sep is not None:
            header = _delimited_header(path, kind)
            if len(header) == 1:
                _check_header_form(path, header, sep)
            text = {name: str for name in header if name.strip() in set(text_columns)}
            # index_col=False: separators ending every line never shift the columns onto the index
            table = pd.read_csv(path, sep=sep, encoding="utf-8-sig", low_memory=False,
                                index_col=False, dtype=text or None,
                                decimal=_decimal_mark(path, sep, skip=text_columns))
        elif kind == "parquet":
            table = _read_parquet(path)
            if any(name is not None for name in table.index.names):  # e.g. `ephys2tx extract` output
                table = table.reset_index()
            header = list(table.columns)
        else:
            _check_one_sheet(path)
            header_row, header = _excel_header_row(path)
            # text columns (cell ids) as written: a text cell '0707' keeps its leading zero
            text = {name: str for name in header if str(name).strip() in set(text_columns)}
            table = pd.read_excel(path, sheet_name=0, header=header_row, dtype=text or None)
    except InputError:
        raise
    except ImportError as exc:  # an old binary .xls workbook: pandas needs xlrd, not installed
        raise InputError(f"cannot read {path}: it is an old-format Excel workbook (.xls), which needs "
                         "the xlrd package; save it as .xlsx or CSV (or pip install xlrd).") from exc
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"input table {path} is empty; it needs a header and one row per cell.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read {path} as {kind}: {first}") from exc
    except Exception as exc:  # noqa: BLE001 - a zip that is no workbook: KeyError, OptionError, ...
        if kind != "excel":
            raise
        raise InputError(f"cannot read {path} as an Excel workbook ({type(exc).__name__}); save it "
                         "again from Excel as .xlsx, or as CSV.") from exc
    _check_unique_header(path, header)
    table.columns = [str(c).strip() for c in table.columns]
    table.index = pd.RangeIndex(len(table))  # the frame was just read: no copy needed
    keep = _rows_with_a_value(table)
    if not keep.all():
        table = table.loc[keep]  # rows without any value are no cells
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise InputError(f"input table {path} is empty ({table.shape[0]} rows, {table.shape[1]} "
                         "columns); it needs a header and one row per cell.")
    return table


def _rows_with_a_value(table: pd.DataFrame):
    """Whether each row has a value in some column (``table.notna().any(axis=1)``, as an array).

    Reads the columns one at a time, numeric ones first, and stops once every
    row has a value: a table with one complete numeric column costs one column,
    and the text of the id column is read only when a row is still empty.
    """
    import numpy as np

    keep = np.zeros(len(table), dtype=bool)
    text = [dtype == object for dtype in table.dtypes]
    order = sorted(range(table.shape[1]), key=text.__getitem__)
    for j in order:
        keep |= table.iloc[:, j].notna().to_numpy()
        if keep.all():
            break
    return keep


def _check_unique_header(path: Path, header: list) -> None:
    """Refuse a header that names a column twice (pandas would silently rename one ``name.1``)."""
    from collections import Counter

    names = [str(c).strip() for c in header if not (isinstance(c, float) and c != c)]
    twice = [name for name, n in Counter(names).items() if n > 1 and name]
    if twice:
        raise InputError(f"{path} has {len(twice)} column name(s) used twice, e.g. {twice[0]!r}; "
                         "give every column its own name.")


def detect_id_column(table: pd.DataFrame, *, id_column: str | None = None,
                     where: str = "table", hint: str = "rename your id column to cell_id") -> str:
    """The id column: ``id_column`` if given, else the first of :data:`ID_CANDIDATES` present."""
    if id_column is not None and not isinstance(id_column, str):
        raise InputError(f"the id column must be given by its name (a str, e.g. 'cell_id'), got "
                         f"{type(id_column).__name__} {id_column!r:.40}.")
    if id_column is not None:
        if id_column not in table.columns and id_column.strip() in table.columns:
            return id_column.strip()
        if id_column not in table.columns:
            raise InputError(f"{where} has no id column {id_column!r}; columns start with "
                             f"{list(table.columns[:5])}.")
        return id_column
    by_norm = {}
    for col in table.columns:
        by_norm.setdefault(_norm(col), col)
    for cand in ID_CANDIDATES:
        if _norm(cand) in by_norm:
            return by_norm[_norm(cand)]
    raise InputError(f"{where} has no cell id column (looked for {', '.join(ID_CANDIDATES[:6])}, "
                     f"...); add one, or {hint}.")


@dataclass(frozen=True)
class UserTable:
    """A user table indexed by cell id.

    Attributes
    ----------
    path : Path
    id_column : str
        Name of the id column in the file (restored in the outputs).
    data : DataFrame
        All other columns, index = cell id as str, original row order.
    """

    path: Path
    id_column: str
    data: pd.DataFrame

    @property
    def n_cells(self) -> int:
        """Number of rows."""
        return len(self.data)


def _scalar_ids(ids: pd.Series, col: str, path: Path) -> pd.Series:
    """Ids that are single values: bytes (a Parquet binary column) decoded as UTF-8; a nested
    value (list, dict, array) or bytes that are no UTF-8 text refused, naming the row."""
    def refuse(pos: int, why: str) -> InputError:
        return InputError(f"id column {col!r} of {path} holds {why} on data row {pos + 1} "
                          f"({ids.iloc[pos]!r:.60}); cell ids must be text or whole numbers: "
                          "store them as a text column.")

    kind = pd.api.types.infer_dtype(ids, skipna=False)
    if kind in ("string", "integer", "floating", "mixed-integer-float", "categorical"):
        return ids
    values = list(ids)
    for pos, value in enumerate(values):
        if isinstance(value, (bytes, bytearray)):
            try:
                values[pos] = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise refuse(pos, "bytes that are not UTF-8 text") from None
        elif isinstance(value, (list, tuple, dict, set)) or getattr(value, "ndim", 0) > 0:
            raise refuse(pos, f"a nested value (a {type(value).__name__})")
    return pd.Series(values, index=ids.index, dtype=object)


def _id_strings(ids: pd.Series) -> pd.Series:
    """Ids as text; whole-number floats (how CSV/Excel readers give integer ids with gaps) without ".0"."""
    kind = pd.api.types.infer_dtype(ids, skipna=False)
    if kind == "string":  # "a" and "a " are the same cell, written carelessly
        text = ids.astype(str).str.strip()
        # whole numbers written as floats ("12.0", as pandas writes integer ids with a gap) are
        # those numbers; "007", "1.10" and "2E5" stay as written. The first id that is no such
        # number ends the search (``text.str.fullmatch(...).all()`` read every id).
        whole = re.compile(r"[+-]?\d+(\.0*)?")
        if all(whole.fullmatch(value) for value in text.to_numpy()):
            return text.str.replace(r"\.0*$", "", regex=True)
        return text
    if kind == "integer":
        return ids.astype(str)
    if kind == "floating" and (ids % 1 == 0).all():
        return ids.astype("int64").astype(str)
    return ids.map(lambda v: str(int(v)) if isinstance(v, float) and float(v).is_integer()
                   else str(v).strip())


def read_user_table(path: str | os.PathLike, *, id_column: str | None = None,
                    id_hint: str = "rename your id column to cell_id") -> UserTable:
    """Read a table, find and validate its id column (present, no empty value, unique).

    ``id_hint`` ends the message when no id column is found (e.g. the option
    that names one, for commands that have it).
    """
    path = Path(path)
    header = table_header(path)  # CSV/TSV/Excel: the id column is found first, and read as text
    if header is not None and header:
        try:
            col = detect_id_column(pd.DataFrame(columns=header), id_column=id_column,
                                   where=str(path), hint=id_hint)
        except InputError:  # a comment line above the header says so first
            kind = _table_kind(path)
            if kind in ("csv", "tsv"):
                check_complete_rows(path, sep=_separator(path, kind))
            raise
        table = read_table(path, text_columns=[col])
    else:
        table = read_table(path)
    col = detect_id_column(table, id_column=id_column, where=str(path), hint=id_hint)
    ids = table[col]
    if ids.isna().any():
        row = int(ids.index[ids.isna().to_numpy()][0])
        raise InputError(f"id column {col!r} of {path} is empty on data row {row + 1}; give every "
                         "cell an id.")
    ids = _id_strings(_scalar_ids(ids, col, path))
    if (ids == "").any():
        row = int(ids.index[(ids == "").to_numpy()][0])
        raise InputError(f"id column {col!r} of {path} is empty on data row {row + 1}; give every "
                         "cell an id.")
    dup = ids.duplicated(keep=False)
    if dup.any():
        first = ids[dup].iloc[0]
        rows = [int(r) + 1 for r in ids.index[(ids == first).to_numpy()][:5]]
        n_ids = int(ids[dup].nunique())
        raise InputError(f"id column {col!r} of {path} has duplicated id {first!r} (data rows "
                         f"{', '.join(map(str, rows))}); {n_ids} id{'s are' if n_ids > 1 else ' is'} "
                         f"repeated, on {int(dup.sum())} rows in all; keep one row per cell.")
    table.pop(col)  # the frame was read here: the other columns are the data, without a copy
    data = table
    data.index = pd.Index(ids.to_numpy(), name=col)
    check_finite(data, where=str(path))
    return UserTable(path=path, id_column=col, data=data)
