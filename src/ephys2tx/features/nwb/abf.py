"""Axon ABF (1 and 2) current-clamp recordings -> the same IPFX features as NWB cells.

An ABF file holds one protocol run: a series of sweeps and, in its header,
the protocol's epoch table, from which ``pyabf`` rebuilds each sweep's DAC
command waveform (``sweepC``).  That waveform gives every sweep's stimulus
amplitude and timing.  What the file cannot say comes from a small YAML
*protocol map* (:func:`load_protocol_map`): which protocol(s) are the
long-square series (and, if recorded, short squares and ramps), the liquid
junction potential, and optionally the voltage channel and how files group
into cells::

    name: my_rig
    long_square: [IC_steps, "IV_*"]       # protocol names (the .pro file stem), glob patterns allowed
    short_square: [IC_3ms]                # optional
    ramp: []                              # optional
    liquid_junction_potential_mv: 13.0    # subtracted from every recorded voltage; 0 = no correction
    channel: 0                            # optional: ADC channel of the membrane potential (default: the one in mV)
    cells: file                           # optional: file (one ABF = one cell) or folder (one folder = one cell)
    holding_current: subtract             # optional: subtract (default) or include the DAC holding level

The sweeps are handed to ipfx exactly as NWB sweeps are (an ipfx
``EphysDataInterface``), the long-square, short-square and ramp analyses are
ipfx's, and the vectors and summary features come from the same functions as
for NWB cells (:func:`ephys2tx.features.nwb.vectors.feature_vectors`).  The
one difference: ipfx's NWB path assumes every sweep begins with a test pulse
(it skips the first two changes of the stimulus); ABF protocols often have
none, so the stimulus window is found with ipfx's own
``get_stim_characteristics`` told whether this sweep has a test pulse.
Families that need a protocol the cell lacks (ramp, short square) are NaN
and listed in the cell's notes; the rest goes on.

A holding current on the DAC (Clampex's holding level, e.g. -30 pA to keep a
cell near -70 mV) is part of ``sweepC``, while ipfx reads the stimulus
amplitude as the absolute command level.  The Allen pipeline keeps a bias
current out of the stimulus (MIES stores it as the sweep's ``bias_current``,
ipfx's ``leak_pa``), so its amplitudes are steps relative to the baseline.
``holding_current: subtract`` (the default) removes each sweep's holding level
(the command before the first epoch) from the command so the amplitudes mean
the same; ``include`` keeps the absolute command.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np

from ephys2tx.errors import InputError, short_repr as _show
from ephys2tx.io import yaml_number

from .adapter import CellFailure, checked_data_set, default_ontology, file_head, install_ipfx_memoization

__all__ = ["ROLES", "check_protocol_names", "load_protocol_map", "validate_protocol_map", "extract_abf_cell", "abf_cell_files",
           "is_abf"]

#: Stimulus roles a protocol can play, and an ipfx ontology code for each.
ROLES = {"long_square": "C1LSCOARSE150216", "short_square": "C1SSCOARSE150112", "ramp": "C1RP25PR1S141203"}
_KEYS = {"name", "description", "long_square", "short_square", "ramp", "liquid_junction_potential_mv",
         "channel", "cells", "holding_current"}
_CELL_MODES = ("file", "folder")
_HOLDING_MODES = ("subtract", "include")
#: Accepted liquid junction potentials (mV): the potential itself, positive for the usual
#: K-gluconate / KMeSO4 / KCl pipettes; a larger negative value is taken for a flipped sign.
_MIN_LJP_MV, _MAX_LJP_MV = -30.0, 30.0
#: An ABF file has at most 16 ADC channels.
_MAX_CHANNELS = 16


def is_abf(path: Path) -> bool:
    """True for an ``.abf`` file name (any case)."""
    return path.suffix.lower() == ".abf"


def validate_protocol_map(raw, where: str = "protocol map") -> dict:
    """Check a parsed protocol map and return it normalised (a JSON-serialisable dict).

    Raises
    ------
    InputError
        One line naming the key and how to fix it.
    """
    hint = "see docs/nwb.md (Axon ABF files)"
    if not isinstance(raw, dict):
        raise InputError(f"{where} must be a YAML mapping with at least long_square and "
                         f"liquid_junction_potential_mv; {hint}")
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        raise InputError(f"{where} has unknown key(s) {unknown}; known: {sorted(_KEYS)}")
    for key in ("name", "description"):
        if key in raw and not isinstance(raw[key], str):
            raise InputError(f"{where}: {key} must be text, got {_show(raw[key])}; quote it")
    out = {"name": raw.get("name", Path(where).stem)}
    for role in ROLES:
        value = raw.get(role, [])
        if value is None:
            value = []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise InputError(f"{where}: {role} must be a protocol name or a list of protocol names (strings), "
                             f"got {_show(value)}; quote names that look like numbers")
        out[role] = [v.strip() for v in value]
    if not out["long_square"]:
        raise InputError(f"{where}: long_square is required: the protocol name(s) of the long-square "
                         f"(current step) series, as in the .pro file name; {hint}")
    seen = {}
    for role in ROLES:
        for name in out[role]:
            if name.lower() in seen and seen[name.lower()] != role:
                raise InputError(f"{where}: protocol {name!r} is listed as both {seen[name.lower()]} and {role}")
            seen[name.lower()] = role
    if "liquid_junction_potential_mv" not in raw:
        raise InputError(f"{where}: liquid_junction_potential_mv is required (in mV; it is subtracted from "
                         "every recorded voltage; give 0 for no correction)")
    ljp = yaml_number(raw["liquid_junction_potential_mv"])  # a quoted number ('13') is that number
    if ljp is None or not _MIN_LJP_MV <= ljp <= _MAX_LJP_MV:  # NaN and inf fail the range too
        raise InputError(f"{where}: liquid_junction_potential_mv must be a number of mV between "
                         f"{_MIN_LJP_MV:g} and {_MAX_LJP_MV:g}, got {_show(raw['liquid_junction_potential_mv'])}: it is the junction "
                         "potential itself (about +10 to +16 mV for K-gluconate pipettes, a few mV for KCl), "
                         "which is subtracted from every recorded voltage; a negative value usually has "
                         "the sign flipped; give 0 for no correction")
    out["liquid_junction_potential_mv"] = ljp
    channel = raw.get("channel")
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int)
                                or not 0 <= channel < _MAX_CHANNELS):
        raise InputError(f"{where}: channel must be an ADC channel number (0, 1, ... {_MAX_CHANNELS - 1}), got {_show(channel)}")
    out["channel"] = channel
    cells = raw.get("cells", "file")
    if cells not in _CELL_MODES:
        raise InputError(f"{where}: cells must be 'file' (each ABF file is one cell) or 'folder' (the ABF "
                         f"files of one folder are one cell), got {_show(cells)}")
    out["cells"] = cells
    holding = raw.get("holding_current", "subtract")
    if holding not in _HOLDING_MODES:
        raise InputError(f"{where}: holding_current must be 'subtract' (default: stimulus amplitudes relative to "
                         f"the holding level, as in the Allen/ipfx features) or 'include' (the absolute command), "
                         f"got {_show(holding)}")
    out["holding_current"] = holding
    return out


def load_protocol_map(path: str | Path) -> dict:
    """Read and validate a YAML protocol map (safe YAML: plain data only, no tags that build objects).

    The file is read by :func:`ephys2tx.io.read_yaml_file`, the reader of the
    column maps too: a repeated key or an anchor/alias is refused.

    Raises
    ------
    InputError
        Missing or unreadable file, not UTF-8, not YAML, or an invalid map.
    """
    from ephys2tx.io import read_yaml_file

    raw = read_yaml_file(path, kind="protocol map", hint="write one as in docs/nwb.md (Axon ABF files)")
    return validate_protocol_map(raw, where=f"protocol map {path}")


def check_protocol_names(files, protocol_map: dict, where: str = "protocol map") -> None:
    """Refuse a protocol map whose long_square names match the protocol of none of ``files``, or
    whose patterns give one protocol two roles.

    Reads only the ABF headers. Files that cannot be read are left to the
    extraction, which reports them one by one.

    Raises
    ------
    InputError
        Saying which protocols the files have, so the map can be fixed.
    """
    import collections

    import pyabf

    seen = collections.Counter()
    for f in files:
        if _header_problem(Path(f)):
            continue  # reported per cell
        try:
            seen[str(pyabf.ABF(str(f), loadData=False).protocol)] += 1
        except Exception:  # noqa: BLE001  (pyabf raises many types; reported per cell)
            continue
    for name in seen:
        roles = _roles_of(name, protocol_map)
        if len(roles) > 1:
            raise InputError(f"{where}: the protocol {name!r} of {seen[name]} ABF file(s) matches the patterns of "
                             f"both {roles[0]} {protocol_map[roles[0]]} and {roles[1]} {protocol_map[roles[1]]}; "
                             "write its name out under the right one (a name written out wins over a pattern)")
    if not seen or any(_roles_of(name, protocol_map) == ["long_square"] for name in seen):
        return
    present = ", ".join(f"{name!r} ({n} file{'s' if n > 1 else ''})" for name, n in seen.most_common(8))
    more = f" and {len(seen) - 8} more" if len(seen) > 8 else ""
    raise InputError(f"{where}: long_square {protocol_map['long_square']} matches the protocol of none of "
                     f"the {sum(seen.values())} readable ABF file(s); their protocols are {present}{more}: "
                     "put the long-square (current step) protocol's name under long_square (glob "
                     "patterns such as 'IV_*' allowed, case ignored)")


def abf_cell_files(path: Path) -> list[Path]:
    """The ABF files of a cell: the file itself, or the ``.abf`` files directly in a folder (sorted)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if is_abf(p) and p.is_file())
    return [path]


