"""Reading user tables: formats, id detection and validation."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from ephys2tx.data.user_tables import detect_id_column, read_table, read_user_table
from ephys2tx.errors import InputError


def _frame():
    return pd.DataFrame({"Cell ID": [101, 102, 103], "tau": [0.01, 0.02, 0.015],
                         "v_baseline": [-70.0, -65.0, -72.0]})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".xlsx"])
def test_formats_round_trip(tmp_path, suffix):
    path = tmp_path / f"cells{suffix}"
    frame = _frame()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_excel(path, index=False)
    table = read_user_table(path)
    assert table.id_column == "Cell ID"
    assert list(table.data.index) == ["101", "102", "103"]
    assert table.data["tau"].tolist() == pytest.approx([0.01, 0.02, 0.015])


def test_id_detection_order_and_override():
    frame = pd.DataFrame({"name": ["a"], "specimen_id": [1], "x": [1.0]})
    assert detect_id_column(frame) == "specimen_id"
    assert detect_id_column(frame, id_column="name") == "name"
    with pytest.raises(InputError, match="no id column .nope."):
        detect_id_column(frame, id_column="nope")


def test_no_id_column(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"tau": [0.01], "v_baseline": [-70.0]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="no cell id column"):
        read_user_table(path)


def test_duplicated_ids(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"cell_id": ["a", "b", "a"], "tau": [0.01, 0.02, 0.03]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="duplicated id 'a'"):
        read_user_table(path)


def test_empty_tables(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        read_table(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("cell_id,tau\n")
    with pytest.raises(InputError, match="empty"):
        read_table(header_only)


def test_missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_table(tmp_path / "nope.csv")
    bad = tmp_path / "t.json"
    bad.write_text("{}")
    with pytest.raises(InputError, match="suffix"):
        read_table(bad)


def test_missing_id_value(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"cell_id": ["a", None], "tau": [0.01, 0.02]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="empty on data row 2"):
        read_user_table(path)


def test_parquet_with_a_named_index(tmp_path):
    """``ephys2tx extract`` writes the cell ids as the parquet index."""
    path = tmp_path / "features.parquet"
    _frame().set_index("Cell ID").rename_axis("cell_id").to_parquet(path)
    table = read_user_table(path)
    assert table.id_column == "cell_id" and list(table.data.index) == ["101", "102", "103"]
    assert list(table.data.columns) == ["tau", "v_baseline"]


def test_numbers_beyond_the_float_range_are_out_of_range_not_text():
    from ephys2tx.data.user_tables import numeric_column

    raw = pd.Series(["1.5", "", None, "2e3"], index=["a", "b", "c", "d"])
    assert numeric_column(raw, column="tau", where="t.csv").tolist()[::3] == [1.5, 2000.0]
    for text in ("1e400", "-1e400", "1E+999"):
        with pytest.raises(InputError, match=rf"column 'tau' of t\.csv has the value '{re.escape(text)}' "
                                             r"\(cell x\), beyond the range .*not finite"):
            numeric_column(pd.Series(["1", text], index=["w", "x"]), column="tau", where="t.csv")
    with pytest.raises(InputError, match=r"non-numeric value '1e4OO' \(cell 7\)"):
        numeric_column(pd.Series(["1", "1e4OO"]), column="tau", where="t.csv",
                       ids=pd.Series(["6", "7"]))


@pytest.mark.parametrize("text, hint", [
    ("481,25", r"481,25 looks like a decimal comma: write 481\.25"),
    ("-0,5", r"-0,5 looks like a decimal comma: write -0\.5"),
    ("4,812", r"4,812 has a thousands separator or a decimal comma: write 4812 or 4\.812"),
    ("1,234,567.5", r"1,234,567\.5 has a thousands separator: write 1234567\.5"),
    ("4 812", r"4 812 has a thousands separator: write 4812"),
])
def test_numbers_with_a_decimal_comma_or_digit_grouping_say_so(tmp_path, text, hint):
    """A spreadsheet in a comma-decimal locale writes 481,25 (quoted in a comma CSV); the error
    said only 'non-numeric value' and left the user to guess why."""
    path = tmp_path / "cells.csv"
    pd.DataFrame({"cell_id": ["a", "b"], "input_resistance": ["120.5", text]}).to_csv(path, index=False)
    table = read_user_table(path)
    from ephys2tx.data.user_tables import numeric_column

    with pytest.raises(InputError, match=rf"non-numeric value '{re.escape(text)}' \(cell b\); fix it "
                                         rf"or leave it empty for missing \({hint}"):
        numeric_column(table.data["input_resistance"], column="input_resistance", where="cells.csv")
    with pytest.raises(InputError) as plain:  # other text: no hint
        numeric_column(pd.Series(["1", "abc"]), column="tau", where="t.csv")
    assert str(plain.value).endswith("leave it empty for missing.")


# ---------------------------------------------------------------- fault hunt 4 (notes/faults/findings4.md)

_CELLS = pd.DataFrame({"cell_id": ["a1", "a2", "a3"], "tau": [0.01, 0.02, 0.015],
                       "v_baseline": [-70.0, -65.0, -72.0]})


def _write_text(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("ids", [["007", "010", "100"], ["2E5", "3E5", "4E5"], ["1.1", "1.10", "1.2"],
                                 [" x1", "x2 ", "x3"]])
def test_csv_ids_are_read_as_written(tmp_path, ids):
    """An id is a name: `007`, `2E5` and `1.10` are never turned into 7, 200000 and 1.1."""
    path = tmp_path / "t.csv"
    _CELLS.assign(cell_id=ids).to_csv(path, index=False)
    table = read_user_table(path)
    assert list(table.data.index) == [i.strip() for i in ids]
    assert table.data["tau"].tolist() == pytest.approx([0.01, 0.02, 0.015])


def test_csv_integer_ids_written_as_floats_are_those_integers(tmp_path):
    path = _write_text(tmp_path / "t.csv", "cell_id,tau\n12.0,0.01\n13.0,0.02\n")
    assert list(read_user_table(path).data.index) == ["12", "13"]
    dup = _write_text(tmp_path / "d.csv", "cell_id,tau\n1,0.01\n1.0,0.02\n")
    with pytest.raises(InputError, match="duplicated id '1'"):
        read_user_table(dup)



@pytest.mark.parametrize("ids, read", [
    (["12.0", "13.0", " 14 "], ["12", "13", "14"]),
    (["12.0", "x", "14.0"], ["12.0", "x", "14.0"]),  # one name: every id is read as written
    (["x", "12.0", "14.0"], ["x", "12.0", "14.0"]),
    (["12.0", "13.0", "1.10"], ["12.0", "13.0", "1.10"]),
])
def test_whole_number_ids_lose_their_decimals_only_when_every_id_is_one(tmp_path, ids, read):
    path = tmp_path / "t.csv"
    _CELLS.assign(cell_id=ids).to_csv(path, index=False)
    assert list(read_user_table(path).data.index) == read


def test_rows_with_a_value_are_those_of_notna_any():
    """The rows read_table keeps: ``notna().any(axis=1)``, read column by column."""
    import numpy as np

    from ephys2tx.data.user_tables import _rows_with_a_value

    frame = pd.DataFrame({
        "cell_id": ["a", None, None, "d", None, None],
        "tau": [0.1, np.nan, np.nan, np.nan, np.nan, 0.2],
        "count": pd.array([None, None, 3, None, None, None], dtype="Int64"),
        "note": [None, None, None, None, None, "x"],
    })
    expected = frame.notna().any(axis=1).to_numpy()
    assert expected.tolist() == [True, False, True, True, False, True]
    assert _rows_with_a_value(frame).tolist() == expected.tolist()
    for columns in (["tau"], ["cell_id", "note"], ["count", "tau"], []):
        part = frame[columns]
        assert _rows_with_a_value(part).tolist() == part.notna().any(axis=1).tolist()
    assert _rows_with_a_value(frame.iloc[:0]).tolist() == []

@pytest.mark.parametrize("text", [
    "\n\ncell_id,tau,v_baseline\na1,0.01,-70\na2,0.02,-65\na3,0.015,-72\n",      # blank lines first
    "cell_id,tau,v_baseline\na1,0.01,-70\n,,\na2,0.02,-65\na3,0.015,-72\n,,\n,,\n",  # spreadsheet ,,
    " cell_id , tau ,v_baseline \na1,0.01,-70\na2,0.02,-65\na3,0.015,-72\n",     # blanks in the header
    "cell_id\x00,tau,v_baseline\na1,0.01,-70\na2,0.02,-65\na3,0.015,-72\n",       # a NUL byte
])
def test_csv_layouts_spreadsheets_write_are_read(tmp_path, text):
    table = read_user_table(_write_text(tmp_path / "t.csv", text))
    assert list(table.data.index) == ["a1", "a2", "a3"]
    assert list(table.data.columns) == ["tau", "v_baseline"]
    assert table.data["v_baseline"].tolist() == [-70.0, -65.0, -72.0]


def test_a_missing_id_is_named_by_its_row_after_empty_rows(tmp_path):
    path = _write_text(tmp_path / "t.csv", "cell_id,tau\n,,\na1,0.01\n,0.02\n")
    with pytest.raises(InputError, match="is empty on data row 3"):
        read_user_table(path)


def test_excel_table_below_blank_rows(tmp_path):
    path = tmp_path / "t.xlsx"
    with pd.ExcelWriter(path) as writer:
        _CELLS.to_excel(writer, index=False, startrow=3)
    table = read_user_table(path)
    assert list(table.data.index) == ["a1", "a2", "a3"]
    assert table.data["tau"].tolist() == pytest.approx([0.01, 0.02, 0.015])


@pytest.mark.parametrize("name, text, pattern", [
    ("tabs.csv", "cell_id\ttau\na1\t0.01\n", r"tabs\.csv is separated by tabs, not commas.*name the file \.tsv"),
    ("commas.tsv", "cell_id,tau\na1,0.01\n", r"commas\.tsv is separated by commas, not tabs.*name the file \.csv"),
    ("comment.csv", "# rig 2, 2021\ncell_id,tau,sag\na1,0.01,0.1\n", r"starts with the line '# rig 2.*comment"),
    ("comment1.csv", "# rig 2\ncell_id,tau\na1,0.01\n", r"starts with the line '# rig 2'"),
])
def test_other_separators_and_comment_lines_are_named(tmp_path, name, text, pattern):
    with pytest.raises(InputError, match=pattern):
        read_user_table(_write_text(tmp_path / name, text))


@pytest.mark.parametrize("text, tau", [
    ("cell_id;tau;sag\n007;0,01;0,1\n008;2,5e-2;0,2\n", [0.01, 0.025]),       # decimal commas
    ("cell_id;tau;sag\n007;0.01;0.1\n008;0.025;0.2\n", [0.01, 0.025]),        # decimal points
    ("cell_id;tau;Sag (peak, steady)\n007;0,01;1,1\n008;0,025;1,2\n", [0.01, 0.025]),  # comma in a name
])
def test_a_csv_separated_by_semicolons_is_read(tmp_path, text, tau):
    """A spreadsheet's CSV in a decimal-comma locale (`;` between fields) was refused."""
    table = read_user_table(_write_text(tmp_path / "semi.csv", text))
    assert list(table.data.index) == ["007", "008"]
    assert table.data["tau"].tolist() == pytest.approx(tau)
    assert table.data.shape == (2, 2)


