"""Open NWB 2 icephys files as ipfx ``EphysDataSet`` objects, in either layout.

ipfx 2.1.2 finds sweeps only through the deprecated NWB ``SweepTable``
(``general/intracellular_ephys/sweep_table``), which Allen/DANDI files have.
Files written by current pynwb use the ``IntracellularRecordingsTable``
instead.  For those, :class:`IcephysTableNWBData` overrides the two places
where ipfx touches the sweep table (``sweep_numbers`` and ``_get_series``) and
leaves everything else (units, stimulus codes, ontology) to ipfx.

Both layouts are read by default through :class:`H5SweepData`, an ipfx
``EphysDataInterface`` that reads the few HDF5 objects ipfx needs with h5py
instead of building the whole pynwb object tree (on the generated test cells,
opening a file and reading all its sweeps took 0.3-0.5 s of CPU through
pynwb and under 0.1 s this way; see docs/nwb.md).  It returns the same arrays
and metadata as ipfx's ``HBGNWBData`` (same ``data[:] * conversion``
arithmetic, same unit handling and stimulus-code parsing; checked sweep by
sweep in ``tests/test_nwb_extract.py``).  Files it does not fully understand
(MIES files, non-core series types) go through the pynwb path.
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
        raise CellFailure(_unreadable_reason(path, exc)) from exc


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def file_head(path: Path, n: int) -> tuple[bytes, str | None]:
    """The first ``n`` bytes of ``path``, or ``b""`` and why the file cannot be read (or is empty)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(n)
        return head, None if head else "empty file (0 bytes): an interrupted download or copy; copy it again"
    except PermissionError:
        return b"", "no permission to read the file; make it readable (chmod a+r) and rerun"
    except OSError as err:
        return b"", f"cannot read the file ({err.strerror or err})"


def _unreadable_reason(path: Path, exc: OSError) -> str:
    """Why h5py could not open ``path``, said so that the user knows what to do."""
    head, problem = file_head(path, 8)
    if problem:
        return problem
    if head != _HDF5_SIGNATURE and b"HDF" not in head:
        return (f"not an HDF5 file (it begins with {head!r}): an NWB 2 file is an HDF5 file; check that it is "
                "a recording exported as NWB 2, not another file named .nwb")
    return f"unreadable HDF5 file (truncated or corrupt download?): {exc}; download or copy it again"


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


#: Plausible sampling rates (Hz) of a patch-clamp sweep: ipfx filters at 10 kHz (it needs more than
#: 20 kHz); Allen files are 50 or 200 kHz. Outside this range the rate attribute is wrong.
MIN_SAMPLING_RATE, MAX_SAMPLING_RATE = 1e3, 1e7
#: Largest plausible membrane potential (mV) and current-clamp command (pA) in magnitude: beyond
#: them the unit or conversion factor of the series is wrong (e.g. mV data declared as volts).
MAX_ABS_VOLTAGE_MV, MAX_ABS_CURRENT_PA = 1000.0, 1e5
_MIN_FLAT_SAMPLES = 1000


def _sweep_name(data_set, sweep_number) -> str:
    try:
        code = data_set.get_stimulus_code(sweep_number)
    except Exception:  # noqa: BLE001  (only for the message)
        code = None
    return f"sweep {sweep_number}" + (f" ({code})" if code else "")


def _bad_values(x: np.ndarray) -> str | None:
    """What is wrong with the non-finite values of ``x``, or None.

    A block of NaN at the end is an aborted sweep (ipfx itself turns trailing zeros of a
    response into NaN) and is allowed; NaN elsewhere and any infinity are not.
    """
    finite = np.isfinite(x)
    if finite.all():
        return None
    n_inf = int(np.isinf(x).sum())
    if n_inf:
        return f"{n_inf} of its {x.size} samples are infinite"
    nan = np.flatnonzero(~finite)
    last = np.flatnonzero(finite)
    if last.size == 0 or nan[0] > last[-1]:
        return None  # trailing NaN only: the sweep ended early
    return f"{nan.size} of its {x.size} samples are NaN (first at sample {nan[0]}) inside the recording"