def _roles_of(protocol: str, protocol_map: dict) -> list[str]:
    """The roles that claim ``protocol`` (case ignored): those that list its name, else those
    with a glob pattern matching it.

    A name written out wins over a pattern (``long_square: "IC_*"`` with ``ramp: IC_ramp``
    puts IC_ramp under ramp), and a name is compared as written before as a pattern, so a
    protocol named ``IV [1 s]`` is found by that name although ``[...]`` is a glob set.
    More than one role means the map is ambiguous for this protocol.
    """
    name = protocol.strip().lower()
    exact = [role for role in ROLES if any(name == p.lower() for p in protocol_map[role])]
    if exact:
        return exact
    return [role for role in ROLES if any(fnmatch.fnmatchcase(name, p.lower()) for p in protocol_map[role])]


def _role_of(protocol: str, protocol_map: dict) -> str | None:
    """The one role of ``protocol`` (see :func:`_roles_of`), None if no role claims it.

    Raises
    ------
    CellFailure
        Patterns of two roles match the protocol.
    """
    roles = _roles_of(protocol, protocol_map)
    if len(roles) > 1:
        raise CellFailure(f"protocol {protocol!r} matches the patterns of both {roles[0]} and {roles[1]} in the "
                          "protocol map; write its name out under the right one")
    return roles[0] if roles else None


