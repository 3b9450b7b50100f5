"""Feature-family schemas: every feature in exactly one of 12 families."""

from __future__ import annotations

from collections import Counter

import pytest

from ephys2tx.errors import InputError
from ephys2tx.features.families import (
    HUMAN_IPFX_SCHEMA,
    MOUSE_VISP_SCHEMA,
    SCHEMAS,
    validate_families,
)


@pytest.mark.parametrize("fixture", ["mouse_visp", "human", "bridge"])
def test_real_tables_partitioned_into_12_families(fixture, request):
    ds = request.getfixturevalue(fixture)
    assert len(ds.families) == 12
    placed = Counter(col for cols in ds.families.values() for col in cols)
    columns = list(ds.features.columns)
    assert set(placed) == set(columns), "feature lost or unknown"
    assert max(placed.values()) == 1, [c for c, n in placed.items() if n > 1]
    assert all(len(cols) > 0 for cols in ds.families.values())
    validate_families(ds.families, columns)


@pytest.mark.parametrize("schema", [HUMAN_IPFX_SCHEMA, MOUSE_VISP_SCHEMA])
def test_schema_structure(schema):
    assert len(schema.family_names) == 12 == len(set(schema.family_names))
    assert len(schema.columns) == len(set(schema.columns))
    assert set(schema.descriptions) == set(schema.family_names)
    assert list(schema.as_dict()) == schema.family_names
    reverse = schema.family_of()
    assert len(reverse) == len(schema.columns)
    assert all(col in schema.as_dict()[fam] for col, fam in reverse.items())
    assert SCHEMAS[schema.name] is schema


def test_human_schema_is_the_whole_human_table(data_dir):
    import pandas as pd

    from ephys2tx.data.registry import DATASET_FILES

    header = pd.read_csv(data_dir / DATASET_FILES["human"]["ephys"].relpath, nrows=0).columns
    assert sorted(c for c in header if c != "specimen_id") == sorted(HUMAN_IPFX_SCHEMA.columns)


def test_restricted_to_drops_empty_families():
    keep = ["sag", "tau", "rheobase_i"]
    restricted = HUMAN_IPFX_SCHEMA.restricted_to(keep)
    assert restricted == {"rheobase_firing": ["rheobase_i"], "passive_membrane": ["tau"],
                          "hyperpolarising_sag": ["sag"]}


_FAMILIES = {"a": ["x1", "x2"], "b": ["x3"]}
_COLUMNS = ["x1", "x2", "x3"]


def test_validate_accepts_a_partition():
    validate_families(_FAMILIES, _COLUMNS)


@pytest.mark.parametrize(
    ("families", "columns", "match"),
    [
        ({"a": ["x1", "x2"]}, _COLUMNS, "'x3'.*no feature family"),          # lost column
        ({"a": ["x1", "x2"], "b": ["x2", "x3"]}, _COLUMNS, "'x2'.*two families"),  # duplicated
        ({"a": ["x1", "x2"], "b": ["x3", "x4"]}, _COLUMNS, "'x4'"),               # unknown column
        ({"a": ["x1", "x2"], "b": ["x3"], "c": []}, _COLUMNS, "'c'.*empty"),     # empty family
    ],
    ids=["lost", "duplicated", "unknown", "empty"],
)
def test_validate_rejects(families, columns, match):
    with pytest.raises(InputError, match=match):
        validate_families(families, columns, where="test table")


def test_validate_rejects_real_schema_with_a_column_lost(human):
    families = {fam: list(cols) for fam, cols in human.families.items()}
    families["passive_membrane"].remove("tau")
    with pytest.raises(InputError, match="'tau'"):
        validate_families(families, list(human.features.columns))