def check_sweep_data(data_set, sweep_number, data: dict) -> dict:
    """Refuse sweep content that ipfx would turn into wrong or non-finite features.

    Called on every sweep ipfx reads (:func:`checked_data_set`), whatever the reader (NWB
    h5py or pynwb path, ABF). ``data`` is ipfx's sweep dict (stimulus in pA and response in
    mV for current clamp; trailing zeros of the response already NaN).

    Raises
    ------
    CellFailure
        Naming the sweep and the problem: a sampling rate that is not a positive number or
        outside [:data:`MIN_SAMPLING_RATE`, :data:`MAX_SAMPLING_RATE`], no samples, stimulus
        and response of different lengths, NaN inside the data (a trailing NaN block is an
        aborted sweep and allowed) or infinity, a voltage that is exactly constant, or values
        beyond :data:`MAX_ABS_VOLTAGE_MV` / :data:`MAX_ABS_CURRENT_PA` (wrong unit or conversion).
    """
    def fail(problem):
        raise CellFailure(f"{_sweep_name(data_set, sweep_number)}: {problem}")

    rate = data.get("sampling_rate")
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        fail(f"sampling rate {rate!r} is not a number; check the series' starting_time rate")
    if not (np.isfinite(rate) and rate > 0):
        fail(f"sampling rate {rate:g} Hz is not a positive number; check the series' starting_time rate")
    if not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE:
        fail(f"sampling rate {rate:g} Hz is outside the plausible {MIN_SAMPLING_RATE:g}-{MAX_SAMPLING_RATE:g} Hz "
             "of a patch-clamp recording; check the series' starting_time rate")
    stimulus = np.asarray(data["stimulus"], dtype=np.float64)
    response = np.asarray(data["response"], dtype=np.float64)
    if stimulus.size == 0 or response.size == 0:
        fail(f"no samples (stimulus {stimulus.size}, response {response.size}): an empty sweep")
    if stimulus.size != response.size:
        fail(f"the stimulus has {stimulus.size} samples but the response {response.size}: they must be "
             "recorded together, sample by sample")
    current_clamp = data.get("stimulus_unit") == "Amps"
    for what, x in (("stimulus", stimulus), ("response", response)):
        problem = _bad_values(x)
        if problem:
            fail(f"{what}: {problem}")
    if current_clamp:
        v = response[np.isfinite(response)]
        # (a sweep aborted after a few samples may repeat one quantised value: only long flat lines count)
        if v.size >= _MIN_FLAT_SAMPLES and v.min() == v.max():
            fail(f"the voltage is exactly {v[0] + 0.0:g} mV on every sample: no signal was recorded "
                 "(disconnected channel, placeholder sweep or a conversion factor of 0)")
        for what, x, limit, unit in (("voltage", v, MAX_ABS_VOLTAGE_MV, "mV"),
                                     ("stimulus", stimulus[np.isfinite(stimulus)], MAX_ABS_CURRENT_PA, "pA")):
            peak = float(np.abs(x).max()) if x.size else 0.0
            if peak > limit:
                fail(f"the {what} reaches {peak:g} {unit} (beyond {limit:g} {unit}): the unit or conversion "
                     "factor of the series is wrong")
    return data


_CHECKED_CLASS = None


def checked_data_set(data):
    """ipfx ``EphysDataSet`` over the data interface ``data`` whose sweeps pass :func:`check_sweep_data`."""
    global _CHECKED_CLASS
    if _CHECKED_CLASS is None:
        from ipfx.dataset.ephys_data_set import EphysDataSet

        class CheckedEphysDataSet(EphysDataSet):
            """``EphysDataSet`` refusing sweeps with impossible content (see :func:`check_sweep_data`)."""

            def get_sweep_data(self, sweep_number):
                return check_sweep_data(self, sweep_number, super().get_sweep_data(sweep_number))

        _CHECKED_CLASS = CheckedEphysDataSet
    return _CHECKED_CLASS(data=data)


