"""Extraction of the 12 IPFX feature-vector families from generated NWB files (both layouts)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ephys2tx import CLASSES
from ephys2tx.errors import InputError
from ephys2tx.features.nwb import (
    COMPACT_LAYOUT,
    FAMILIES,
    as_dataset,
    extract_features,
    load_feature_table,
    normalise_labels,
    read_feature_table,
)
from ephys2tx.features.nwb.adapter import CellFailure, inspect_file
from ephys2tx.features.nwb.vectors import block_average, extract_cell


@pytest.fixture(scope="session")
def extracted(nwb_set, tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    unreadable = root / "unreadable.nwb"
    unreadable.write_bytes(np.random.default_rng(0).bytes(4096))  # not HDF5 at all
    inputs = [p for p, _ in nwb_set["good"]] + [nwb_set["no_ramp"], nwb_set["nwb1"], nwb_set["truncated"],
                                                unreadable]
    calls = []
    result = extract_features(inputs, root / "features.parquet", workers=1, progress=lambda *a: calls.append(a))
    return result, calls


def _labels(nwb_set) -> pd.Series:
    return pd.Series({p.stem: lab for p, lab in nwb_set["good"]})


def test_all_families_present_and_ordered(extracted, nwb_set):
    result, calls = extracted
    features, families = load_feature_table(result.features_path)
    assert list(families) == list(FAMILIES)
    assert sorted(features.index) == sorted(p.stem for p, _ in nwb_set["good"])
    for name, cols in families.items():
        assert cols and all(c.startswith(name + "__") for c in cols)
        assert features[cols].notna().any(axis=1).all(), name
    assert sum(map(len, families.values())) == features.shape[1]
    n = len(nwb_set["good"]) + 4
    assert calls[0] == (0, 0, n) and calls[-1] == (n, 4, 0)
    assert [c[0] for c in calls] == list(range(n + 1))
    assert all(done + remaining == n for done, _, remaining in calls)
    full, _ = load_feature_table(result.features_path, include_summary=True)
    assert {"summary__ri", "summary__tau", "summary__vrest"} <= set(full.columns)


def test_fast_spiking_vs_adapting_direction(extracted, nwb_set):
    features, families = load_feature_table(extracted[0].features_path)
    labels = _labels(nwb_set)
    width = features[families["spiking_width"]].mean(axis=1, skipna=True)
    rate = features[families["inst_freq"]].max(axis=1, skipna=True)
    mean_rate = features[families["inst_freq"]].mean(axis=1, skipna=True)
    pv, sst = labels.index[labels == "Pvalb"], labels.index[labels == "Sst"]
    assert width[pv].max() < width[sst].min()
    assert rate[pv].mean() > rate[sst].mean()
    assert mean_rate[pv].min() > mean_rate[sst].max()
    ratio = features[families["spiking_upstroke_downstroke_ratio"]].mean(axis=1, skipna=True)
    assert ratio[pv].max() < ratio[sst].min()  # fast-spiking: symmetric, fast-repolarising spikes
    summary, _ = load_feature_table(extracted[0].features_path, include_summary=True)
    assert summary.loc[pv, "summary__ri"].max() < summary.loc[sst, "summary__ri"].min()
    assert summary.loc[pv, "summary__tau"].max() < summary.loc[sst, "summary__tau"].min()


def test_failures_recorded_with_reason(extracted):
    failures = pd.read_csv(extracted[0].failures_path).set_index("cell_id")
    assert set(failures.index) == {"no_ramp", "nwb1_cell", "truncated", "unreadable"}
    assert "no ramp sweeps" in failures.loc["no_ramp", "reason"].lower()
    assert "NWB 1" in failures.loc["nwb1_cell", "reason"]
    assert "truncated" in failures.loc["truncated", "reason"]
    assert "not an HDF5 file (it begins with b'" in failures.loc["unreadable", "reason"]
    assert failures["path"].map(lambda p: p.endswith(".nwb")).all()


def test_both_layouts_give_same_vectors_shape(nwb_set):
    by_layout = {}
    for path, _ in nwb_set["good"]:
        by_layout.setdefault(inspect_file(path), path)
    assert set(by_layout) == {"sweep_table", "icephys_table"}
    sizes = [{k: v.size for k, v in extract_cell(p)["vectors"].items()} for p in by_layout.values()]
    assert sizes[0] == sizes[1]


def test_compact_layout_and_ap_window(nwb_set):
    path = nwb_set["good"][0][0]
    compact = extract_cell(path, compact=True)["vectors"]
    assert {k: v.size for k, v in compact.items()} == {k: n * m for k, (n, m) in COMPACT_LAYOUT.items()}
    assert sum(v.size for v in compact.values()) == 498
    short = extract_cell(path, ap_window=0.002)["vectors"]["first_ap_v"]
    assert short.size == 3 * 100


def test_block_average():
    x = np.arange(12.0)
    np.testing.assert_allclose(block_average(x, 2, 3), [0.5, 2.5, 4.5, 6.5, 8.5, 10.5])
    with pytest.raises(ValueError):
        block_average(np.arange(5.0), 2, 2)


def test_missing_file_is_cell_failure(tmp_path):
    with pytest.raises(CellFailure, match="not found"):
        extract_cell(tmp_path / "missing.nwb")


def test_a_file_that_is_not_readable_hdf5_says_why(nwb_set, tmp_path, monkeypatch):
    """Empty, not HDF5, truncated, no permission: each says what to do (all were 'unreadable HDF5 file
    (truncated or corrupt download?)' with h5py's message)."""
    from ephys2tx.features.nwb import adapter

    (tmp_path / "empty.nwb").write_bytes(b"")
    with pytest.raises(CellFailure, match=r"^empty file \(0 bytes\): an interrupted download or copy; copy it again$"):
        inspect_file(tmp_path / "empty.nwb")
    (tmp_path / "notes.nwb").write_text("my notes on cell 3\n")
    with pytest.raises(CellFailure, match=r"^not an HDF5 file \(it begins with b'my notes'\): an NWB 2 file is an "
                                          r"HDF5 file; check that it is a recording exported as NWB 2"):
        inspect_file(tmp_path / "notes.nwb")
    with pytest.raises(CellFailure, match=r"^unreadable HDF5 file \(truncated or corrupt download\?\): .*truncated "
                                          r"file.*; download or copy it again$"):
        inspect_file(nwb_set["truncated"])

    def no_permission(*args, **kwargs):  # what a chmod 000 file gives a user other than root
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(adapter, "open", no_permission, raising=False)
    with pytest.raises(CellFailure, match=r"^no permission to read the file; make it readable \(chmod a\+r\)"):
        inspect_file(tmp_path / "notes.nwb")


def test_input_errors(tmp_path, nwb_set):
    good = nwb_set["good"][0][0]
    with pytest.raises(InputError, match="no .nwb or .abf files"):
        extract_features([tmp_path], tmp_path / "o.parquet")
    with pytest.raises(InputError, match="does not exist"):
        extract_features([tmp_path / "typo.nwb"], tmp_path / "o.parquet")
    with pytest.raises(InputError, match="ap_window"):
        extract_features([good], tmp_path / "o.parquet", ap_window=-1)
    with pytest.raises(InputError, match="workers"):
        extract_features([good], tmp_path / "o.parquet", workers=0)
    with pytest.raises(InputError, match="is a directory"):
        extract_features([good], tmp_path)
    precious = tmp_path / "notes.parquet"
    precious.write_text("not a feature table")
    with pytest.raises(InputError, match="refusing to overwrite"):
        extract_features([good], precious)
    assert precious.read_text() == "not a feature table"
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="--cache-dir .*is a file, not a folder"):
        extract_features([good], tmp_path / "o.parquet", cache_dir=tmp_path / "file")
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / good.name).write_bytes(good.read_bytes())
    with pytest.raises(InputError, match="unique"):
        extract_features([good, copy], tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists() and not (tmp_path / "o.parquet.cache").exists()
    with pytest.raises(InputError, match="not found"):
        load_feature_table(tmp_path / "missing.parquet")
    with pytest.raises(InputError, match="cannot read"):
        load_feature_table(precious)


def test_outputs_replaced_atomically(extracted):
    out_dir = extracted[0].features_path.parent
    assert not [p for p in out_dir.rglob("*.tmp")]


@pytest.fixture(scope="session")
def labelled(extracted, nwb_set, tmp_path_factory):
    """The extracted table as a PatchSeqDataset, labels from an ``id,subclass`` CSV."""
    csv = tmp_path_factory.mktemp("labels") / "labels.csv"
    labels = _labels(nwb_set)
    spelled = labels.map({"Pvalb": "PVALB", "Sst": "Sst interneuron"})  # other spellings normalise
    pd.DataFrame({"cell_id": spelled.index, "subclass": spelled.to_numpy()}).to_csv(csv, index=False)
    return as_dataset(extracted[0].features_path, labels=csv)


def test_as_dataset_from_labels_file(labelled, nwb_set):
    labels = _labels(nwb_set)
    assert labelled.n_cells == len(labels) and labelled.species == "mouse"
    pd.testing.assert_series_equal(labelled.labels.sort_index(), labels.sort_index(), check_names=False)
    assert list(labelled.families) == list(FAMILIES)
    assert list(labelled.features.columns) == [c for cols in labelled.families.values() for c in cols]
    assert "summary__ri" in labelled.metadata.columns and labelled.groups is None
    assert [step["step"] for step in labelled.qc_report][0].startswith("attach labels")
    assert len(labelled.checksums) == 2


def test_as_dataset_label_sources(extracted, nwb_set, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = extracted[0].features_path
    labels = _labels(nwb_set)
    some = labels.copy()
    some.iloc[0] = "Sncg"  # outside the four classes: held out
    ds = as_dataset(path, labels=some, species="human")
    assert ds.n_cells == len(labels) - 1 and ds.held_out.n_cells == 1
    assert set(ds.labels) <= set(CLASSES) and ds.species == "human"

    # labels in a column of the parquet file itself (metadata kept)
    table = pq.read_table(path)
    table = table.append_column("subclass", pa.array(labels.reindex(table.column("cell_id").to_pylist())))
    with_column = tmp_path / "with_labels.parquet"
    pq.write_table(table, with_column)
    from_column = as_dataset(with_column, label_column="subclass")
    features, _ = load_feature_table(path)
    pd.testing.assert_frame_equal(from_column.features, features)
    pd.testing.assert_series_equal(from_column.labels, labels.loc[features.index], check_names=False)
    assert "subclass" not in from_column.metadata

    unlabelled = as_dataset(path)
    assert unlabelled.n_cells == len(labels) and unlabelled.labels.isna().all()
    with pytest.raises(InputError, match="no cell id"):
        as_dataset(path, labels=pd.Series({"other": "Pvalb"}))
    with pytest.raises(InputError, match="label column"):
        as_dataset(path, label_column="nope")
    with pytest.raises(InputError, match="species"):
        as_dataset(path, species="rat")


def test_normalise_labels():
    raw = pd.Series(["pvalb", "SST", "Vip interneuron", "LAMP5/PAX6/Other", " Lamp5 ", "Sncg", None, ""])
    assert normalise_labels(raw).tolist()[:6] == ["Pvalb", "Sst", "Vip", "Lamp5", "Lamp5", "Sncg"]
    assert normalise_labels(raw).iloc[6:].isna().all()


def test_normalise_labels_reads_spellings_of_missing_as_missing():
    """'nan', 'N/A', 'None'... (text a table keeps when another program wrote it) were kept as
    subclass names: the run then said to rename cells of subclass 'nan' to a known subclass."""
    raw = pd.Series(["nan", "NaN", " N/A ", "None", "null", "NA", "-", "Meis2", "PVALB ", "sst"])
    out = normalise_labels(raw)
    assert out.iloc[:7].isna().all()
    assert out.iloc[7:].tolist() == ["Meis2", "Pvalb", "Sst"]


def test_read_feature_table_metadata(extracted):
    table = read_feature_table(extracted[0].features_path)
    assert list(table.families) == list(FAMILIES)
    assert table.settings == {"ap_window": 0.003, "compact": False}
    assert table.summary_columns and all(c.startswith("summary__") for c in table.summary_columns)


def test_forest_and_bilstm_train_on_extracted_table(labelled):
    """Acceptance: the models train on the extracted table (quick settings)."""
    import torch
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from ephys2tx.models.registry import make_model

    X, y = labelled.features, labelled.labels.to_numpy()
    columns = list(X.columns)
    forest = make_model("rf", labelled.families, columns, random_state=0, quick=True)
    pred = cross_val_predict(forest, X, y, cv=StratifiedKFold(4, shuffle=True, random_state=0))
    assert (pred == y).mean() >= 0.75  # held-out cells, two clearly different cell kinds

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bilstm = make_model("bilstm", labelled.families, columns, random_state=0, quick=True)
        bilstm.fit(X, y)
        proba = bilstm.predict_proba(X)
    finally:
        torch.set_num_threads(threads)
    assert proba.shape == (len(y), 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert (bilstm.predict(X) == y).mean() >= 0.75


def _one_per_layout(nwb_set):
    by_layout = {}
    for path, _ in nwb_set["good"]:
        by_layout.setdefault(inspect_file(path), path)
    return by_layout


def test_h5py_reader_matches_ipfx_pynwb_reader(nwb_set):
    from ephys2tx.features.nwb.adapter import close_data_set, open_data_set

    for layout, path in _one_per_layout(nwb_set).items():
        fast, _ = open_data_set(path, reader="h5py")
        slow, _ = open_data_set(path, reader="pynwb")
        assert type(fast._data).__name__ == "H5SweepData" and type(slow._data).__name__ != "H5SweepData"
        pd.testing.assert_frame_equal(fast.sweep_table, slow.sweep_table, check_dtype=False)
        for number in slow._data.sweep_numbers:
            a, b = fast.get_sweep_data(number), slow.get_sweep_data(number)
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{layout} sweep {number} {key}")
            assert fast._data.get_sweep_metadata(number) == slow._data.get_sweep_metadata(number)
        close_data_set(fast)
        a, b = extract_cell(path, reader="h5py"), extract_cell(path, reader="pynwb")
        np.testing.assert_equal(a["summary"], b["summary"])
        for name in FAMILIES:
            np.testing.assert_array_equal(a["vectors"][name], b["vectors"][name], err_msg=name)


def test_unsupported_file_falls_back_to_pynwb(nwb_set, monkeypatch):
    from ephys2tx.features.nwb import adapter

    def refuse(gid):
        raise adapter._NotFastReadable("extension series type")

    monkeypatch.setattr(adapter, "_series_info", refuse)
    data_set, _ = adapter.open_data_set(nwb_set["good"][0][0])
    assert type(data_set._data).__name__ == "HBGNWBData"
    with pytest.raises(ValueError, match="reader"):
        adapter.open_data_set(nwb_set["good"][0][0], reader="nope")


def test_summary_matches_full_as_dict_record(nwb_set):
    import ipfx.feature_record as fr
    import ipfx.script_utils as su

    from ephys2tx.features.nwb.adapter import default_ontology, open_data_set
    from ephys2tx.features.nwb.vectors import _summary

    ontology = default_ontology()
    data_set, _ = open_data_set(nwb_set["good"][1][0])
    numbers = {k: su.categorize_iclamp_sweeps(data_set, names) for k, names in
               [("lsq", ontology.long_square_names), ("ssq", ontology.short_square_names),
                ("ramp", ontology.ramp_names)]}
    lsq_sweeps, lsq_features, lsq_an, _, _ = su.preprocess_long_square_sweeps(data_set, numbers["lsq"])
    ssq_sweeps, ssq_features, ssq_an = su.preprocess_short_square_sweeps(data_set, numbers["ssq"])
    ramp_sweeps, ramp_features, ramp_an = su.preprocess_ramp_sweeps(data_set, numbers["ramp"])
    light = _summary(lsq_sweeps, lsq_features, lsq_an, ssq_features, ramp_features)

    def extra(sweeps):
        return [dict(sweep_number=s.sweep_number) for s in sweeps.sweeps]

    full = fr.build_cell_feature_record({  # the documented ipfx route: as_dict of every analysis
        "long_squares": lsq_an.as_dict(lsq_features, extra(lsq_sweeps)),
        "short_squares": ssq_an.as_dict(ssq_features, extra(ssq_sweeps)),
        "ramps": ramp_an.as_dict(ramp_features, extra(ramp_sweeps)),
    })
    from ephys2tx.features.nwb import SUMMARY_FEATURES

    # the fixed schema is every numeric key of ipfx's record (sweep numbers excluded) ...
    assert list(light) == list(SUMMARY_FEATURES) and len(SUMMARY_FEATURES) == 45
    assert set(full) - {"rheobase_sweep_num", "thumbnail_sweep_num"} == set(SUMMARY_FEATURES)
    # ... with ipfx's values, NaN where ipfx gives None
    assert any(full[key] is None for key in SUMMARY_FEATURES)
    for key, value in light.items():
        np.testing.assert_equal(value, np.nan if full[key] is None else float(full[key]), err_msg=key)


def test_memoised_ipfx_helpers_are_transparent():
    import scipy.signal
    from ipfx.stimulus import StimulusOntology

    from ephys2tx.features.nwb.adapter import _SignalWithCachedBessel, default_ontology

    proxy = _SignalWithCachedBessel(scipy.signal)
    for _ in range(2):
        for got, want in zip(proxy.bessel(4, 0.4, "low"), scipy.signal.bessel(4, 0.4, "low")):
            np.testing.assert_array_equal(got, want)
    got = proxy.bessel(4, 0.4, "low")[0]
    got[:] = 0  # callers may not corrupt the cache
    assert np.any(proxy.bessel(4, 0.4, "low")[0] != 0)
    assert proxy.filtfilt is scipy.signal.filtfilt
    ontology = default_ontology()
    plain = StimulusOntology([s.tag_sets for s in ontology.stimuli])
    for code in ("C1LSCOARSE150216", "C1SSCOARSE150112", "C1RP25PR1S141203"):
        for _ in range(2):
            assert ontology.stimulus_has_any_tags(code, ontology.long_square_names, tag_type="code") == \
                plain.stimulus_has_any_tags(code, plain.long_square_names, tag_type="code")


def test_fast_max_min_equal_builtins():
    from ephys2tx.features.nwb.adapter import _FAST_MAX, _FAST_MIN

    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    cases = [x, x.astype(np.float32), (x * 100).astype(np.int64), np.r_[np.nan, x], np.r_[x, np.nan], x[:1],
             [3.0, 1.0, 2.0], (4, 5)]
    for case in cases:
        for fast, builtin in ((_FAST_MAX, max), (_FAST_MIN, min)):
            got, want = fast(case), builtin(case)
            assert (got == want) or (np.isnan(got) and np.isnan(want)), (case, got, want)
    assert _FAST_MAX(1, 2, 3) == 3 and _FAST_MIN([], default=7) == 7
    with pytest.raises(ValueError):
        _FAST_MAX(np.array([]))


def test_ipfx_speed_ups_change_no_result(nwb_set, monkeypatch):
    """Extraction with the memoised/vectorised ipfx helpers equals plain ipfx, value for value."""
    import ipfx.stim_features as stf
    import ipfx.time_series_utils as tsu
    import scipy.signal
    from ipfx.stimulus import StimulusOntology

    from ephys2tx.features.nwb import vectors

    paths = [p for p, _ in nwb_set["good"][:1] + nwb_set["good"][-1:]]  # both layouts, both kinds
    fast = [extract_cell(p) for p in paths]
    monkeypatch.setattr(vectors, "install_ipfx_memoization", lambda: None)
    monkeypatch.delattr(stf, "max", raising=False)
    monkeypatch.delattr(stf, "min", raising=False)
    monkeypatch.setattr(tsu, "signal", scipy.signal)
    from ephys2tx.features.nwb.adapter import _ORIGINALS

    assert set(_ORIGINALS) == {"find_time_index", "has_fixed_dt", "flatnotnan"}
    for name, original in _ORIGINALS.items():
        monkeypatch.setattr(tsu, name, original)
    plain_ontology = StimulusOntology([s.tag_sets for s in vectors.default_ontology().stimuli])
    for path, a in zip(paths, fast):
        b = extract_cell(path, ontology=plain_ontology)
        np.testing.assert_equal(a["summary"], b["summary"])
        for name in FAMILIES:
            np.testing.assert_array_equal(a["vectors"][name], b["vectors"][name], err_msg=name)


def test_summary_can_be_switched_off(nwb_set, tmp_path):
    inputs = [p for p, _ in nwb_set["good"][:2]]
    with_summary = extract_features(inputs, tmp_path / "a.parquet")
    without = extract_features(inputs, tmp_path / "b.parquet", summary=False)
    assert without.n_computed == 2  # different cache key
    full, _ = load_feature_table(with_summary.features_path, include_summary=True)
    vectors_only, _ = load_feature_table(without.features_path, include_summary=True)
    assert not any(c.startswith("summary__") for c in vectors_only.columns)
    pd.testing.assert_frame_equal(vectors_only, full[vectors_only.columns])


def test_fast_time_series_helpers_equal_ipfx():
    """The replacements of find_time_index / has_fixed_dt / flatnotnan return ipfx's values, ties included."""
    import ipfx.time_series_utils as tsu

    from ephys2tx.features.nwb.adapter import (_ORIGINALS, _find_time_index, _flatnotnan, _has_fixed_dt,
                                               install_ipfx_memoization)

    install_ipfx_memoization()
    find, fixed, notnan = (_ORIGINALS[k] for k in ("find_time_index", "has_fixed_dt", "flatnotnan"))
    rng = np.random.default_rng(0)
    for rate in (50_000.0, 200_000.0, 10_000.0):
        t_full = np.arange(int(2.52 * rate)) / rate
        for t in (t_full, t_full[1000:-3], t_full[::2]):
            queries = np.r_[t[0], t[-1], t[[1, 2, 3, -2]], rng.uniform(t[0], t[-1], 300),
                            (t[10:300:7] + t[11:301:7]) / 2,  # exact midpoints: ties between two samples
                            np.round(rng.uniform(t[0], t[-1], 100), 3), 1.02, 2.02]
            for q in queries:
                if t[0] <= q <= t[-1]:
                    assert _find_time_index(t, q) == find(t, q), (rate, q)
            assert _has_fixed_dt(t) == fixed(t)
    odd = [np.r_[0.0, 1.0, 1.0, 2.0], np.r_[3.0, 2.0, 1.0], np.r_[0.0, np.nan, 2.0], np.linspace(0, 1, 7)]
    for t in odd:  # not strictly increasing or tiny: same answers (through ipfx's own function where needed)
        for q in np.linspace(np.nanmin(t), np.nanmax(t), 9):
            if t[0] <= q <= t[-1]:
                assert _find_time_index(t, q) == find(t, q)
        assert _has_fixed_dt(t) == fixed(t)
    jitter = np.arange(1000) / 1e4 + rng.normal(0, 1e-9, 1000)
    stepped = np.r_[np.arange(100) * 1e-4, 0.0101 + np.arange(100) * 2e-4]
    for t in (jitter, stepped, np.r_[0.0, np.inf], np.arange(10, dtype=np.float32)):
        assert _has_fixed_dt(t) == fixed(t)
    for a in (np.r_[1.0, np.nan, 3.0, np.nan], np.zeros(5), np.full(3, np.nan), np.ones((3, 2))):
        np.testing.assert_array_equal(_flatnotnan(a), notnan(a))
    with pytest.raises(AssertionError):
        _find_time_index(np.arange(5.0), 7.0)
    assert tsu.find_time_index is _find_time_index


