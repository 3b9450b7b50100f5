"""Loaders on the real tables: counts derived from the raw CSVs with plain pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ephys2tx import CLASSES
from ephys2tx.data.datasets import (
    DEFAULT_MAX_MISSING,
    FIVE_CLASSES,
    LABEL_PROXY_COLUMNS,
    load_dataset,
)
from ephys2tx.data.missing_codes import mask_missing_codes
from ephys2tx.data.registry import DATASET_FILES
from ephys2tx.errors import InputError


def _raw(data_dir, dataset, role, **kwargs) -> pd.DataFrame:
    return pd.read_csv(data_dir / DATASET_FILES[dataset][role].relpath, encoding="utf-8-sig",
                       low_memory=False, **kwargs)


def _expected_after_qc(features: pd.DataFrame, labels: pd.Series) -> pd.Series:
    """Re-statement of the documented QC: codes -> NaN, duplicates, > 25% missing, 4 classes.

    (The missing-value rules themselves are restated on the raw files in test_missing_codes.py.)
    """
    features = mask_missing_codes(features)[0]
    keep = ~features.duplicated(keep="first")
    keep &= features.isna().mean(axis=1) <= DEFAULT_MAX_MISSING
    kept = labels[keep.to_numpy()]
    return kept[kept.isin(CLASSES)]


# --------------------------------------------------------------------------- counts


def test_mouse_visp_counts_match_raw_table(data_dir, mouse_visp):
    ephys, meta = _raw(data_dir, "mouse_visp", "ephys"), _raw(data_dir, "mouse_visp", "meta")
    raw_counts = meta["T type subclass"].str.replace(" interneuron", "", regex=False).value_counts()
    # Published counts (README): the four classes plus the two held-out subclasses.
    assert raw_counts.to_dict() == {"Sst": 1712, "Pvalb": 873, "Vip": 798, "Lamp5": 472,
                                    "Sncg": 276, "Sst Chodl": 129}
    table = ephys.merge(meta, on="Cell ID")
    columns = [c for c in mouse_visp.features.columns]
    labels = table["T type subclass"].str.replace(" interneuron", "", regex=False)
    labels.index = table["Cell ID"].astype(str)
    expected = _expected_after_qc(table[columns].set_axis(labels.index), labels)
    assert mouse_visp.n_cells == len(expected) == 3854
    assert mouse_visp.class_counts() == {c: int(expected.value_counts()[c]) for c in CLASSES}
    # One Pvalb cell misses > 25% of its features once its missing-value codes are missing.
    assert mouse_visp.class_counts() == {"Lamp5": 472, "Pvalb": 872, "Sst": 1712, "Vip": 798}
    assert set(mouse_visp.features.index) == set(expected.index)
    held = mouse_visp.held_out
    assert held is not None
    assert held.labels.value_counts().to_dict() == {
        k: int(raw_counts[k]) for k in ("Sncg", "Sst Chodl")} == {"Sncg": 276, "Sst Chodl": 129}
    assert not set(held.features.index) & set(mouse_visp.features.index)


def test_human_counts_match_raw_table(data_dir, human):
    ephys, meta = _raw(data_dir, "human", "ephys"), _raw(data_dir, "human", "meta")
    meta = meta.drop_duplicates()
    assert meta["specimen_id_x"].is_unique
    table = ephys.merge(meta, left_on="specimen_id", right_on="specimen_id_x")
    label_map = {"PVALB": "Pvalb", "SST": "Sst", "VIP": "Vip", "LAMP5/PAX6/Other": "Lamp5"}
    labels = table["Revised_subclass_label"].map(label_map)
    labels.index = table["specimen_id"].astype(str)
    feature_cols = [c for c in ephys.columns if c != "specimen_id"]
    assert sorted(feature_cols) == sorted(human.features.columns)
    expected = _expected_after_qc(table[feature_cols].set_axis(labels.index), labels)
    assert human.n_cells == len(expected) == 664
    assert human.class_counts() == {c: int(expected.value_counts()[c]) for c in CLASSES}
    assert human.class_counts() == {"Lamp5": 66, "Pvalb": 350, "Sst": 143, "Vip": 105}
    donors = table.set_index(labels.index).loc[expected.index, "Donor"]
    assert human.groups.nunique() == donors.nunique() == 108
    assert (human.groups.loc[expected.index].astype(str) == donors.astype(str)).all()


def test_five_class_mouse_adds_the_sncg_cells(data_dir, mouse_visp):
    """`mouse_visp_5class`: the 4-class cells plus the 276 Sncg cells, same QC; Sst Chodl held out."""
    five = load_dataset("mouse_visp_5class", data_dir)
    assert five.class_counts() == {**mouse_visp.class_counts(), "Sncg": 276}
    assert set(five.labels.unique()) == set(FIVE_CLASSES)
    assert five.n_cells == mouse_visp.n_cells + 276 == 4130
    assert list(five.features.index[:mouse_visp.n_cells]) == list(mouse_visp.features.index)
    assert five.groups.index.equals(five.features.index) and five.groups.notna().all()
    assert five.held_out.class_counts() == {"Sst Chodl": 129}
    assert five.qc_report[-1]["step"] == "add the held-out Sncg cells as a class"
    assert (five.qc_report[-1]["n_before"], five.qc_report[-1]["n_after"]) == (3854, 4130)


def test_bridge_counts_match_raw_table(data_dir, bridge):
    ephys = _raw(data_dir, "mouse_l1_bridge", "ephys")
    meta = _raw(data_dir, "mouse_l1_bridge", "meta")
    labels = meta.set_index(meta["spec_id"].astype(str))["subclass"]
    labels = labels.reindex(ephys["cell_name"].astype(str))
    expected = labels[labels.isin(CLASSES)]
    assert bridge.n_cells == len(expected) == 506
    assert bridge.class_counts() == {c: int(n) for c, n in expected.value_counts().items()
                                     if c in CLASSES}
    assert set(bridge.features.columns) <= set(ephys.columns)


# --------------------------------------------------------------------------- table hygiene


@pytest.mark.parametrize("name", ["mouse_visp", "human", "mouse_l1_bridge"])
def test_tables_are_clean(name, request):
    ds = request.getfixturevalue({"mouse_visp": "mouse_visp", "human": "human",
                                  "mouse_l1_bridge": "bridge"}[name])
    assert ds.features.index.is_unique
    assert ds.features.index.map(type).unique().tolist() == [str]
    assert all(pd.api.types.is_float_dtype(t) for t in ds.features.dtypes)
    assert ds.labels.index.equals(ds.features.index)
    assert ds.metadata.index.equals(ds.features.index)
    assert set(ds.labels.unique()) <= set(CLASSES)
    assert ds.labels.notna().all()
    # Nothing that carries the label may be a feature.
    forbidden = set(LABEL_PROXY_COLUMNS)
    leaking = [c for c in ds.features.columns
               if c in forbidden or any(word in c.lower() for word in
                                        ("genotype", "t-type", "t type", "probability", "subclass",
                                         "cre", "marker"))]
    assert not leaking, leaking


def test_label_proxies_are_listed():
    for col in ("Genotype (full)", "T type subclass", "T type subclass assignment probability",
                "VISp Viewer T type", "t-type", "Revised_subclass_label", "Transcriptomic_type "):
        assert col in LABEL_PROXY_COLUMNS


@pytest.mark.parametrize("fixture", ["mouse_visp", "human"])
def test_groups_present_for_both_species(fixture, request):
    ds = request.getfixturevalue(fixture)
    assert ds.groups is not None
    assert ds.groups.index.equals(ds.features.index)
    assert ds.groups.notna().all()
    # Grouping is meaningful: several cells per donor on average.
    assert 1 < ds.groups.nunique() < ds.n_cells / 2


@pytest.mark.parametrize("fixture", ["mouse_visp", "human", "bridge"])
def test_qc_report_chains(fixture, request):
    ds = request.getfixturevalue(fixture)
    report = ds.qc_report
    assert report, "empty QC report"
    for step in report:
        assert step["n_before"] >= step["n_after"] >= 0
        assert step["n_dropped"] == step["n_before"] - step["n_after"]
    # The final steps (join -> duplicates -> missingness -> labels) act on one table in order.
    chained = [i for i, s in enumerate(report) if s["step"].startswith(("join", "attach"))][0]
    for prev, nxt in zip(report[chained:], report[chained + 1:]):
        assert prev["n_after"] == nxt["n_before"], (prev, nxt)
    assert report[-1]["n_after"] == ds.n_cells
    n_held = 0 if ds.held_out is None else ds.held_out.n_cells
    assert report[-1]["n_before"] >= ds.n_cells + n_held


def test_checksums_recorded(human):
    expected = {f.relpath: f.sha256 for f in DATASET_FILES["human"].values()}
    assert human.checksums == expected


def test_held_out_labels_outside_classes(mouse_visp):
    assert not set(mouse_visp.held_out.labels) & set(CLASSES)
    assert list(mouse_visp.held_out.features.columns) == list(mouse_visp.features.columns)


def test_subset_keeps_alignment(human):
    ids = human.features.index[::7]
    sub = human.subset(ids)
    assert sub.n_cells == len(ids)
    assert sub.labels.index.equals(ids) and sub.groups.index.equals(ids)
    np.testing.assert_array_equal(sub.features.to_numpy(), human.features.loc[ids].to_numpy())


def test_unknown_dataset_name(data_dir):
    with pytest.raises(InputError, match="unknown dataset"):
        load_dataset("rat", data_dir)


def test_a_data_dir_that_is_not_a_path_is_named():
    """A number (or a DataFrame) as data_dir was a TypeError from pathlib."""
    with pytest.raises(InputError, match=r"data_dir must be a path to the data folder .*got int 5"):
        load_dataset("mouse_visp", 5)


def test_env_var_locates_data(data_dir, monkeypatch):
    monkeypatch.setenv("EPHYS2TX_DATA", str(data_dir))
    assert load_dataset("human").n_cells == 664


# --------------------------------------------------------------------------- bad tables


def _rewrite(path, edit):
    table = pd.read_csv(path, encoding="utf-8-sig", low_memory=False)
    table = edit(table)
    table.to_csv(path, index=False)


def test_exact_duplicate_row_is_dropped_and_reported(writable_data_dir):
    path = writable_data_dir / DATASET_FILES["human"]["ephys"].relpath
    _rewrite(path, lambda t: pd.concat([t, t.iloc[[5]]], ignore_index=True))
    ds = load_dataset("human", writable_data_dir, verify=False)
    assert ds.n_cells == 664
    # The repeated row (same specimen_id, same content) goes first...
    repeated = [s for s in ds.qc_report if s["step"].startswith("drop repeated specimen_id rows")][0]
    assert (repeated["n_before"], repeated["n_after"]) == (705, 704)
    # ...then the one published pair of cells with identical features.
    step = [s for s in ds.qc_report if s["step"] == "drop exact duplicate feature rows"][0]
    assert (step["n_before"], step["n_after"]) == (704, 703)


def test_conflicting_duplicate_ids_raise(writable_data_dir):
    path = writable_data_dir / DATASET_FILES["human"]["ephys"].relpath

    def conflict(table):
        extra = table.iloc[[5]].copy()
        extra["tau"] = extra["tau"] + 1.0
        return pd.concat([table, extra], ignore_index=True)

    _rewrite(path, conflict)
    with pytest.raises(InputError, match="conflicting rows for specimen_id"):
        load_dataset("human", writable_data_dir, verify=False)


def test_unparsable_file_raises(writable_data_dir):
    path = writable_data_dir / DATASET_FILES["mouse_visp"]["meta"].relpath
    path.write_bytes(b"")
    with pytest.raises(InputError, match="cannot parse"):
        load_dataset("mouse_visp", writable_data_dir, verify=False)


@pytest.mark.parametrize("dataset, role, column", [
    ("mouse_visp", "meta", "Cell ID"), ("human", "meta", "specimen_id_x"),
    ("human", "donors", "Donor"), ("mouse_l1_bridge", "meta", "spec_id")])
def test_tables_that_share_no_id_are_named(writable_data_dir, dataset, role, column):
    # Before: "dataset mouse_visp has no cells; it needs a header and one row per cell" (the
    # bridge: 0 cells and no error; the donor table: its columns silently empty).
    path = writable_data_dir / DATASET_FILES[dataset][role].relpath
    _rewrite(path, lambda t: t.assign(**{column: t[column].astype(str) + "9"}))
    with pytest.raises(InputError, match=rf"no .+ of .* is a {column} of .*{path.name} \(e\.g\. "
                                         r"'\S+9'\): the tables share no id.*fetch --overwrite"):
        load_dataset(dataset, writable_data_dir, verify=False)


def test_the_restore_hint_is_a_fetch_that_replaces_the_file(writable_data_dir, data_dir, capsys):
    # Before: the hint was `ephys2tx fetch --force`, which refuses to replace a modified file.
    from ephys2tx.cli import main

    path = writable_data_dir / DATASET_FILES["human"]["donors"].relpath
    path.write_text("Donor\nH1\n")
    with pytest.raises(InputError, match="checksum mismatch") as info:
        load_dataset("human", writable_data_dir)
    hint = str(info.value).split("`")[1]
    assert hint == f"ephys2tx fetch --overwrite --data-dir {writable_data_dir}"
    args = hint.split()[1:] + ["--dataset", "human", "--mirror", data_dir.resolve().as_uri()]
    assert main(args) == 0, capsys.readouterr().err
    assert load_dataset("human", writable_data_dir).n_cells == 664


def test_checksums_are_recorded_without_verify(writable_data_dir, data_dir):
    # Before: --no-verify recorded no checksums, so the reference-model cache key of `map
    # --no-verify` was the same for any content: a model trained on other data was reused.
    from ephys2tx.io import sha256_file
    from ephys2tx.mapping.cache import cache_key
    from ephys2tx.mapping.reference import reference_data

    spec = DATASET_FILES["human"]["meta"]
    _rewrite(writable_data_dir / spec.relpath, lambda t: t.assign(
        Revised_subclass_label=t["Revised_subclass_label"].replace({"PVALB": "SST", "SST": "PVALB"})))
    edited = load_dataset("human", writable_data_dir, verify=False)
    assert edited.checksums[spec.relpath] == sha256_file(writable_data_dir / spec.relpath)
    assert load_dataset("human", data_dir, verify=False).checksums == load_dataset("human", data_dir).checksums
    keys = {cache_key("human", ["tau"], reference_data("human", root, verify=False).checksums)
            for root in (data_dir, writable_data_dir)}
    assert len(keys) == 2