class _NotFastReadable(Exception):
    """The file needs ipfx's pynwb-based reader (e.g. MIES file, extension series types)."""


_RESPONSE_TYPES = {"CurrentClampSeries": "CurrentClamp", "IZeroClampSeries": "CurrentClamp",
                   "VoltageClampSeries": "VoltageClamp"}
_STIMULUS_TYPES = {"CurrentClampStimulusSeries", "VoltageClampStimulusSeries"}
_PATCH_CLAMP_TYPES = set(_RESPONSE_TYPES) | _STIMULUS_TYPES | {"PatchClampSeries"}
#: The SI unit each typed series holds (ipfx scales both series by the stimulus unit alone: a
#: current-clamp stimulus declared in volts was read as a voltage-clamp sweep).
_SERIES_UNITS = {"CurrentClampSeries": "Volts", "IZeroClampSeries": "Volts", "CurrentClampStimulusSeries": "Amps",
                 "VoltageClampSeries": "Amps", "VoltageClampStimulusSeries": "Volts"}


def _attr_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Low-level h5py calls: the high-level ``obj.attrs[...]`` / ``group[name]``
# cost ~150-400 us each, and a cell has ~40 series with ~8 look-ups each.
def _read_attr(oid, name: str, default=None):
    """Attribute ``name`` of the HDF5 object ``oid`` as h5py's ``attrs`` returns it."""
    key = name.encode()
    if not h5py.h5a.exists(oid, key):
        return default
    attr = h5py.h5a.open(oid, key)
    out = np.zeros(attr.shape, dtype=attr.dtype)
    attr.read(out, mtype=h5py.h5t.py_create(attr.dtype))
    value = out[()]
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _open_dataset(gid, name: str):
    key = name.encode()
    return h5py.h5d.open(gid, key) if gid.links.exists(key) else None


def _scalar_or_none(gid, name: str):
    """Scalar dataset ``name`` of group ``gid`` as pynwb returns it (None when absent)."""
    dsid = _open_dataset(gid, name)
    if dsid is None:
        return None
    out = np.zeros(dsid.shape, dtype=dsid.dtype)
    dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
    return out.item() if out.size == 1 and out.ndim else out[()]


def _object_name(oid) -> str:
    """Last part of the HDF5 path of ``oid`` (an object no longer linked in the file has none)."""
    name = h5py.h5i.get_name(oid)
    return "(unlinked)" if not name else name.decode("utf-8", "replace").rsplit("/", 1)[-1]


def _series_info(gid) -> dict:
    """Metadata ipfx reads from one PatchClampSeries group (data is read later)."""
    kind = _attr_str(_read_attr(gid, "neurodata_type", ""))
    if kind not in _PATCH_CLAMP_TYPES:
        raise _NotFastReadable(f"series of type {kind!r}")
    data, starting_time = _open_dataset(gid, "data"), _open_dataset(gid, "starting_time")
    if data is None or starting_time is None:
        raise _NotFastReadable("series without data or starting_time (timestamps?)")
    unit = _read_attr(data, "unit")
    info = {
        "data": data,
        "name": _object_name(gid),
        "kind": kind,
        "conversion": float(_read_attr(data, "conversion", 1.0)),
        "unit": _attr_str(unit) if unit is not None else None,
        "rate": _read_attr(starting_time, "rate"),
        "sweep_number": _read_attr(gid, "sweep_number"),
    }
    if kind in _RESPONSE_TYPES:  # ipfx takes the sweep attributes from the response only
        info.update(stimulus_description=_attr_str(_read_attr(gid, "stimulus_description", "N/A")),
                    gain=_scalar_or_none(gid, "gain"), bias_current=_scalar_or_none(gid, "bias_current"),
                    bridge_balance=_scalar_or_none(gid, "bridge_balance"))
    return info