def _open_abf(path: Path, load_data: bool = True):
    import pyabf

    problem = _header_problem(path)
    if problem:
        raise CellFailure(f"cannot read ABF file {path.name}: {problem}")
    try:
        return pyabf.ABF(str(path), loadData=load_data)
    except Exception as exc:  # pyabf raises many types on broken files
        raise CellFailure(f"cannot read ABF file {path.name}: {_unreadable_abf(path, exc)}") from exc


_BLOCK = 512
#: ABF 2 header: 18 section descriptors (block index, entry size, entry count) from byte 76; pyabf
#: reads these (protocol, ADC, DAC, epoch, epoch per DAC, user list, strings, data, tags, synch array).
_ABF2_SECTIONS, _ABF2_SECTION_AT, _ABF2_DATA_SECTION = 18, 76, 10
_ABF2_READ = (0, 1, 2, 3, 5, 6, 9, 10, 11, 15)


def _header_problem(path: Path) -> str | None:
    """What is impossible in the header of the ABF file ``path``, or None.

    pyabf sizes its lists and arrays by the header's counts (sweeps, samples, tags, epochs),
    so a corrupt header (e.g. 335 million sweeps) makes it take all the memory of the
    machine before anything can fail. Every count must fit in the file: the data, and each
    section the header points to, lie inside the file's bytes.
    """
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(_ABF2_SECTION_AT + 16 * _ABF2_SECTIONS)
    except OSError:
        return None  # reported by pyabf's own error (see _unreadable_abf)
    corrupt = "the header is corrupt ({}); copy the file again from the rig, or check that it opens in Clampfit"
    if head[:4] == b"ABF " and len(head) >= 142:
        acq_length, episodes, data_block = (struct.unpack_from("<i", head, k)[0] for k in (10, 16, 40))
        tag_block, n_tags, synch_block, n_synch = (struct.unpack_from("<i", head, k)[0] for k in (44, 48, 92, 96))
        point = 4 if struct.unpack_from("<h", head, 100)[0] == 1 else 2
        if min(acq_length, episodes, data_block, tag_block, n_tags, synch_block, n_synch) < 0:
            return corrupt.format("a negative count or position")
        if episodes > max(acq_length, 1):
            return corrupt.format(f"{episodes} sweeps for {acq_length} samples")
        for what, block, n, width in (("data", data_block, acq_length, point), ("tags", tag_block, n_tags, 64),
                                      ("synch array", synch_block, n_synch, 8)):
            if n and block * _BLOCK + n * width > size:
                return _beyond_the_end(what, block * _BLOCK + n * width, size)
        return None
    if head[:4] == b"ABF2" and len(head) >= _ABF2_SECTION_AT + 16 * _ABF2_SECTIONS:
        episodes = struct.unpack_from("<I", head, 12)[0]
        for k in _ABF2_READ:
            block, width, n = struct.unpack_from("<IIi", head, _ABF2_SECTION_AT + 16 * k)
            if n < 0:
                return corrupt.format("a negative section size")
            if n and block * _BLOCK + width * n > size:
                return _beyond_the_end("data" if k == _ABF2_DATA_SECTION else f"section {k}", block * _BLOCK + width * n,
                                       size)
            if k == _ABF2_DATA_SECTION and episodes > max(n, 1):
                return corrupt.format(f"{episodes} sweeps for {n} samples")
    return None


