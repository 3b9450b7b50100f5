"""Open NWB 2 icephys files as ipfx ``EphysDataSet`` objects, in either layout.

ipfx 2.1.2 finds sweeps only through the deprecated NWB ``SweepTable``
(``general/intracellular_ephys/sweep_table``), which Allen/DANDI files have.
Files written by current pynwb use the ``IntracellularRecordingsTable``
instead.  For those, :class:`IcephysTableNWBData` overrides the two places
where ipfx touches the sweep table (``sweep_numbers`` and ``_get_series``) and
leaves everything else (units, stimulus codes, ontology) to ipfx.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

SWEEP_TABLE = "sweep_table"
ICEPHYS_TABLE = "icephys_table"
_SWEEP_TABLE_PATH = "general/intracellular_ephys/sweep_table"
_ICEPHYS_TABLE_PATH = "general/intracellular_ephys/intracellular_recordings"


class CellFailure(Exception):
    """A cell that cannot be extracted; ``str(exc)`` is the reason recorded."""


def _decode(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def inspect_file(path: str | Path) -> str:
    """Check that ``path`` is a readable NWB 2 icephys file and return its layout.

    Raises
    ------
    CellFailure
        With a reason naming the problem (missing, unreadable/truncated, NWB 1,
        no sweep table and no intracellular recordings table).
    """
    path = Path(path)
    if not path.is_file():
        raise CellFailure(f"file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            if "nwb_version" in f:
                version = _decode(f["nwb_version"][()])
            else:
                version = _decode(f.attrs.get("nwb_version", ""))
            if not re.match(r"^(NWB-)?2", version):
                if re.match(r"^(NWB-)?1", version) or version.startswith("NWB-0"):
                    raise CellFailure(
                        f"NWB 1 file (nwb_version {version!r}); only NWB 2 is supported: convert it with "
                        "ipfx's x_to_nwb tools or download the NWB 2 version from DANDI")
                raise CellFailure(f"not an NWB 2 file (nwb_version attribute is {version!r})")
            if _SWEEP_TABLE_PATH in f:
                return SWEEP_TABLE
            if _ICEPHYS_TABLE_PATH in f:
                return ICEPHYS_TABLE
            raise CellFailure("NWB 2 file has neither a SweepTable nor an IntracellularRecordingsTable")
    except CellFailure:
        raise
    except OSError as exc:
        raise CellFailure(f"unreadable HDF5 file (truncated or corrupt download?): {exc}") from exc


def _icephys_data_class():
    from ipfx.dataset.hbg_nwb_data import HBGNWBData

    class IcephysTableNWBData(HBGNWBData):
        """ipfx data interface reading sweeps from the IntracellularRecordingsTable.

        A sweep is one row of the table; its number is the series'
        ``sweep_number`` when set, else the row index.  The stimulus code is
        the response's ``stimulus_description``, as in ipfx.
        """

        def __init__(self, nwb_file, ontology, load_into_memory=True, validate_stim=True):
            super().__init__(nwb_file=nwb_file, ontology=ontology,
                             load_into_memory=load_into_memory, validate_stim=validate_stim)
            table = self.nwb.intracellular_recordings
            if table is None:
                raise CellFailure("no IntracellularRecordingsTable in file")
            stimuli = table.get_category("stimuli")["stimulus"].data
            responses = table.get_category("responses")["response"].data
            self._sweeps = {}
            for row in range(len(table)):
                stim, resp = _series_of(stimuli[row]), _series_of(responses[row])
                number = getattr(resp, "sweep_number", None)
                number = row if number is None else int(number)
                if number in self._sweeps:
                    raise CellFailure(f"sweep number {number} appears twice in the IntracellularRecordingsTable")
                self._sweeps[number] = (stim, resp)

        @property
        def sweep_numbers(self):
            return np.array(sorted(self._sweeps))

        def _get_series(self, sweep_number, series_class):
            try:
                stim, resp = self._sweeps[int(sweep_number)]
            except KeyError:
                raise ValueError(f"No TimeSeries found for sweep number {sweep_number}.") from None
            matches = [s for s in (stim, resp) if s is not None and isinstance(s, series_class)]
            if len(matches) != 1:
                raise ValueError(f"Found {len(matches)} series of type {series_class} for sweep {sweep_number}.")
            return matches[0]

    return IcephysTableNWBData


def _series_of(reference):
    """TimeSeries of a TimeSeriesReference row (named tuple or plain tuple)."""
    if reference is None:
        return None
    series = getattr(reference, "timeseries", None)
    return series if series is not None else reference[2]


def open_data_set(path: str | Path, ontology=None):
    """Open an NWB 2 file as an ipfx ``EphysDataSet`` and return ``(data_set, layout)``.

    The Allen/DANDI layout goes through ``ipfx.dataset.create.create_ephys_data_set``
    unchanged; the IntracellularRecordingsTable layout through the adapter.
    """
    from ipfx.dataset.create import create_ephys_data_set
    from ipfx.dataset.ephys_data_set import EphysDataSet

    layout = inspect_file(path)
    ontology = ontology if ontology is not None else default_ontology()
    try:
        if layout == SWEEP_TABLE:
            return create_ephys_data_set(nwb_file=str(path), ontology=ontology), layout
        data = _icephys_data_class()(str(path), ontology)
        return EphysDataSet(data=data), layout
    except CellFailure:
        raise
    except Exception as exc:  # pynwb/ipfx raise many types on malformed files
        raise CellFailure(f"could not read {layout} NWB file: {type(exc).__name__}: {exc}") from exc


_ONTOLOGY = None


def default_ontology():
    """ipfx's default stimulus ontology, parsed once per process."""
    global _ONTOLOGY
    if _ONTOLOGY is None:
        import ipfx.json_utilities as ju
        from ipfx.stimulus import StimulusOntology

        _ONTOLOGY = StimulusOntology(ju.read(StimulusOntology.DEFAULT_STIMULUS_ONTOLOGY_FILE))
    return _ONTOLOGY