#: How to fix a unit or conversion factor: NWB 2 stores ``data * conversion`` in SI units.
_SI_HINT = ("set its unit attribute to 'volts' (a voltage) or 'amperes' (a current) and its conversion factor to "
            "the scale of the data (e.g. 0.001 for data in mV, 1e-12 for data in pA)")


def _check_series(data, sweep_number, what: str, series: dict) -> None:
    """Refuse a stimulus/response series whose unit, conversion or data type ipfx cannot use.

    Raises
    ------
    CellFailure
        Naming the sweep, the series and how to fix the attribute.
    """
    where = f"{_sweep_name(data, sweep_number)}: the {what} series {series['name']}"
    unit = series["unit"]
    if data.get_long_unit_name(unit) not in ("Volts", "Amps"):
        raise CellFailure(f"{where} has unit {unit!r}, not volts or amperes: NWB 2 stores data x conversion "
                          f"in SI units; {_SI_HINT}")
    expected = _SERIES_UNITS.get(series.get("kind"))
    if expected is not None and data.get_long_unit_name(unit) != expected:
        what_it_is = "a current" if expected == "Amps" else "a voltage"
        raise CellFailure(f"{where} is a {series['kind']}, which holds {what_it_is}, but has unit {unit!r}: "
                          f"set its unit attribute to {'amperes' if expected == 'Amps' else 'volts'} (and its "
                          "conversion factor to the scale of the data), or store the sweep under its real "
                          "series type")
    conversion = float(series["conversion"])
    if not np.isfinite(conversion) or conversion == 0.0:
        raise CellFailure(f"{where} has the conversion factor {conversion:g}, which turns every sample into "
                          f"{'NaN' if np.isnan(conversion) else 0}; {_SI_HINT}")
    dtype = series["data"].dtype
    if dtype.kind not in "fiu":
        raise CellFailure(f"{where} holds {dtype} values, not numbers: the recording's data are not a "
                          "signal; export the file again")


def _rate(data, sweep_number, rate) -> float:
    """The ``starting_time`` rate attribute as a float (its value is checked by :func:`check_sweep_data`)."""
    try:
        return float(rate)
    except (TypeError, ValueError):
        raise CellFailure(f"{_sweep_name(data, sweep_number)}: sampling rate {rate!r} is not a number; check "
                          "the series' starting_time rate") from None


def _data_interface_base():
    from ipfx.dataset.ephys_data_interface import EphysDataInterface

    return EphysDataInterface


