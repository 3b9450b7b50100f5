import numpy as np
import pandas as pd
import pytest

from ephys2tx.features.nwb import COMPACT_LAYOUT, FAMILIES, extract_features, load_feature_table
from ephys2tx.features.nwb.adapter import CellFailure, inspect_file
from ephys2tx.features.nwb.vectors import block_average, extract_cell
from ephys2tx.testing.nwb_fixtures import standard_fixture_set


@pytest.fixture(scope="session")
def nwb_set(tmp_path_factory):
    return standard_fixture_set(tmp_path_factory.getbasetemp() / "nwb_fixture_set")


@pytest.fixture(scope="session")
def extracted(nwb_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("extract") / "features.parquet"
    inputs = [p for p, _ in nwb_set["good"]] + [nwb_set["no_ramp"], nwb_set["nwb1"], nwb_set["truncated"]]
    calls = []
    result = extract_features(inputs, out, workers=1, progress=lambda *a: calls.append(a))
    return result, calls


def test_all_families_present_and_ordered(extracted, nwb_set):
    result, calls = extracted
    features, families = load_feature_table(result.features_path)
    assert list(families) == list(FAMILIES)
    assert sorted(features.index) == sorted(p.stem for p, _ in nwb_set["good"])
    for name, cols in families.items():
        assert cols and all(c.startswith(name + "__") for c in cols)
        assert features[cols].notna().any(axis=1).all(), name
    assert sum(map(len, families.values())) == features.shape[1]
    assert calls[-1] == (len(nwb_set["good"]) + 3, 3, 0)
    full, _ = load_feature_table(result.features_path, include_summary=True)
    assert {"summary__ri", "summary__tau", "summary__vrest"} <= set(full.columns)


def test_fast_spiking_vs_adapting_direction(extracted, nwb_set):
    features, families = load_feature_table(extracted[0].features_path)
    labels = pd.Series({p.stem: lab for p, lab in nwb_set["good"]})
    width = features[families["spiking_width"]].mean(axis=1, skipna=True)
    rate = features[families["inst_freq"]].max(axis=1, skipna=True)
    mean_rate = features[families["inst_freq"]].mean(axis=1, skipna=True)
    pv, sst = labels.index[labels == "Pvalb"], labels.index[labels == "Sst"]
    assert width[pv].max() < width[sst].min()
    assert rate[pv].mean() > rate[sst].mean()
    assert mean_rate[pv].min() > mean_rate[sst].max()


def test_failures_recorded_with_reason(extracted):
    failures = pd.read_csv(extracted[0].failures_path).set_index("cell_id")
    assert set(failures.index) == {"no_ramp", "nwb1_cell", "truncated"}
    assert "ramp" in failures.loc["no_ramp", "reason"]
    assert "NWB 1" in failures.loc["nwb1_cell", "reason"]
    assert "truncated" in failures.loc["truncated", "reason"]


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


def test_input_errors(tmp_path):
    with pytest.raises(ValueError, match="no .nwb files"):
        extract_features([tmp_path], tmp_path / "o.parquet")
    with pytest.raises(ValueError, match="ap_window"):
        extract_features([tmp_path], tmp_path / "o.parquet", ap_window=-1)


def test_table_trains_random_forest(extracted, nwb_set):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import LeaveOneOut, cross_val_predict

    features, families = load_feature_table(extracted[0].features_path)
    labels = pd.Series({p.stem: lab for p, lab in nwb_set["good"]}).loc[features.index]
    X = features.fillna(features.mean()).fillna(0.0).to_numpy()
    pred = cross_val_predict(RandomForestClassifier(n_estimators=50, random_state=0), X, labels.to_numpy(),
                             cv=LeaveOneOut())
    assert (pred == labels.to_numpy()).mean() >= 0.75


@pytest.mark.slow
def test_table_trains_bilstm(extracted, nwb_set):
    bilstm = pytest.importorskip("ephys2tx.models.bilstm")
    features, families = load_feature_table(extracted[0].features_path)
    labels = pd.Series({p.stem: lab for p, lab in nwb_set["good"]}).loc[features.index]
    model = bilstm.AttentionBiLSTMClassifier(families=families, random_state=0)
    model.fit(features, labels.to_numpy())
    assert len(model.predict(features)) == len(features)


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
        assert a["summary"] == b["summary"]
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
    assert len(light) >= 20
    for key, value in light.items():
        np.testing.assert_equal(value, float(full[key]), err_msg=key)


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


def test_summary_can_be_switched_off(nwb_set, tmp_path):
    inputs = [p for p, _ in nwb_set["good"][:2]]
    with_summary = extract_features(inputs, tmp_path / "a.parquet")
    without = extract_features(inputs, tmp_path / "b.parquet", summary=False)
    assert without.n_computed == 2  # different cache key
    full, _ = load_feature_table(with_summary.features_path, include_summary=True)
    vectors_only, _ = load_feature_table(without.features_path, include_summary=True)
    assert not any(c.startswith("summary__") for c in vectors_only.columns)
    pd.testing.assert_frame_equal(vectors_only, full[vectors_only.columns])
