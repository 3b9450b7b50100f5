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