def _h5_data_class():
    from ipfx.dataset.ephys_nwb_data import EphysNWBData, get_finite_or_none

    class H5SweepData(_data_interface_base()):
        """ipfx ``EphysDataInterface`` reading an NWB 2 icephys file directly with h5py.

        Mirrors ``ipfx.dataset.hbg_nwb_data.HBGNWBData`` (sweep table layout)
        and :class:`IcephysTableNWBData` (IntracellularRecordingsTable layout)
        without constructing pynwb objects.  Sweep data are read on demand.
        """

        get_long_unit_name = staticmethod(EphysNWBData.get_long_unit_name)
        validate_SI_unit = staticmethod(EphysNWBData.validate_SI_unit)

        def __init__(self, nwb_file, ontology, layout, validate_stim=True):
            super().__init__(ontology=ontology, validate_stim=validate_stim)
            self.nwb_file = str(nwb_file)
            # The whole file is read into memory in one go (HDF5 "core" driver,
            # like ipfx's load_into_memory): metadata look-ups then cost no I/O.
            self._file = h5py.File(self.nwb_file, "r", driver="core", backing_store=False)
            try:
                if _is_mies(self._file):
                    raise _NotFastReadable("MIES file (stimulus metadata in the lab notebook)")
                self._sweeps = (self._index_sweep_table() if layout == SWEEP_TABLE
                                else self._index_icephys_table())
            except BaseException:
                self._file.close()
                raise

        def close(self):
            self._file.close()

        def _info(self, ref, cache):
            if not ref:
                return None
            if ref not in cache:
                try:
                    gid = h5py.h5r.dereference(ref, self._file.id)
                    cache[ref] = _series_info(gid)
                # a deleted or damaged series (HDF5 raises RuntimeError for a freed object's B-tree)
                except (KeyError, ValueError, OSError, RuntimeError) as exc:
                    raise CellFailure(f"the file's sweep table points at a series that is missing or damaged in "
                                      f"the file ({exc}): the file is incomplete; export or download it again") from exc
            return cache[ref]

        def _index_sweep_table(self):
            table = self._file[_SWEEP_TABLE_PATH]
            numbers = table["sweep_number"][:]
            refs = table["series"][:]
            ends = table["series_index"][:]
            cache, sweeps = {}, {}
            start = 0
            for number, end in zip(numbers, ends):  # a row is a ragged list of series
                sweeps.setdefault(int(number), []).extend(self._info(r, cache) for r in refs[start:end])
                start = end
            return sweeps

        def _index_icephys_table(self):
            table = self._file[_ICEPHYS_TABLE_PATH]
            stimuli = table["stimuli/stimulus"][:]
            responses = table["responses/response"][:]
            cache, sweeps = {}, {}
            for row, (stim, resp) in enumerate(zip(stimuli, responses)):
                resp_info = self._info(resp["timeseries"], cache)
                number = None if resp_info is None else resp_info["sweep_number"]
                number = row if number is None else int(number)
                if number in sweeps:
                    raise CellFailure(f"sweep number {number} appears twice in the IntracellularRecordingsTable")
                sweeps[number] = [i for i in (self._info(stim["timeseries"], cache), resp_info) if i is not None]
            return sweeps

        @property
        def sweep_numbers(self):
            return np.array(sorted(self._sweeps))

        def _get_series(self, sweep_number, response: bool) -> dict:
            series = self._sweeps.get(int(sweep_number))
            if not series:
                raise ValueError(f"No TimeSeries found for sweep number {sweep_number}.")
            matches = [s for s in series
                       if (s["kind"] in _RESPONSE_TYPES if response else s["kind"] in _STIMULUS_TYPES)]
            what = "response" if response else "stimulus"
            if len(matches) > 1:  # ipfx cannot tell which one is the sweep's
                raise CellFailure(f"sweep number {sweep_number} has {len(matches)} {what} series in the file's "
                                  "sweep table: each sweep needs one stimulus and one response (repeated "
                                  "sweep numbers?)")
            if len(matches) != 1:
                raise ValueError(f"Found {len(matches)} {what} PatchClampSeries for sweep number {sweep_number}.")
            return matches[0]

        def get_sweep_data(self, sweep_number):
            stim = self._get_series(sweep_number, response=False)
            resp = self._get_series(sweep_number, response=True)
            for what, series in (("stimulus", stim), ("response", resp)):
                _check_series(self, sweep_number, what, series)
            stimulus = h5py.Dataset(stim["data"])[:] * float(stim["conversion"])
            stimulus_unit = self.get_long_unit_name(stim["unit"])
            response = h5py.Dataset(resp["data"])[:] * float(resp["conversion"])
            if stimulus_unit == "Volts":
                stimulus, response = stimulus * 1.0e3, response * 1.0e12
            elif stimulus_unit == "Amps":
                stimulus, response = stimulus * 1.0e12, response * 1.0e3
            return {"stimulus": stimulus, "response": response, "stimulus_unit": stimulus_unit,
                    "sampling_rate": _rate(self, sweep_number, stim["rate"])}

        def get_sweep_attrs(self, sweep_number):
            resp = self._get_series(sweep_number, response=True)
            attrs = {"gain": resp["gain"], "stimulus_description": resp["stimulus_description"],
                     "sweep_number": sweep_number, "clamp_mode": _RESPONSE_TYPES[resp["kind"]]}
            if attrs["clamp_mode"] == "CurrentClamp":
                attrs.update(bias_current=resp["bias_current"], bridge_balance=resp["bridge_balance"])
            return attrs

        def get_stimulus_code(self, sweep_number):
            code = self._get_series(sweep_number, response=True)["stimulus_description"]
            if code[-5:] == "_DA_0":
                code = code[:-5]
            return code.split("[")[0]

        def get_stimulus_code_ext(self, sweep_number):
            return self.get_stimulus_code(sweep_number)

        def get_stimulus_unit(self, sweep_number):
            return self.get_long_unit_name(self._get_series(sweep_number, response=False)["unit"])

        def get_clamp_mode(self, sweep_number):
            return self.get_sweep_attrs(sweep_number)["clamp_mode"]

        def get_full_recording_date(self):
            return EphysNWBData.get_full_recording_date(self)

        def get_sweep_metadata(self, sweep_number):
            attrs = self.get_sweep_attrs(sweep_number)
            record = {
                "sweep_number": sweep_number,
                "stimulus_units": self.get_stimulus_unit(sweep_number),
                "bridge_balance_mohm": get_finite_or_none(attrs, "bridge_balance"),
                "leak_pa": get_finite_or_none(attrs, "bias_current"),
                "stimulus_scale_factor": get_finite_or_none(attrs, "gain"),
                "stimulus_code": self.get_stimulus_code(sweep_number),
                "stimulus_code_ext": self.get_stimulus_code_ext(sweep_number),
                "clamp_mode": attrs["clamp_mode"],
            }
            if self.ontology:
                record["stimulus_name"] = self.get_stimulus_name(record["stimulus_code"])
            return record

    return H5SweepData


