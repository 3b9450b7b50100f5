"""Our vectors and summary features against ipfx's own `data_for_specimen_id` and cell record, value for value.

Quick: the small fixtures (fast-spiking, adapting, an adapting cell that never fires on its ramp).
Slow: Allen-sized cells (2.52 s sweeps, float64, 50 kHz and 200 kHz) in both NWB layouts.
"""

import contextlib

import numpy as np
import pytest

from ephys2tx.features.nwb import IPFX_FAMILIES, SUMMARY_FEATURES
from ephys2tx.features.nwb.adapter import CellFailure
from ephys2tx.features.nwb.vectors import extract_cell

pytestmark = pytest.mark.filterwarnings("ignore:.*(default|metadata).*")


@contextlib.contextmanager
def pristine_ipfx():
    """ipfx exactly as installed: undo ephys2tx's process-wide speed-ups (they are under test here) for the block."""
    import ipfx.stim_features as stf
    import ipfx.time_series_utils as tsu
    import scipy.signal

    from ephys2tx.features.nwb.adapter import _ORIGINALS

    saved = {name: getattr(tsu, name) for name in _ORIGINALS}
    saved_signal, saved_minmax = tsu.signal, (stf.__dict__.get("max"), stf.__dict__.get("min"))
    try:
        for name, original in _ORIGINALS.items():
            setattr(tsu, name, original)
        tsu.signal = scipy.signal
        for name in ("max", "min"):
            stf.__dict__.pop(name, None)
        yield
    finally:
        for name, fast in saved.items():
            setattr(tsu, name, fast)
        tsu.signal = saved_signal
        for name, value in zip(("max", "min"), saved_minmax):
            if value is not None:
                setattr(stf, name, value)


def ipfx_reference(path):
    """ipfx 2.1.2's feature vectors (its batch script's per-cell function) and its cell record, from the file."""
    with pristine_ipfx():
        return _ipfx_reference(path)


def _ipfx_reference(path):
    import ipfx.bin.run_feature_vector_extraction as rfv
    import ipfx.feature_record as fr
    import ipfx.json_utilities as ju
    import ipfx.script_utils as su
    from ipfx.dataset.create import create_ephys_data_set
    from ipfx.stimulus import StimulusOntology

    ontology = StimulusOntology(ju.read(StimulusOntology.DEFAULT_STIMULUS_ONTOLOGY_FILE))
    vectors = rfv.data_for_specimen_id(0, "none", "filesystem", ontology, ap_window_length=0.003,
                                       file_list={0: str(path)})
    if "error" in vectors:
        return vectors, None
    data_set = create_ephys_data_set(nwb_file=str(path), ontology=ontology)
    features = {}
    for kind, names, preprocess in (("long_squares", ontology.long_square_names, su.preprocess_long_square_sweeps),
                                    ("short_squares", ontology.short_square_names,
                                     su.preprocess_short_square_sweeps),
                                    ("ramps", ontology.ramp_names, su.preprocess_ramp_sweeps)):
        out = preprocess(data_set, su.categorize_iclamp_sweeps(data_set, names))
        sweeps, analysis_features, analysis = out[0], out[1], out[2]
        extra = [dict(sweep_number=s.sweep_number) for s in sweeps.sweeps]
        features[kind] = analysis.as_dict(analysis_features, extra)
    return vectors, fr.build_cell_feature_record(features)


def assert_matches_ipfx(path):
    ours = extract_cell(path)  # installs the speed-ups; the reference below runs without them
    ref_vectors, ref_record = ipfx_reference(path)
    assert "error" not in ref_vectors, ref_vectors.get("error")
    for name in IPFX_FAMILIES:
        a, b = ours["vectors"][name], np.asarray(ref_vectors[name], dtype=np.float64).ravel()
        assert a.shape == b.shape, name
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: NaN pattern")
        assert np.nanmax(np.abs(a - b), initial=0.0) == 0.0, name  # exactly ipfx's values
    assert set(ref_record) - {"rheobase_sweep_num", "thumbnail_sweep_num"} == set(SUMMARY_FEATURES)
    for name in SUMMARY_FEATURES:
        want = np.nan if ref_record[name] is None else float(ref_record[name])
        np.testing.assert_equal(ours["summary"][name], want, err_msg=name)
    return ours


def test_small_cells_match_ipfx_exactly(nwb_set):
    paths = [nwb_set["good"][0][0], nwb_set["good"][1][0]]  # fast-spiking, adapting (sweep-table layout)
    for path in paths:
        assert_matches_ipfx(path)


def test_adapting_cell_silent_on_ramp_is_accepted_as_ipfx_does(nwb_set):
    ours = assert_matches_ipfx(nwb_set["no_ramp_spike"])
    n = ours["vectors"]["first_ap_v"].size // 3
    assert (ours["vectors"]["first_ap_v"][2 * n:] == 0).all()  # ipfx's first_ap_vectors for no spiking sweep
    assert np.isnan(ours["summary"]["threshold_v_ramp"])  # None in ipfx's record
    assert np.isfinite(ours["summary"]["threshold_v_long_square"])


def test_cell_without_ramp_is_rejected_as_ipfx_does(nwb_set):
    ref, _ = ipfx_reference(nwb_set["no_ramp"])
    assert "error" in ref  # ipfx rejects it too
    with pytest.raises(CellFailure, match="No ramp sweeps available"):
        extract_cell(nwb_set["no_ramp"])


@pytest.fixture(scope="module", params=["allen50k", "allen200k"])
def allen_cells(request, tmp_path_factory):
    from ephys2tx.testing.nwb_fixtures import PROTOCOLS, allen_fixture_set

    root = tmp_path_factory.getbasetemp() / "allen_fixture_set"
    return PROTOCOLS[request.param], allen_fixture_set(root, PROTOCOLS[request.param])


@pytest.mark.slow
def test_allen_sized_cells_match_ipfx_exactly_in_both_layouts(allen_cells):
    import h5py

    protocol, cells = allen_cells
    for (path, kind), (twin, twin_kind) in zip(cells["sweep_table"], cells["icephys_table"]):
        assert kind == twin_kind
        with h5py.File(path, "r") as f:  # Allen-sized: float64 sweeps of >= 2.5 s at the protocol's rate
            data = f["acquisition"][sorted(f["acquisition"])[0]]["data"]
            assert data.dtype == np.float64 and data.shape[0] >= 2.5 * protocol.sampling_rate
            assert len(f["acquisition"]) >= 20
        ours = assert_matches_ipfx(path)
        theirs = extract_cell(twin)  # the IntracellularRecordingsTable layout (ipfx cannot read it) agrees
        for name in ours["vectors"]:
            np.testing.assert_array_equal(ours["vectors"][name], theirs["vectors"][name], err_msg=name)
        np.testing.assert_equal(ours["summary"], theirs["summary"])
        if kind == "adapting_no_ramp_spike":
            n = ours["vectors"]["first_ap_v"].size // 3
            assert (ours["vectors"]["first_ap_v"][2 * n:] == 0).all()