def test_a_semicolon_csv_mixing_decimal_marks_is_refused(tmp_path):
    path = _write_text(tmp_path / "mixed.csv", "cell_id;tau;sag\n1.10;0,01;0.1\n2;0,02;0.2\n")
    with pytest.raises(InputError, match=r"mixed\.csv is separated by semicolons and mixes decimal "
                                         r"commas \(column 'tau', line 2: 0,01\) with decimal points "
                                         r"\(column 'sag', line 2: 0\.1\)"):
        read_user_table(path)  # the id 1.10 is a name, not a number: not counted


def test_excel_ids_keep_their_leading_zeros(tmp_path):
    """A workbook's text ids ('0707') were read as numbers (707): the output lost the zeros."""
    path = tmp_path / "t.xlsx"
    _CELLS.assign(cell_id=["0701", "0702", "1.10"]).to_excel(path, index=False)
    assert list(read_user_table(path).data.index) == ["0701", "0702", "1.10"]
    numbers = tmp_path / "n.xlsx"
    _CELLS.assign(cell_id=[601506507, 601790961, 7]).to_excel(numbers, index=False)
    assert list(read_user_table(numbers).data.index) == ["601506507", "601790961", "7"]


def test_special_files_are_not_read(tmp_path):
    import os

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/null"):
        with pytest.raises(InputError, match="is not a regular file"):
            read_user_table(path)  # never blocks on the pipe