def _is_mies(h5file) -> bool:
    """Same test as ``ipfx.dataset.create.is_file_mies`` on an open file."""
    general = h5file.get("general")
    if general is None or "generated_by" not in general:
        return False
    info = {}
    for key, value in general["generated_by"][:]:
        info[_attr_str(key)] = _attr_str(value)
    return info.get("Package", "None") == "MIES"


READERS = ("h5py", "pynwb")


def open_data_set(path: str | Path, ontology=None, reader: str = "h5py"):
    """Open an NWB 2 file as an ipfx ``EphysDataSet`` and return ``(data_set, layout)``.

    Parameters
    ----------
    path : str or Path
        NWB 2 file.
    ontology : ipfx.stimulus.StimulusOntology, optional
        Defaults to ipfx's default ontology.
    reader : {"h5py", "pynwb"}
        ``"h5py"`` (default) reads with :class:`H5SweepData` and falls back to
        ``"pynwb"`` for files it does not handle; ``"pynwb"`` uses
        ``ipfx.dataset.create.create_ephys_data_set`` (sweep table layout) or
        :class:`IcephysTableNWBData`, i.e. ipfx's own reading path.

    Call :func:`close_data_set` when done (releases the HDF5 file handle).
    """
    from ipfx.dataset.create import create_ephys_data_set

    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    layout = inspect_file(path)
    ontology = ontology if ontology is not None else default_ontology()
    try:
        if reader == "h5py":
            try:
                return checked_data_set(_h5_data_class()(path, ontology, layout)), layout
            except _NotFastReadable:
                pass
        if layout == SWEEP_TABLE:
            return checked_data_set(create_ephys_data_set(nwb_file=str(path), ontology=ontology)._data), layout
        data = _icephys_data_class()(str(path), ontology)
        return checked_data_set(data), layout
    except CellFailure:
        raise
    except Exception as exc:  # pynwb/ipfx/h5py raise many types on malformed files
        raise CellFailure(f"could not read {layout} NWB file: {type(exc).__name__}: {exc}") from exc