def _beyond_the_end(what: str, end: int, size: int) -> str:
    return (f"the header places the {what} up to byte {end}, but the file has {size} bytes: a truncated copy "
            "or a corrupt header; copy the file again from the rig, or check that it opens in Clampfit")


def _unreadable_abf(path: Path, exc: Exception) -> str:
    """Why pyabf could not read ``path``, said so that the user knows what to do."""
    head, problem = file_head(path, 4)
    if problem:
        return problem
    if head not in (b"ABF ", b"ABF2"):
        return (f"not an Axon ABF file (it begins with {head!r}, not 'ABF ' or 'ABF2'); check that it is a "
                "Clampex recording, not another file named .abf")
    return (f"truncated or corrupt ABF file ({type(exc).__name__}: {exc}); copy it again from the rig, or "
            "check that it opens in Clampfit")


_VOLTAGE_UNITS = ("mV", "V")


def _voltage_channel(abf, channel: int | None, name: str) -> int:
    """The ADC channel of the membrane potential: ``channel`` from the protocol map, else the one
    channel in mV (or V).

    Raises
    ------
    CellFailure
        The asked channel is missing or not a voltage; no channel or several
        channels are in mV and the map does not choose one.
    """
    units = [str(u).strip() for u in abf.adcUnits]
    names = [str(n).strip() for n in getattr(abf, "adcNames", [])] + [""] * len(units)
    listed = ", ".join(f"{k} ({names[k] or 'IN ' + str(k)}, {unit or 'no unit'})" for k, unit in enumerate(units))
    if channel is not None:
        if channel >= len(units):
            raise CellFailure(f"{name}: channel {channel} asked by the protocol map, but the file has "
                              f"{len(units)} ADC channel(s): {listed}; set channel to the one in mV")
        if units[channel] not in _VOLTAGE_UNITS:
            raise CellFailure(f"{name}: ADC channel {channel} is in {units[channel]!r}, not mV: not a current-clamp "
                              f"voltage recording (channels: {listed}); set channel in the protocol map to the "
                              "membrane potential's channel")
        return channel
    voltage = [k for k, unit in enumerate(units) if unit in _VOLTAGE_UNITS]
    if len(voltage) > 1:
        raise CellFailure(f"{name}: {len(voltage)} ADC channels are in mV ({listed}): cannot tell which one is the "
                          f"membrane potential; add 'channel: {voltage[0]}' (or the right number) to the "
                          "protocol map (docs/nwb.md, Axon ABF files)")
    if not voltage:
        raise CellFailure(f"{name}: no ADC channel in mV (channels: {listed}): not a current-clamp recording "
                          "(voltage clamp?); record the membrane potential in current clamp")
    return voltage[0]