def test_a_workbook_with_data_on_several_sheets_is_refused(tmp_path):
    """Which sheet holds the cells would be a guess (the first one was read silently)."""
    path = tmp_path / "book.xlsx"
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame({"note": ["read me"]}).to_excel(writer, sheet_name="README", index=False)
        _frame().to_excel(writer, sheet_name="cells", index=False)
        pd.DataFrame().to_excel(writer, sheet_name="empty", index=False)
    with pytest.raises(InputError, match=r"book\.xlsx has 2 sheets with data \('README', 'cells'\); "
                                         r"ephys2tx reads one table: save the sheet that holds the "
                                         r"cells as its own file"):
        read_user_table(path)
    one = tmp_path / "one.xlsx"  # further sheets without data are no ambiguity
    with pd.ExcelWriter(one) as writer:
        _frame().to_excel(writer, sheet_name="cells", index=False)
        pd.DataFrame().to_excel(writer, sheet_name="empty", index=False)
    assert list(read_user_table(one).data.index) == ["101", "102", "103"]


def test_an_old_binary_xls_workbook_is_a_user_error(tmp_path, monkeypatch):
    """pandas needs xlrd for .xls; without it the reader's ImportError was an internal error."""
    import builtins

    real_import = builtins.__import__

    def no_xlrd(name, *args, **kwargs):
        if name == "xlrd":
            raise ImportError("No module named 'xlrd'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xlrd)
    path = tmp_path / "old.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(2000))  # the OLE2 (BIFF) signature
    with pytest.raises(InputError, match=r"old\.xls: it is an old-format Excel workbook \(\.xls\), "
                                         r"which needs the xlrd package; save it as \.xlsx or CSV"):
        read_table(path)


def test_parquet_ids_of_bytes_or_nested_values(tmp_path):
    """A binary id column is its UTF-8 text (was written back as "b'101'"); bytes that are no
    UTF-8 and nested values (struct, list) are refused, naming the row (were written as "{'a': 0}")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(ids):
        path = tmp_path / "cells.parquet"
        pq.write_table(pa.table({"cell_id": ids, "tau": pa.array([0.01, 0.02, 0.015])}), path)
        return path

    table = read_user_table(write(pa.array([b"101", b"102", b"caf\xc3\xa9"], pa.binary())))
    assert list(table.data.index) == ["101", "102", "café"]
    with pytest.raises(InputError, match=r"id column 'cell_id' of .*cells\.parquet holds bytes that "
                                         r"are not UTF-8 text on data row 2 .*store them as a text column"):
        read_user_table(write(pa.array([b"a", b"\xff\xfe", b"c"], pa.binary())))
    with pytest.raises(InputError, match=r"holds a nested value \(a dict\) on data row 1 \(\{'a': 0\}\)"):
        read_user_table(write(pa.array([{"a": i} for i in range(3)])))
    with pytest.raises(InputError, match=r"holds a nested value \(a ndarray\) on data row 1"):
        read_user_table(write(pa.array([[i] for i in range(3)])))


def test_compressed_tables_and_a_zip_that_is_no_workbook(tmp_path):
    """A gzip file named .csv was 'not UTF-8 ... save it as UTF-8'; .csv.gz gave no way forward;
    a zip named .xlsx that is no workbook was an internal error (pandas' OptionError)."""
    import gzip
    import zipfile

    text = _frame().to_csv(index=False).encode()
    (tmp_path / "cells.csv").write_bytes(gzip.compress(text))
    with pytest.raises(InputError, match=r"cells\.csv is gzip-compressed, not text; decompress it first"):
        read_user_table(tmp_path / "cells.csv")
    (tmp_path / "cells.csv.gz").write_bytes(gzip.compress(text))
    with pytest.raises(InputError, match=r"cells\.csv\.gz is compressed \(\.gz\); decompress it first "
                                         r"\(gunzip cells\.csv\.gz\) and give the \.csv file"):
        read_user_table(tmp_path / "cells.csv.gz")
    with zipfile.ZipFile(tmp_path / "book.xlsx", "w") as archive:
        archive.writestr("cells.csv", text)
    with pytest.raises(InputError, match=r"cannot read .*book\.xlsx as an Excel workbook \(\w+\); "
                                         r"save it again from Excel as \.xlsx, or as CSV"):
        read_user_table(tmp_path / "book.xlsx")


def test_duplicated_ids_are_counted_as_ids_and_rows(tmp_path):
    """20 ids each on 2 rows: the message names the first id's rows and says 20 ids, 40 rows
    (it said '40 rows share an id', read as 40 copies of the id it named)."""
    from ephys2tx.data.user_tables import read_user_table

    ids = [f"c{i}" for i in range(20)] * 2 + [f"d{i}" for i in range(10)]
    path = tmp_path / "cells.csv"
    pd.DataFrame({"cell_id": ids, "tau": [0.01 + 0.0001 * i for i in range(len(ids))]}).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"duplicated id 'c0' \(data rows 1, 21\); 20 ids are repeated, "
                                         r"on 40 rows in all; keep one row per cell"):
        read_user_table(path)


def test_parquet_is_read_as_pandas_reads_it(tmp_path):
    """read_table's Parquet reader gives the frame of ``pd.read_parquet``: dtypes, missing
    values, repeated text, categories, a named index."""
    import numpy as np

    from ephys2tx.data.user_tables import _read_parquet

    frame = pd.DataFrame({
        "cell_id": ["a", "b", "a", None, "c"],
        "layer": pd.Categorical(["L1", "L2/3", "L1", None, "L5"]),
        "tau": [0.01, np.nan, 0.02, 0.03, 0.04],
        "n": [1, 2, 3, 4, 5],
        "count": pd.array([1, None, 3, 4, 5], dtype="Int64"),
        "ok": [True, False, True, True, False],
        "when": pd.to_datetime(["2024-01-01", None, "2024-01-03", "2024-01-04", "2024-01-05"]),
    }, index=pd.Index([10, 11, 12, 13, 14], name="row"))
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    expected = pd.read_parquet(path)
    pd.testing.assert_frame_equal(_read_parquet(path), expected)
    pd.testing.assert_frame_equal(read_table(path), expected.reset_index())
    frame.reset_index(drop=True).to_parquet(path)
    pd.testing.assert_frame_equal(_read_parquet(path), pd.read_parquet(path))


@pytest.mark.parametrize("values, pattern", [
    (pd.Series([True, False, None], dtype=object), r"holds True/False values \(cell c0: True\)"),
    (pd.Series([False, True]), r"holds True/False values \(cell c0: False\)"),
    (pd.Series([0.2, True], dtype=object), r"holds True/False values \(cell c1: True\)"),
    (pd.Series(pd.to_datetime(["2020-01-01", None])), r"holds dates or times \(cell c0: '2020-01-01"),
    (pd.Series(pd.to_timedelta([None, "12ms"])), r"holds durations \(cell c1: '0 days 00:00:00\.012"),
], ids=["booleans as objects", "bool dtype", "a True among numbers", "dates", "durations"])
def test_booleans_dates_and_durations_are_no_measurements(values, pattern):
    """pd.to_numeric turned True/False into 1/0 and dates into nanoseconds: a Parquet, Excel or
    CSV column of true/false was read as a feature of 1s and 0s without a word."""
    from ephys2tx.data.user_tables import numeric_column

    ids = pd.Series([f"c{i}" for i in range(len(values))])
    with pytest.raises(InputError, match=r"column 'sag' of cells\.parquet " + pattern):
        numeric_column(values, column="sag", where="cells.parquet", ids=ids)
    assert numeric_column(pd.Series(["0.5", None, 1]), column="sag", where="x").tolist()[::2] == [0.5, 1.0]


def test_a_csv_column_of_true_false_is_refused_in_a_query(tmp_path):
    from ephys2tx.mapping.query import read_query

    path = tmp_path / "cells.csv"
    path.write_text("cell_id,sag,tau\na,TRUE,0.02\nb,FALSE,0.03\n")
    with pytest.raises(InputError, match=r"column 'sag' of .*cells\.csv holds True/False values "
                                         r"\(cell a: True\)"):
        read_query(path)


def test_feature_frame_reads_missing_values_of_object_columns_and_refuses_booleans():
    """A pd.NA among numbers (an object column) named the first number as 'non-numeric'; a True
    among numbers was read as 1."""
    import numpy as np

    from ephys2tx.data.user_tables import feature_frame

    X = pd.DataFrame({"tau": pd.Series([0.02, pd.NA, "0.03"], dtype=object, index=["a", "b", "c"])})
    frame = feature_frame(X, ["tau"], where="the table to predict")
    assert frame["tau"].tolist()[::2] == [0.02, 0.03] and np.isnan(frame["tau"]["b"])
    with pytest.raises(InputError, match=r"feature 'tau' of the table to predict has non-numeric "
                                         r"value 'abc' \(cell c\)"):
        feature_frame(X.assign(tau=[0.02, pd.NA, "abc"]), ["tau"], where="the table to predict")
    with pytest.raises(InputError, match=r"column 'tau' of the table to predict holds True/False "
                                         r"values \(cell b: True\)"):
        feature_frame(X.assign(tau=pd.Series([0.02, True, 0.5], dtype=object, index=X.index)),
                      ["tau"], where="the table to predict")


def test_an_id_column_given_as_a_number_is_refused(tmp_path):
    """id_column=3 was an AttributeError ('int' object has no attribute 'strip')."""
    path = tmp_path / "cells.csv"
    path.write_text("cell_id,tau\na,0.02\n")
    with pytest.raises(InputError, match=r"the id column must be given by its name \(a str, e\.g\. "
                                         r"'cell_id'\), got int 3"):
        read_user_table(path, id_column=3)