def close_data_set(data_set) -> None:
    """Close the HDF5 file behind ``data_set`` if its reader keeps one open."""
    close = getattr(getattr(data_set, "_data", None), "close", None)
    if close is not None:
        close()


_ONTOLOGY = None


def default_ontology():
    """ipfx's default stimulus ontology, parsed once per process (look-ups memoised)."""
    global _ONTOLOGY
    if _ONTOLOGY is None:
        import ipfx.json_utilities as ju
        from ipfx.stimulus import StimulusOntology

        class CachedStimulusOntology(StimulusOntology):
            """``StimulusOntology`` whose ``find`` is memoised.

            ipfx calls ``find`` for every sweep in every ``filtered_sweep_table``
            call and scans all stimuli each time; the ontology never changes.
            """

            def find(self, tag, tag_type=None):
                key = (tag, tag_type)
                cache = self.__dict__.setdefault("_find_cache", {})
                if key not in cache:
                    cache[key] = super().find(tag, tag_type)
                return list(cache[key])

        _ONTOLOGY = CachedStimulusOntology(ju.read(StimulusOntology.DEFAULT_STIMULUS_ONTOLOGY_FILE))
    return _ONTOLOGY


class _SignalWithCachedBessel:
    """``scipy.signal`` with ``bessel`` memoised (everything else delegated).

    ``ipfx.time_series_utils.calculate_dvdt`` designs the same 4-pole Bessel
    filter for every sweep (several ms each); the design depends only on its
    arguments, so caching it changes no result.
    """

    def __init__(self, module):
        self._module = module
        self._bessel = {}

    def bessel(self, *args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if key not in self._bessel:
            self._bessel[key] = self._module.bessel(*args, **kwargs)
        return tuple(np.array(c, copy=True) for c in self._bessel[key])

    def __getattr__(self, name):
        return getattr(self._module, name)


def _array_aware(reduce_builtin, reduce_numpy):
    """``reduce_builtin`` (``max``/``min``) that takes the numpy fast path for NaN-free numeric arrays.

    On such a 1-d array the builtin walks the elements one Python comparison at
    a time and returns the first extreme element; numpy returns the same value
    in a single C loop. With NaNs the two differ (the builtin's result then
    depends on where the NaN is), so those and all other arguments go to the builtin.
    """
    def reduce(*args, **kwargs):
        if len(args) == 1 and not kwargs:
            x = args[0]
            if (isinstance(x, np.ndarray) and x.ndim == 1 and x.size and x.dtype.kind in "fiu"
                    and not (x.dtype.kind == "f" and np.isnan(x).any())):
                return reduce_numpy(x)
        return reduce_builtin(*args, **kwargs)

    reduce.__name__ = reduce_builtin.__name__
    return reduce


_FAST_MAX = _array_aware(max, np.max)
_FAST_MIN = _array_aware(min, np.min)


_ORIGINALS: dict = {}
_INCREASING: dict = {}  # id(owner array) -> (weakref to it, strictly increasing?)


def _strictly_increasing(t) -> bool:
    """Whether the 1-d float64 array ``t`` is strictly increasing, cached per owning array.

    ipfx passes each sweep's time array (``np.arange(n) / rate``, never
    modified in place) as views (``sweep.t``) hundreds of times; the check is
    done once per owning array and is valid for every positive-step view of it.
    """
    import weakref

    if not (isinstance(t, np.ndarray) and t.ndim == 1 and t.dtype == np.float64 and t.size >= 2):
        return False
    owner = t if t.base is None else t.base
    if not (isinstance(owner, np.ndarray) and owner.ndim == 1 and owner.dtype == np.float64
            and owner.strides[0] > 0 and t.strides[0] > 0 and t.strides[0] % owner.strides[0] == 0):
        return False
    key = id(owner)
    entry = _INCREASING.get(key)
    if entry is not None and entry[0]() is owner:
        return entry[1]
    flag = bool(np.all(np.diff(owner) > 0))  # False with NaNs
    _INCREASING[key] = (weakref.ref(owner, lambda _, key=key: _INCREASING.pop(key, None)), flag)
    return flag


def _find_time_index(t, t_0):
    """``ipfx.time_series_utils.find_time_index`` (``argmin(abs(t - t_0))``) by bisection where exact.

    For a strictly increasing float64 ``t``, ``t - t_0`` (rounded) is
    non-decreasing, so ``abs(t - t_0)`` falls then rises and its first minimum
    lies next to the insertion point of ``t_0``; the same ``argmin`` is taken
    on a 4-point window there. A tie at the window's left edge (a plateau that
    might start further left) and every other case go to ipfx's function.
    """
    assert t[0] <= t_0 <= t[-1], "Given time ({:f}) is outside of time range ({:f}, {:f})".format(t_0, t[0], t[-1])
    if _strictly_increasing(t):
        i = int(np.searchsorted(t, t_0))
        lo, hi = max(i - 2, 0), min(i + 2, t.size)
        window = abs(t[lo:hi] - t_0)
        k = int(np.argmin(window))
        if not (lo > 0 and window[0] == window[k]):
            return np.intp(lo + k)
    return _ORIGINALS["find_time_index"](t, t_0)


def _has_fixed_dt(t):
    """``ipfx.time_series_utils.has_fixed_dt`` (``np.allclose(dt, dt[0])``) in three passes instead of ten.

    For float64 ``dt`` and finite ``dt[0]``, ``isclose(x, y)`` is exactly
    ``abs(x - y) <= 1e-08 + 1e-05 * abs(y)`` (NaN and inf give False either
    way); other inputs go to ipfx's function.
    """
    dt = np.diff(t)
    if dt.dtype != np.float64 or dt.size == 0 or not np.isfinite(dt[0]):
        return _ORIGINALS["has_fixed_dt"](t)
    d0 = dt[0]
    return bool(np.all(np.abs(dt - d0) <= 1e-08 + 1e-05 * np.abs(d0)))


def _flatnotnan(a):
    """``ipfx.time_series_utils.flatnotnan`` without the (n, 1) index array of ``argwhere`` for 1-d input."""
    a = np.asarray(a)
    if a.ndim != 1:
        return _ORIGINALS["flatnotnan"](a)
    return np.flatnonzero(~np.isnan(a))


def install_ipfx_memoization() -> None:
    """Remove repeated or needlessly slow work inside ipfx, in this process (idempotent).

    * ``ipfx.time_series_utils``: the per-sweep Bessel filter design is memoised
      (:class:`_SignalWithCachedBessel`).
    * ``ipfx.stim_features``: ``get_stim_characteristics`` (called for every
      sweep of every analysis) takes the maximum and minimum of the stimulus
      with Python's builtin ``max``/``min``, element by element; module-level
      ``max``/``min`` that use numpy for NaN-free arrays (same values) shadow
      the builtins in that module only.
    * ``ipfx.time_series_utils``: ``find_time_index`` (called hundreds of times
      per cell, each a full pass over the sweep), ``has_fixed_dt`` (in every
      ``calculate_dvdt``) and ``flatnotnan`` are replaced by functions that
      return the same values with less work (:func:`_find_time_index`,
      :func:`_has_fixed_dt`, :func:`_flatnotnan`); ipfx's modules call them
      through the module, so every caller gets them.
    """
    import ipfx.stim_features as stf
    import ipfx.time_series_utils as tsu
    import scipy.signal

    if tsu.signal is scipy.signal:
        tsu.signal = _SignalWithCachedBessel(scipy.signal)
    stf.max, stf.min = _FAST_MAX, _FAST_MIN
    for name, fast in (("find_time_index", _find_time_index), ("has_fixed_dt", _has_fixed_dt),
                       ("flatnotnan", _flatnotnan)):
        current = getattr(tsu, name)
        if current is not fast:
            _ORIGINALS.setdefault(name, current)
            setattr(tsu, name, fast)