_EPISODIC = 5
_OPERATION_MODES = {1: "event-driven (variable length)", 2: "oscilloscope (loss-free)", 3: "gap-free",
                    4: "oscilloscope (high-speed)"}


def _waveform_dacs(abf) -> list[int]:
    """DACs whose waveform is enabled and comes from the epoch table or a stimulus file (pyabf's header fields)."""
    try:
        header = abf._headerV1 if int(abf.abfVersion["major"]) == 1 else abf._dacSection
        pairs = list(zip(header.nWaveformEnable, header.nWaveformSource))
    except (AttributeError, KeyError, TypeError):  # a layout pyabf did not fill: keep the channel's DAC
        return []
    return [d for d, (enabled, source) in enumerate(pairs) if enabled and source in (1, 2)]


def _waveform_text(stimulus) -> str:
    """pyabf's one-line note on a DAC waveform (its multi-line epoch table printout is summarised)."""
    text = str(getattr(stimulus, "text", "") or "").strip()
    if not text:
        return "no epoch table"
    return text if "\n" not in text else "its epoch table has no step or ramp epoch"


def _command_dac(abf, channel: int, name: str) -> int:
    """The DAC whose command is the stimulus of ADC ``channel``.

    The DAC of the same index when it has a waveform (one amplifier channel per
    ADC/DAC pair), else the only DAC with one: a MultiClamp channel recorded as
    current on IN 0 and voltage on IN 1 is stimulated by DAC 0.
    """
    n = len(abf.dacUnits)
    if n == 0:
        return 0
    own = min(channel, n - 1)
    enabled = [d for d in _waveform_dacs(abf) if d < n]
    if not enabled or own in enabled:
        return own
    if len(enabled) > 1:
        raise CellFailure(f"{name}: ADC channel {channel} has no DAC of its own with a waveform, and DACs "
                          f"{enabled} all have one: cannot tell which one stimulated the cell")
    return enabled[0]


def _recorded_sweeps(abf) -> int | None:
    """The header's sweep count (``lActualEpisodes``), None if pyabf did not read one."""
    header = getattr(abf, "_headerV1" if int(abf.abfVersion["major"]) == 1 else "_headerV2", None)
    count = getattr(header, "lActualEpisodes", None)
    return int(count) if isinstance(count, (int, np.integer)) else None


_CURRENT_SCALE = {"pA": 1.0, "nA": 1e3, "uA": 1e6, "µA": 1e6, "A": 1e12}