def _voltage_clamp_only(path):
    """An NWB 2 file of three voltage-clamp sweeps (no current clamp at all)."""
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.icephys import VoltageClampSeries, VoltageClampStimulusSeries

    nwb = NWBFile(session_description="voltage clamp only", identifier="vc",
                  session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    electrode = nwb.create_icephys_electrode(name="e0", description="x",
                                             device=nwb.create_device(name="amp"))
    rng = np.random.default_rng(0)
    for i in range(3):
        stim = VoltageClampStimulusSeries(name=f"stim{i}", data=np.full(1000, -70.0 + 10 * i),
                                          rate=10000.0, electrode=electrode, gain=1.0,
                                          sweep_number=np.uint32(i), starting_time=0.0)
        resp = VoltageClampSeries(name=f"resp{i}", data=rng.random(1000), rate=10000.0,
                                  electrode=electrode, gain=1.0, sweep_number=np.uint32(i),
                                  starting_time=0.0)
        nwb.add_stimulus(stim)
        nwb.add_acquisition(resp)
        nwb.add_intracellular_recording(electrode=electrode, stimulus=stim, response=resp)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def test_a_voltage_clamp_only_file_is_named_and_ipfx_warnings_stay_quiet(nwb_set, tmp_path):
    """Its reason says voltage clamp (was 'No long square sweeps'); the good cell is extracted, and
    ipfx's per-sweep warnings ('Could not find stimulus: N/A') no longer reach the terminal."""
    import shutil
    import warnings

    folder = tmp_path / "mixed"
    folder.mkdir()
    good = shutil.copy(nwb_set["good"][0][0], folder)
    _voltage_clamp_only(folder / "vc.nwb")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = extract_features([folder], tmp_path / "f.parquet", workers=1)
    assert [str(w.message) for w in caught if "stimulus" in str(w.message)] == []
    features, _ = load_feature_table(result.features_path)
    assert list(features.index) == [Path(good).stem]
    failures = pd.read_csv(result.failures_path)
    assert failures["cell_id"].tolist() == ["vc"]
    assert failures["reason"].iloc[0] == ("no current-clamp sweep (3 sweep(s), all VoltageClamp): "
                                          "features are extracted from current-clamp recordings only")


def test_label_column_named_loosely_and_a_missing_one_says_which_option(extracted, nwb_set, tmp_path):
    """--label-column 'subclass name' finds 'Subclass Name' (as id columns are found); a labels table
    without a recognisable label column names its columns and the CLI option (was 'label_column')."""
    path = extracted[0].features_path
    labels = _labels(nwb_set).rename_axis("cell_id").rename("Subclass Name").reset_index()
    table = tmp_path / "labels.csv"
    labels.assign(notes="x").to_csv(table, index=False)
    ds = as_dataset(path, labels=table, label_column=" subclass name")
    assert ds.n_cells == len(labels)
    with pytest.raises(InputError, match=r"labels\.csv has no label column \(looked for subclass, .*; "
                                         r"its columns start with \['Subclass Name', 'notes'\]\); name "
                                         r"it with --label-column"):
        as_dataset(path, labels=table)


@pytest.mark.parametrize("ids, match", [
    (None, None),  # float ids: 637824915.0 is the cell 637824915 of the labels
    (["a", "b", "a"], r"has the cell id 'a' on 2 rows \(1 repeated row\(s\)\); keep one row per cell"),
    (["a", None, "c"], r"has an empty cell id on row 2"),
])
def test_feature_table_ids_read_like_user_table_ids(ids, match, tmp_path):
    """Float ids were 'N.0' (no label matched) and a repeated id was an internal IndexError."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ephys2tx.features.nwb.extract import META_FAMILIES

    frame = pd.DataFrame({"a_0": [1.0, 2.0, 3.0], "a_1": [0.5, 0.1, 0.2]},
                         index=pd.Index(ids or [637824915.0, 2.0, 3.0], name="cell_id"))
    table = pa.Table.from_pandas(frame)
    path = tmp_path / "f.parquet"
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, META_FAMILIES: json.dumps(
        {"fam_a": ["a_0", "a_1"]}).encode()}), path)
    if match is None:
        assert list(read_feature_table(path).frame.index) == ["637824915", "2", "3"]
    else:
        with pytest.raises(InputError, match=match):
            read_feature_table(path)


def _edit_copy(source, target, edit):
    """Copy an NWB file and apply ``edit(h5py.File)`` to the copy."""
    import shutil

    import h5py

    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        edit(f)
    return target


def _replace_data(f, series, fn):
    """Replace the data of ``series`` (e.g. 'acquisition/data_00000_AD0') by ``fn(data)``, keeping its attributes."""
    group = f[series]
    attrs = dict(group["data"].attrs)
    data = fn(group["data"][:])
    del group["data"]
    group.create_dataset("data", data=data)
    group["data"].attrs.update(attrs)


def _all_series(f, where, key, value):
    for name in f[where]:
        target = f[where][name]["starting_time" if key == "rate" else "data"]
        target.attrs[key] = value


RESP, STIM = "acquisition/data_00000_AD0", "stimulus/presentation/data_00000_DA0"


def _set(a, where, value):
    a = a.copy()
    a[where] = value
    return a


CONTENT_FAULTS = {
    "rate_zero": (lambda f: _all_series(f, "stimulus/presentation", "rate", 0.0),
                  r"sweep 0 \(C1LSCOARSE150216\): sampling rate 0 Hz is not a positive number"),
    "rate_negative": (lambda f: _all_series(f, "stimulus/presentation", "rate", -5e4), r"-50000 Hz is not a positive"),
    "rate_nan": (lambda f: _all_series(f, "stimulus/presentation", "rate", np.nan), r"nan Hz is not a positive"),
    "rate_1hz": (lambda f: _all_series(f, "stimulus/presentation", "rate", 1.0), r"1 Hz is outside the plausible"),
    "rate_1e9": (lambda f: _all_series(f, "stimulus/presentation", "rate", 1e9), r"1e\+09 Hz is outside the plausible"),
    "inf_sample": (lambda f: _replace_data(f, RESP, lambda a: _set(a, 20000, np.inf)),
                   r"sweep 0 .*response: 1 of its \d+ samples are infinite"),
    "nan_inside": (lambda f: _replace_data(f, RESP, lambda a: _set(a, slice(100, 200), np.nan)),
                   r"response: 100 of its \d+ samples are NaN \(first at sample 100\) inside the recording"),
    "nan_in_stimulus": (lambda f: _replace_data(f, STIM, lambda a: _set(a, 5, np.nan)), r"stimulus: 1 of its"),
    "constant_voltage": (lambda f: _replace_data(f, RESP, lambda a: np.full_like(a, -70.0)),
                         r"the voltage is exactly -70 mV on every sample"),
    "zero_length": (lambda f: (_replace_data(f, RESP, lambda a: a[:0]), _replace_data(f, STIM, lambda a: a[:0])),
                    r"sweep 0 .*no samples \(stimulus 0, response 0\)"),
    "lengths_differ": (lambda f: _replace_data(f, RESP, lambda a: a[:-1000]),
                       r"the stimulus has (\d+) samples but the response \d+"),
    "mv_declared_as_volts": (lambda f: _all_series(f, "acquisition", "conversion", 1.0),
                             r"the voltage reaches \d+(\.\d+)? mV \(beyond 1000 mV\): the unit or conversion"),
    "response_conversion_zero": (lambda f: _all_series(f, "acquisition", "conversion", 0.0),
                                 r"sweep 0 \(C1LSCOARSE150216\): the response series data_00000_AD0 has the "
                                 r"conversion factor 0, which turns every sample into 0; .*conversion factor to the "
                                 r"scale of the data \(e\.g\. 0\.001 for data in mV"),
    "stimulus_conversion_zero": (lambda f: _all_series(f, "stimulus/presentation", "conversion", 0.0),
                                 r"the stimulus series data_00000_DA0 has the conversion factor 0"),
    # s8 (extract hunt): each failed with an ipfx or numpy message ('Unit mV is not among the valid SI
    # units', 'could not convert string to float', UFuncTypeError, KeyError 'Unable to open object')
    # or a reason about something else ('none of the long square sweeps has both a stimulus ...')
    "response_conversion_nan": (lambda f: _all_series(f, "acquisition", "conversion", np.nan),
                                r"the response series data_00000_AD0 has the conversion factor nan, which turns "
                                r"every sample into NaN"),
    "response_unit_mV": (lambda f: _all_series(f, "acquisition", "unit", "mV"),
                         r"sweep 0 \(C1LSCOARSE150216\): the response series data_00000_AD0 has unit 'mV', not "
                         r"volts or amperes: NWB 2 stores data x conversion in SI units; set its unit attribute "
                         r"to 'volts' \(a voltage\) or 'amperes'"),
    "stimulus_unit_pA": (lambda f: _all_series(f, "stimulus/presentation", "unit", "pA"),
                         r"the stimulus series data_00000_DA0 has unit 'pA', not volts or amperes"),
    "rate_text": (lambda f: _all_series(f, "stimulus/presentation", "rate", "fast"),
                  r"sweep 0 \(C1LSCOARSE150216\): sampling rate 'fast' is not a number; check the series' "
                  r"starting_time rate"),
    "data_text": (lambda f: _replace_data(f, RESP, lambda a: np.array([b"abc"] * a.size)),
                  r"the response series data_00000_AD0 holds \|S3 values, not numbers"),
    "series_deleted": (lambda f: [f["acquisition"].__delitem__(k) for k in list(f["acquisition"])],
                       r"^the file's sweep table points at a series that is missing or damaged in the file "
                       r"\(.*\): the file is incomplete; export or download it again$"),
    "stimulus_pa_declared_as_amps": (lambda f: _all_series(f, "stimulus/presentation", "conversion", 1e-9),
                                     r"the stimulus reaches \d+ pA \(beyond 100000 pA\)"),
    # s9: a current-clamp stimulus declared in volts was read as a voltage-clamp sweep and failed in
    # 'feature vectors: UnboundLocalError'; a response declared in amperes was read as a voltage; a
    # deleted stimulus group gave h5py's 'could not read sweep_table NWB file: RuntimeError: ... B-tree'
    "stimulus_unit_volts": (lambda f: _all_series(f, "stimulus/presentation", "unit", "volts"),
                            r"sweep 0 \(C1LSCOARSE150216\): the stimulus series data_00000_DA0 is a "
                            r"CurrentClampStimulusSeries, which holds a current, but has unit 'volts': set its unit "
                            r"attribute to amperes"),
    "response_unit_amperes": (lambda f: _all_series(f, "acquisition", "unit", "amperes"),
                              r"the response series data_00000_AD0 is a CurrentClampSeries, which holds a voltage, "
                              r"but has unit 'amperes': set its unit attribute to volts"),
    "stimulus_deleted": (lambda f: [f["stimulus/presentation"].__delitem__(k) for k in list(f["stimulus/presentation"])],
                         r"^the file's sweep table points at a series that is missing or damaged in the file"),
    "repeated_sweep_numbers": (
        lambda f: f["general/intracellular_ephys/sweep_table/sweep_number"].__setitem__(
            slice(2, 4), f["general/intracellular_ephys/sweep_table/sweep_number"][10:12]),
        r"sweep number 5 has 2 response series in the file's sweep table"),
}


@pytest.mark.parametrize("case", sorted(CONTENT_FAULTS))
def test_odd_sweep_content_fails_the_cell_naming_the_sweep(case, nwb_set, tmp_path):
    """Readable files with impossible content: each was accepted with inf/NaN or wrong-unit features
    (inf, NaN inside, constant voltage, mV declared as volts, pA declared as A), or failed with an
    ipfx message pointing elsewhere ('not long enough' for a rate of 0, 'cannot convert float NaN',
    "'list' object has no attribute 'sweeps'", an IndexError, 'unexpected ValueError')."""
    edit, match = CONTENT_FAULTS[case]
    path = _edit_copy(nwb_set["good"][0][0], tmp_path / f"{case}.nwb", edit)
    with pytest.raises(CellFailure, match=match):
        extract_cell(path)


def test_content_faults_fail_their_cells_and_the_others_are_extracted(nwb_set, tmp_path):
    """Through the CLI: exit 0, the good cell in the table (all finite where the clean run is), the odd
    cells in the failures list with their sweep; nothing non-finite written."""
    from ephys2tx.cli import main

    good = nwb_set["good"][0][0]
    folder = tmp_path / "in"
    folder.mkdir()
    import shutil

    shutil.copy(good, folder / "good.nwb")
    for case in ("inf_sample", "nan_inside", "mv_declared_as_volts"):
        _edit_copy(good, folder / f"{case}.nwb", CONTENT_FAULTS[case][0])
    out = tmp_path / "f.parquet"
    assert main(["extract", str(folder), "-o", str(out), "--workers", "1"]) == 0
    table = pd.read_parquet(out)
    assert list(table.index) == ["good"]
    assert not np.isinf(table.to_numpy(dtype=float)).any()
    failures = pd.read_csv(str(out) + ".failures.csv").set_index("cell_id")["reason"]
    assert sorted(failures.index) == ["inf_sample", "mv_declared_as_volts", "nan_inside"]
    assert failures.str.startswith("sweep 0 (C1LSCOARSE150216): ").all()


def test_a_trailing_nan_block_is_an_aborted_sweep_and_is_accepted(nwb_set, tmp_path):
    """ipfx itself turns the trailing zeros of an aborted sweep into NaN: NaN at the end stays allowed."""
    good = nwb_set["good"][0][0]
    path = _edit_copy(good, tmp_path / "aborted.nwb",
                      lambda f: _replace_data(f, RESP, lambda a: _set(a, slice(a.size - 500, None), np.nan)))
    got, ref = extract_cell(path), extract_cell(good)
    for name in FAMILIES:
        np.testing.assert_array_equal(got["vectors"][name], ref["vectors"][name])
    # aborted after three samples of one value (the zeros after them become NaN): not a flat-line sweep
    short = _edit_copy(good, tmp_path / "aborted_early.nwb", lambda f: _replace_data(
        f, RESP, lambda a: np.where(np.arange(a.size) < 3, np.float32(-70.0), np.float32(0.0))))
    assert set(extract_cell(short)["vectors"]) == set(FAMILIES)


def test_the_sweep_checks_hold_for_the_pynwb_reader_too(nwb_set, tmp_path):
    """The check sits in the ipfx data set every reader is wrapped in (h5py, pynwb, ABF)."""
    path = _edit_copy(nwb_set["good"][0][0], tmp_path / "inf.nwb", CONTENT_FAULTS["inf_sample"][0])
    with pytest.raises(CellFailure, match=r"sweep 0 .*samples are infinite"):
        extract_cell(path, reader="pynwb")
