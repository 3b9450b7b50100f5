"""Feature-family schemas: every feature in exactly one of 12 families."""

from __future__ import annotations

from collections import Counter

import pytest

from ephys2tx.errors import InputError
from ephys2tx.features.families import (
    HUMAN_IPFX_SCHEMA,
    MOUSE_VISP_SCHEMA,
    SCHEMAS,
    resolve_families,
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


# --------------------------------------------------------------------------- the one resolver


def test_resolver_maps_names_and_positions_in_the_given_order():
    assert resolve_families({"b": ["x3"], "a": ["x2", "x1"]}, 3, _COLUMNS) == {"b": [2], "a": [1, 0]}
    assert resolve_families([[2], [0, 1]], 3) == {"f0": [2], "f1": [0, 1]}


def test_resolver_defaults_for_no_families():
    assert resolve_families(None, 3, default="columns") == {"f0": [0], "f1": [1], "f2": [2]}
    chunks = resolve_families(None, 30, default="chunks")
    assert list(chunks) == [f"f{k:02d}" for k in range(12)]
    assert [i for cols in chunks.values() for i in cols] == list(range(30))
    with pytest.raises(InputError, match="non-empty mapping"):
        resolve_families(None, 3)


def _small_table(n=80, seed=0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    y = np.repeat(["A", "B"], n // 2)
    X = pd.DataFrame(rng.normal(size=(n, 3)) + (y == "B")[:, None], columns=_COLUMNS)
    return X, y


def _spca(families):
    from ephys2tx.models.spca import FamilySparsePCA

    return FamilySparsePCA(families, random_state=0)


def _bilstm(families):
    from ephys2tx.models.bilstm import AttentionBiLSTMClassifier

    return AttentionBiLSTMClassifier(families, max_epochs=2, batch_size=32, token_dim=4,
                                     hidden_size=4, embedding_dim=4, random_state=0)


@pytest.mark.parametrize("make", [_spca, _bilstm], ids=["spca", "bilstm"])
def test_every_family_model_refuses_an_unassigned_column(make):
    """A column in no family is an error naming it, never silently ignored (one resolver)."""
    X, y = _small_table()
    with pytest.raises(InputError, match="column 'x3' is in no feature family"):
        make({"a": ["x1", "x2"]}).fit(X, y)
    fitted = make(_FAMILIES).fit(X, y)
    assert fitted.families_ == {"a": [0, 1], "b": [2]}