class _AbfRun:
    """Sweeps of one ABF file in one role, as arrays (pA, mV)."""

    def __init__(self, path: Path, role: str, protocol_map: dict):
        abf = _open_abf(path)
        self.path, self.role = path, role
        self.version = int(abf.abfVersion["major"])
        mode = int(getattr(abf, "nOperationMode", _EPISODIC))
        if mode != _EPISODIC:
            raise CellFailure(f"{path.name}: {_OPERATION_MODES.get(mode, f'operation mode {mode}')} recording, not "
                              "episodic stimulation: ephys2tx needs sweeps with a command waveform (record the "
                              "protocol in Clampex's episodic stimulation mode)")
        if _recorded_sweeps(abf) == 0:  # pyabf then reads all the data as one sweep
            raise CellFailure(f"{path.name}: the header records 0 sweeps: the recording was stopped before its "
                              "first sweep ended, or the header is corrupt; record the protocol again, or copy "
                              "the file again from the rig")
        channel = _voltage_channel(abf, protocol_map["channel"], path.name)
        v_scale = 1e3 if str(abf.adcUnits[channel]).strip() == "V" else 1.0  # mV or V (_voltage_channel)
        dac = _command_dac(abf, channel, path.name)
        dac_unit = str(abf.dacUnits[dac]).strip() if len(abf.dacUnits) else "pA"
        if dac_unit not in _CURRENT_SCALE:
            raise CellFailure(f"{path.name}: the command (DAC {dac}) is in {dac_unit!r}, not a current: "
                              "not a current-clamp protocol")
        i_scale = _CURRENT_SCALE[dac_unit]
        self.rate = float(abf.dataRate)
        ljp = protocol_map["liquid_junction_potential_mv"]
        self.sweeps, self.holding = [], set()
        import pyabf.stimulus

        stimulus = pyabf.stimulus.Stimulus(abf, dac)
        for number in abf.sweepList:
            abf.setSweep(number, channel=channel)
            # the command of DAC ``dac`` (pyabf's sweepC is the DAC of the same index as the ADC channel)
            command = np.asarray(stimulus.stimulusWaveform(number), dtype=np.float64)[:abf.sweepY.size] * i_scale
            if command.size != abf.sweepY.size or not np.all(np.isfinite(command)):
                raise CellFailure(f"{path.name}: pyabf cannot rebuild the command waveform of sweep {number} "
                                  f"({_waveform_text(stimulus)}); ephys2tx needs "
                                  "the stimulus from the protocol's epoch table")
            # the holding level: the command before the first epoch (pyabf fills the first 1/64 of the
            # sweep with the DAC holding level); ipfx reads amplitudes as absolute command levels
            holding = float(command[0])
            self.holding.add(holding)
            if protocol_map["holding_current"] == "subtract" and holding != 0.0:
                command = command - holding
            voltage = np.asarray(abf.sweepY, dtype=np.float64) * v_scale - ljp
            self.sweeps.append((command, voltage))
        if all(c.min() == c.max() for c, _ in self.sweeps):
            raise CellFailure(f"{path.name}: the command (DAC {dac}) is constant on all {len(self.sweeps)} sweep(s) "
                              f"({_waveform_text(stimulus)}): the protocol has no stimulus epochs, so no "
                              "step amplitude can be read; ephys2tx needs the stimulus from the protocol's epoch table")


def _data_set(runs: list[_AbfRun], ontology):
    """An ipfx ``EphysDataSet`` over the sweeps of all runs (numbered consecutively)."""
    from ipfx.dataset.ephys_data_interface import EphysDataInterface

    table = {}
    for run in runs:
        for command, voltage in run.sweeps:
            table[len(table)] = (run, command, voltage)

    class AbfSweepData(EphysDataInterface):
        """ipfx data interface over ABF sweeps (current clamp, pA and mV)."""

        @property
        def sweep_numbers(self):
            return np.array(sorted(table))

        def get_sweep_data(self, sweep_number):
            run, command, voltage = table[int(sweep_number)]
            return {"stimulus": command.copy(), "response": voltage.copy(), "stimulus_unit": "Amps",
                    "sampling_rate": run.rate}

        def get_sweep_attrs(self, sweep_number):
            return {"sweep_number": sweep_number, "clamp_mode": "CurrentClamp",
                    "stimulus_description": self.get_stimulus_code(sweep_number)}

        def get_stimulus_code(self, sweep_number):
            return ROLES[table[int(sweep_number)][0].role]

        def get_stimulus_code_ext(self, sweep_number):
            return self.get_stimulus_code(sweep_number)

        def get_full_recording_date(self):
            return None

        def get_stimulus_unit(self, sweep_number):
            return "Amps"

        def get_clamp_mode(self, sweep_number):
            return "CurrentClamp"

        def get_sweep_metadata(self, sweep_number):
            code = self.get_stimulus_code(sweep_number)
            return {"sweep_number": int(sweep_number), "stimulus_units": "Amps", "bridge_balance_mohm": None,
                    "leak_pa": None, "stimulus_scale_factor": None, "stimulus_code": code,
                    "stimulus_code_ext": code, "clamp_mode": "CurrentClamp",
                    "stimulus_name": self.get_stimulus_name(code)}

    return checked_data_set(AbfSweepData(ontology=ontology, validate_stim=True))


