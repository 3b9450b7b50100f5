"""The synthetic NWB generator: simulated cells, both layouts, broken files."""

import h5py
import numpy as np
import pytest

from ephys2tx.testing import nwb_fixtures as nf


@pytest.fixture(scope="module")
def recordings():
    return nf.simulate_cells(["Pvalb", "Sst"], seed=3)


def test_simulated_cells_spike_and_differ(recordings):
    pv, sst = recordings
    for rec in recordings:
        codes = {code for code, _, _ in rec.sweeps}
        assert codes == {nf.LONG_SQUARE_CODE, nf.SHORT_SQUARE_CODE, nf.RAMP_CODE}
        assert all(v.dtype == np.float32 for _, _, v in rec.sweeps)

    def max_count(rec):
        return max(nf._count_spikes(v) for code, _, v in rec.sweeps if code == nf.LONG_SQUARE_CODE)

    assert max_count(pv) > 2 * max_count(sst)


@pytest.mark.parametrize("layout", nf.LAYOUTS)
def test_written_layouts(tmp_path, recordings, layout):
    path = nf.write_cell_nwb(tmp_path / f"c_{layout}.nwb", recordings[0], layout=layout)
    with h5py.File(path, "r") as f:
        assert f.attrs["nwb_version"].startswith("2")
        has_sweep_table = "general/intracellular_ephys/sweep_table" in f
        has_icephys = "general/intracellular_ephys/intracellular_recordings" in f
        series = [f[group][name]["data"] for group in ("acquisition", "stimulus/presentation") for name in f[group]]
        assert len(series) == 2 * len(recordings[0].sweeps)
        assert {s.dtype for s in series} == {np.dtype(np.float32)}  # float32 keeps the fixtures small
    assert has_sweep_table == (layout == "sweep_table")
    assert has_icephys == (layout == "icephys_table")
    assert path.stat().st_size < 4e6


def test_nwb1_and_truncated(tmp_path, recordings):
    old = nf.write_nwb1_file(tmp_path / "old.nwb")
    with h5py.File(old, "r") as f:
        assert f["nwb_version"][()].decode() == "NWB-1.0.5"
    full = nf.write_cell_nwb(tmp_path / "full.nwb", recordings[1])
    cut = nf.write_truncated_copy(full, tmp_path / "cut.nwb")
    with pytest.raises(OSError):
        h5py.File(cut, "r")