def _has_test_pulse(i: np.ndarray) -> bool:
    """True when the stimulus begins with a pulse that returns to the starting level before the stimulus."""
    changes = np.flatnonzero(np.diff(i))
    return len(changes) > 2 and i[changes[1] + 1] == i[0]


def _stim_characteristics(sweep):
    import ipfx.stim_features as stf

    return stf.get_stim_characteristics(sweep.i, sweep.t, test_pulse=_has_test_pulse(sweep.i))


def _validate_sweeps(data_set, sweep_numbers, extra_dur=0.2):
    """``ipfx.script_utils.validate_sweeps``, with the test pulse detected per sweep."""
    import ipfx.time_series_utils as tsu
    from ipfx.sweep import SweepSet

    check = data_set.sweep_set(sweep_numbers)
    valid, start, dur = [], None, None
    for swp in check.sweeps:
        if len(swp.t) == 0:
            valid.append(False)
            continue
        swp_start, swp_dur, _, _, _ = _stim_characteristics(swp)
        if swp_start is None:
            valid.append(False)
        else:
            start, dur = swp_start, swp_dur
            valid.append(True)
    if start is None:
        return SweepSet([]), None, None
    end = start + dur
    good = [s for s, ok in zip(check.sweeps, valid)
            if ok and s.t[-1] >= end + extra_dur
            and not np.all(s.v[tsu.find_time_index(s.t, end) - 100:tsu.find_time_index(s.t, end)] == 0)]
    return SweepSet(good), start, end


def _preprocess(kind: str, data_set, numbers):
    """ipfx's ``preprocess_{long_square,short_square,ramp}_sweeps`` with per-sweep test-pulse detection."""
    import ipfx.data_set_features as dsf
    import ipfx.error as er
    import ipfx.stimulus_protocol_analysis as spa
    from ipfx.stimulus import StimulusType

    if kind == "ramp":
        sweeps = data_set.sweep_set(numbers)
        start, _, _, _, _ = _stim_characteristics(sweeps.sweeps[0])
        spx, spfx = dsf.extractors_for_sweeps(sweeps, start=start, **dsf.detection_parameters(StimulusType.RAMP))
        analysis = spa.RampAnalysis(spx, spfx)
        return sweeps, analysis.analyze(sweeps), analysis
    sweeps, start, end = _validate_sweeps(data_set, numbers)
    what = kind.replace("_", " ")
    if len(sweeps.sweeps) == 0:
        raise er.FeatureError(f"No {what} sweeps were long enough (200 ms after the stimulus) or did not end early")
    if kind == "long_square":
        spx, spfx = dsf.extractors_for_sweeps(sweeps, start=start, end=end, min_peak=-25,
                                              **dsf.detection_parameters(StimulusType.LONG_SQUARE))
        analysis = spa.LongSquareAnalysis(spx, spfx, subthresh_min_amp=-100.0)
        return sweeps, analysis.analyze(sweeps), analysis, start, end
    spx, spfx = dsf.extractors_for_sweeps(sweeps, est_window=[start, start + 0.001], start=start, end=end + 0.05,
                                          reject_at_stim_start_interval=0.0002,
                                          **dsf.detection_parameters(StimulusType.SHORT_SQUARE))
    analysis = spa.ShortSquareAnalysis(spx, spfx)
    return sweeps, analysis.analyze(sweeps), analysis


def extract_abf_cell(path, protocol_map: dict, ap_window: float = 0.003, compact: bool = False,
                     summary: bool = True, ontology=None) -> dict:
    """Feature vectors and IPFX summary features of one ABF cell.

    Parameters
    ----------
    path : path
        An ABF file (``cells: file``) or a folder of ABF files (``cells: folder``).
    protocol_map : dict
        Validated protocol map (:func:`validate_protocol_map`).
    ap_window, compact, summary
        As for :func:`ephys2tx.features.nwb.vectors.extract_cell`.

    Returns
    -------
    dict
        ``vectors``, ``summary`` and ``layout`` as for NWB cells, plus
        ``notes``: what could not be computed and why (e.g. no ramp).

    Raises
    ------
    CellFailure
        No long-square series, unreadable file, not current clamp, or ipfx
        rejects the long squares.
    """
    from .vectors import _stage, _summary, compact_vectors, feature_vectors

    install_ipfx_memoization()
    ontology = ontology if ontology is not None else default_ontology()
    path = Path(path)
    if not path.exists():
        raise CellFailure(f"file not found: {path}")
    files = abf_cell_files(path)
    if not files:
        raise CellFailure(f"no .abf file in folder {path}")
    runs, ignored = [], []
    for f in files:
        protocol = str(_open_abf(f, load_data=False).protocol)
        role = _role_of(protocol, protocol_map)
        if role is None:
            ignored.append(f"{f.name} ({protocol})")
            continue
        runs.append(_AbfRun(f, role, protocol_map))
    roles = {run.role for run in runs}
    if "long_square" not in roles:
        seen = "; ".join(ignored) or "none"
        raise CellFailure(f"no long-square series: no ABF file of this cell has a protocol listed under long_square "
                          f"in protocol map {protocol_map['name']!r} {protocol_map['long_square']} (protocols seen: "
                          f"{seen})")
    data_set = _data_set(runs, ontology)

    def numbers(role):
        return [n for n, (run, _, _) in enumerate((r, c, v) for r in runs for c, v in r.sweeps) if run.role == role]

    notes = []
    if ignored:
        notes.append("ignored (protocol not in the map): " + ", ".join(ignored))
    holding = sorted({h for run in runs for h in run.holding} - {0.0})
    if holding:
        levels = ", ".join(f"{h:g}" for h in holding)
        notes.append(f"holding current {levels} pA " + (
            "subtracted from the stimulus (holding_current: subtract)"
            if protocol_map["holding_current"] == "subtract"
            else "kept in the stimulus amplitudes (holding_current: include)"))
    lsq_sweeps, lsq_features, lsq_an, lsq_start, lsq_end = _stage(
        "long square analysis", _preprocess, "long_square", data_set, numbers("long_square"))
    optional = {}
    for role in ("short_square", "ramp"):
        label = role.replace("_", " ")
        if role not in roles:
            notes.append(f"no {label} protocol: the {label} part of first_ap_v/first_ap_dv and the "
                         f"*_{role} summary features are NaN")
            optional[role] = (None, None)
            continue
        try:
            out = _preprocess(role, data_set, numbers(role))
            optional[role] = (out[0], out[1])
        except Exception as exc:  # the protocol is there but ipfx cannot use it: say so and go on
            notes.append(f"{label} analysis failed ({type(exc).__name__}: {exc}): its features are NaN")
            optional[role] = (None, None)
    (ssq_sweeps, ssq_features), (ramp_sweeps, ramp_features) = optional["short_square"], optional["ramp"]
    vectors = _stage("feature vectors", feature_vectors, lsq_sweeps, lsq_features, lsq_start, lsq_end,
                     ssq_sweeps, ssq_features, ramp_sweeps, ramp_features, ap_window)
    if compact:
        vectors = _stage("compact resampling", compact_vectors, vectors)
    summary_features = _stage("summary features", _summary, lsq_sweeps, lsq_features, lsq_an, ssq_features,
                              ramp_features) if summary else {}
    versions = sorted({run.version for run in runs})
    return {"vectors": vectors, "summary": summary_features, "layout": "+".join(f"abf{v}" for v in versions),
            "notes": notes}
