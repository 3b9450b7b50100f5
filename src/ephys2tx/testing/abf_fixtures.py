"""Synthetic Axon ABF 1 and ABF 2 current-clamp files, and their NWB twins, for tests.

The cells are simulated with the same conductance-based models as the NWB
fixtures (:mod:`ephys2tx.testing.nwb_fixtures`).  Each cell has three protocol
runs, as a lab would record them with pCLAMP: a long-square series (20 pA
steps from -90 pA to 120 pA above rheobase), three short squares at
threshold and a ramp.  The stimuli are written the way Clampex stores them,
as an epoch table in the file header (step and ramp epochs with a level
increment per sweep); the command waveforms given to the simulator are built
exactly as ``pyabf`` rebuilds them from that table (its ``sweepC``: a holding
period of 1/64 of the sweep, then the epochs), and the recorded voltage is
stored as 16-bit integers, as a Digidata does.

A cell can be recorded on a DAC holding current (``holding=-30.0``: Clampex's
holding level, e.g. to keep a cell near -70 mV): every epoch level and the
pre-epoch period are then offset by it, the neuron is simulated with that
absolute command, and the ABF header stores it (ABF 2: ``fDACHoldingLevel``;
ABF 1: pyabf reads the holding level from the first epoch-level slot, which is
the baseline epoch here).

``pyabf.abfWriter.writeABF1`` writes neither the epoch table nor the protocol
name, and nothing in pyabf writes ABF 2, so both writers are here.  They fill
the header fields that pyabf reads (offsets from pyabf's ``HeaderV1`` and
ABF 2 section readers) and leave the rest zero.

The NWB twin of a cell (:func:`write_nwb_twin`) holds the same commands and the
same voltages (as pyabf reads them) with the Allen stimulus codes, so the two
files must give the same features.  Its stimulus is the command minus the
holding level, as MIES/the Allen pipeline stores a cell held with a bias
current (the bias current is kept out of the stimulus).
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from . import nwb_fixtures as nf

STEP, RAMP = 1, 2
LONG_SQUARE_PROTOCOL, SHORT_SQUARE_PROTOCOL, RAMP_PROTOCOL = "IC_steps_1s", "IC_short_3ms", "IC_ramp"
PROTOCOL_MAP = {"name": "synthetic_rig", "long_square": [LONG_SQUARE_PROTOCOL],
                "short_square": [SHORT_SQUARE_PROTOCOL], "ramp": [RAMP_PROTOCOL],
                "liquid_junction_potential_mv": 0.0}
#: mV per ADC count: ADC range 10 V, 16 bits, instrument scale factor 0.1 V/mV^-1 -> +-100 mV.
INSTRUMENT_SCALE = 0.1
#: V per pA of a current channel (0.5 mV/pA: +-20 nA) in multi-channel ABF 2 files.
CURRENT_SCALE = 0.0005
ADC_RANGE, ADC_RESOLUTION = 10.0, 32768


@dataclasses.dataclass(frozen=True)
class Epoch:
    """One column of the Clampex waveform editor."""

    kind: int  # STEP or RAMP
    level: float  # pA, first sweep
    duration: int  # samples
    level_inc: float = 0.0  # pA per sweep


@dataclasses.dataclass
class AbfRun:
    """One protocol run: protocol name, epoch table, sweep count, commands (pA) and voltages (mV, as read)."""

    protocol: str
    epochs: list
    n_sweeps: int
    n_samples: int
    commands: list
    raw: list = dataclasses.field(default_factory=list)  # int16 per sweep
    voltages: list = dataclasses.field(default_factory=list)  # float32, what pyabf reads back
    holding: float = 0.0  # pA, the DAC holding level (in every command)


@dataclasses.dataclass
class AbfCell:
    """A simulated cell recorded as three ABF protocol runs."""

    cell_id: str
    label: str
    rate: float
    runs: dict  # role -> AbfRun


def epoch_command(epochs: Sequence[Epoch], sweep: int, n_samples: int, holding: float = 0.0) -> np.ndarray:
    """The command waveform of ``sweep`` as ``pyabf`` rebuilds it from an epoch table.

    A holding period of ``n_samples // 64`` points, then each epoch (a step
    at ``level + sweep * level_inc``, or a linear ramp from the previous
    level to it), then the holding level to the end of the sweep.
    """
    out = np.full(n_samples, holding, dtype=np.float64)
    position, previous = n_samples // 64, holding
    for epoch in epochs:
        level = epoch.level + epoch.level_inc * sweep
        chunk = slice(position, position + epoch.duration)
        if epoch.kind == STEP:
            out[chunk] = level
        else:
            out[chunk] = np.linspace(previous, level, epoch.duration)
        position += epoch.duration
        previous = level
    return out


def _run(protocol: str, rate: float, duration: float, stimulus: Epoch, n_sweeps: int,
         test_pulse: bool = True, holding: float = 0.0) -> AbfRun:
    n = int(round((nf.STIM_START + duration + nf.POST_STIM) * rate))
    pre = n // 64
    stim_start = int(round(nf.STIM_START * rate))
    if test_pulse:  # baseline, -50 pA test pulse of 10 ms, baseline up to the stimulus
        tp_start, tp_len = int(round(0.05 * rate)), int(round(nf.TEST_PULSE_DURATION * rate))
        epochs = [Epoch(STEP, holding, tp_start - pre), Epoch(STEP, holding + nf.TEST_PULSE_AMP, tp_len),
                  Epoch(STEP, holding, stim_start - tp_start - tp_len)]
    else:
        epochs = [Epoch(STEP, holding, stim_start - pre)]
    epochs.append(dataclasses.replace(stimulus, level=holding + stimulus.level))  # Clampex levels are absolute
    commands = [epoch_command(epochs, k, n, holding) for k in range(n_sweeps)]
    return AbfRun(protocol, epochs, n_sweeps, n, commands, holding=holding)


def _quantise(v: np.ndarray, scale: float = INSTRUMENT_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """int16 counts of a trace (mV, or pA with ``scale=CURRENT_SCALE``) and the float32 values pyabf
    reads back from them."""
    counts_per_unit = ADC_RESOLUTION / ADC_RANGE * scale
    raw = np.clip(np.round(v * counts_per_unit), -32768, 32767).astype(np.int16)
    gain = 1.0 / scale * ADC_RANGE / ADC_RESOLUTION  # pyabf's _dataGain
    return raw, np.multiply(raw.astype(np.float32), gain) + 0  # float32 arithmetic, as in pyabf


def is_voltage_unit(unit: str) -> bool:
    """True for the ADC units the multi-channel writer fills with the recorded voltage (mV, V)."""
    return unit in ("mV", "V")


def channel_trace(run: AbfRun, sweep: int, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """int16 counts and pyabf's read-back values of ``sweep`` on an ADC channel in ``unit``.

    A channel in mV or V holds the recorded voltage (``run.raw``); any other
    channel (pA: the amplifier's current output) holds the command current,
    quantised at :data:`CURRENT_SCALE`.
    """
    if is_voltage_unit(unit):
        return run.raw[sweep], run.voltages[sweep]
    return _quantise(run.commands[sweep], CURRENT_SCALE)


def simulate_abf_cells(labels: Sequence[str], seed: int = 0, rate: float = nf.SAMPLING_RATE,
                       ramp_peak_x_rheobase: float = 3.0, test_pulse: bool = True,
                       noise_mv: float = 0.05, holding: float = 0.0) -> list[AbfCell]:
    """Simulate cells on ABF-expressible protocols (arithmetic step series, epoch-table ramps).

    ``holding`` (pA) is a DAC holding current added to every command (the
    steps stay relative to it: the same step series as without holding).
    """
    rng = np.random.default_rng(seed)
    params = [nf.jitter_params(nf.CELL_TYPES[label], rng) for label in labels]
    dt_ms = 1000.0 / rate
    ls_amps = np.arange(-90.0, 351.0, 20.0)
    ss_amps = np.arange(100.0, 2001.0, 100.0)
    ls_len, ss_len = int(round(nf.LONG_SQUARE_DURATION * rate)), int(round(nf.SHORT_SQUARE_DURATION * rate))
    ls_grid = _run(LONG_SQUARE_PROTOCOL, rate, nf.LONG_SQUARE_DURATION,
                   Epoch(STEP, ls_amps[0], ls_len, 20.0), len(ls_amps), test_pulse, holding)
    ss_grid = _run(SHORT_SQUARE_PROTOCOL, rate, nf.SHORT_SQUARE_DURATION,
                   Epoch(STEP, ss_amps[0], ss_len, 100.0), len(ss_amps), test_pulse, holding)
    grid = ls_grid.commands + ss_grid.commands
    v_grid = nf.simulate_traces([p for p in params for _ in grid], [c for _ in params for c in grid], dt_ms)
    cells = []
    for k, label in enumerate(labels):
        v_ls = v_grid[k * len(grid):k * len(grid) + len(ls_amps)]
        v_ss = v_grid[k * len(grid) + len(ls_amps):(k + 1) * len(grid)]
        r = next(j for j, v in enumerate(v_ls) if nf._count_spikes(v) > 0)
        s = next(j for j, v in enumerate(v_ss) if nf._count_spikes(v) > 0)
        ls = _run(LONG_SQUARE_PROTOCOL, rate, nf.LONG_SQUARE_DURATION, Epoch(STEP, ls_amps[0], ls_len, 20.0),
                  r + 7, test_pulse, holding)
        ss = _run(SHORT_SQUARE_PROTOCOL, rate, nf.SHORT_SQUARE_DURATION, Epoch(STEP, ss_amps[s], ss_len), 3,
                  test_pulse, holding)
        ramp_len = int(round(nf.RAMP_DURATION * rate))
        ramp = _run(RAMP_PROTOCOL, rate, nf.RAMP_DURATION,
                    Epoch(RAMP, ramp_peak_x_rheobase * ls_amps[r], ramp_len), 1, test_pulse, holding)
        v_ramp = nf.simulate_traces([params[k]], ramp.commands, dt_ms)
        voltages = {"long_square": v_ls[:r + 7], "short_square": [v_ss[s]] * 3, "ramp": v_ramp}
        runs = {"long_square": ls, "short_square": ss, "ramp": ramp}
        for role, run in runs.items():
            for v in voltages[role]:
                raw, back = _quantise(v + rng.normal(0.0, noise_mv, v.shape))
                run.raw.append(raw)
                run.voltages.append(back)
        cells.append(AbfCell(f"abf{seed:03d}_{k:03d}_{label}", label, rate, runs))
    return cells


def _pad(data: bytes, block: int = 512) -> bytes:
    return data + b"\0" * (-len(data) % block)


def write_abf1(path: str | Path, run: AbfRun, rate: float, adc_unit: str = "mV", dac_unit: str = "pA") -> Path:
    """Write ``run`` as an ABF 1.3 episodic file with its epoch table and protocol path."""
    header = bytearray(12 * 512)  # pyabf reads header fields up to byte 5806
    n_points = run.n_samples * run.n_sweeps
    struct.pack_into("4s", header, 0, b"ABF ")
    struct.pack_into("f", header, 4, 1.3)
    struct.pack_into("h", header, 8, 5)  # episodic stimulation
    struct.pack_into("i", header, 10, n_points)
    struct.pack_into("i", header, 16, run.n_sweeps)
    struct.pack_into("i", header, 20, 20200101)  # lFileStartDate
    struct.pack_into("i", header, 40, len(header) // 512)  # lDataSectionPtr (blocks)
    struct.pack_into("h", header, 100, 0)  # int16 data
    struct.pack_into("h", header, 120, 1)  # one ADC channel
    struct.pack_into("f", header, 122, 1e6 / rate)  # sample interval (us)
    struct.pack_into("i", header, 138, run.n_samples)
    struct.pack_into("f", header, 244, ADC_RANGE)
    struct.pack_into("i", header, 252, ADC_RESOLUTION)
    for i in range(16):
        struct.pack_into("10s", header, 442 + i * 10, b"IN 0")
        struct.pack_into("8s", header, 602 + i * 8, adc_unit.encode().ljust(8))
        struct.pack_into("f", header, 730 + i * 4, 1.0)  # programmable gain
        struct.pack_into("f", header, 922 + i * 4, INSTRUMENT_SCALE)
        struct.pack_into("f", header, 1050 + i * 4, 1.0)  # signal gain
    for i in range(4):
        struct.pack_into("10s", header, 1306 + i * 10, b"Cmd 0")
        struct.pack_into("8s", header, 1346 + i * 8, dac_unit.encode().ljust(8))
    struct.pack_into("2h", header, 2296, 1, 0)  # nWaveformEnable
    struct.pack_into("2h", header, 2300, 1, 0)  # nWaveformSource: epoch table
    for k, epoch in enumerate(run.epochs):  # DAC 0 uses epoch slots 0-9
        struct.pack_into("h", header, 2308 + 2 * k, epoch.kind)
        struct.pack_into("f", header, 2348 + 4 * k, epoch.level)
        struct.pack_into("f", header, 2428 + 4 * k, epoch.level_inc)
        struct.pack_into("i", header, 2508 + 4 * k, epoch.duration)
    struct.pack_into("256s", header, 4898, f"C:\\Axon\\Params\\{run.protocol}.pro".encode().ljust(256))
    data = np.concatenate(run.raw).astype("<i2").tobytes()
    path = Path(path)
    path.write_bytes(bytes(header) + _pad(data))
    return path


def write_abf2(path: str | Path, run: AbfRun, rate: float, adc_unit: str = "mV", dac_unit: str = "pA",
               channels: Sequence[str] | None = None) -> Path:
    """Write ``run`` as an ABF 2.0 episodic file (the sections pyabf reads; the rest empty).

    ``channels`` lists the unit of each ADC channel (``IN 0``, ``IN 1``, ...;
    default: one channel in ``adc_unit``), e.g. ``("mV", "pA")`` for a
    MultiClamp recording the membrane potential and the current, or
    ``("pA", "mV")`` with the voltage second. Channels in mV or V hold the
    recorded voltage, the others the command current (:func:`channel_trace`);
    samples are interleaved as Clampex stores them. There is one DAC per
    channel; only DAC 0 carries the epoch table.
    """
    units = list(channels) if channels is not None else [adc_unit]
    n_channels = len(units)
    strings = ["Clampex", f"C:\\Axon\\Params\\{run.protocol}.pro", "synthetic"]
    for k, unit in enumerate(units):
        strings += [f"IN {k}", unit, f"Cmd {k}", dac_unit]
    strings_blob = b"\0\0" + b"\0".join(s.encode() for s in strings) + b"\0"
    index = {"creator": 1, "protocol": 2, "comment": 3}  # then name, unit, DAC name, DAC unit per channel
    protocol = bytearray(512)
    struct.pack_into("<h", protocol, 0, 5)  # episodic
    struct.pack_into("<f", protocol, 2, 1e6 / rate)  # fADCSequenceInterval (us)
    struct.pack_into("<i", protocol, 22, run.n_samples * n_channels)  # lNumSamplesPerEpisode
    struct.pack_into("<i", protocol, 30, run.n_sweeps)
    struct.pack_into("<f", protocol, 62, run.n_samples / rate)  # fEpisodeStartToStart
    struct.pack_into("<f", protocol, 110, ADC_RANGE)
    struct.pack_into("<f", protocol, 114, ADC_RANGE)
    struct.pack_into("<i", protocol, 118, ADC_RESOLUTION)
    struct.pack_into("<i", protocol, 122, ADC_RESOLUTION)
    struct.pack_into("<i", protocol, 132, index["comment"])
    adc, dac = bytearray(128 * n_channels), bytearray(256 * n_channels)
    for k, unit in enumerate(units):
        first = 4 + 4 * k  # string index of this channel's name
        a, d = 128 * k, 256 * k
        struct.pack_into("<h", adc, a, k)  # nADCNum
        struct.pack_into("<hh", adc, a + 24, k, k)  # nADCPtoLChannelMap, nADCSamplingSeq
        struct.pack_into("<f", adc, a + 28, 1.0)
        struct.pack_into("<f", adc, a + 40, INSTRUMENT_SCALE if is_voltage_unit(unit) else CURRENT_SCALE)
        struct.pack_into("<f", adc, a + 48, 1.0)
        struct.pack_into("<ii", adc, a + 74, first, first + 1)
        struct.pack_into("<h", dac, d, k)  # nDACNum
        struct.pack_into("<f", dac, d + 12, run.holding)  # fDACHoldingLevel
        struct.pack_into("<ii", dac, d + 24, first + 2, first + 3)
        # DAC 0: waveform enabled, from the epoch table, no inter-episode level; the others off
        struct.pack_into("<hhh", dac, d + 40, *((1, 1, 0) if k == 0 else (0, 0, 0)))
    epoch_dig = b"".join(struct.pack("<hh", k, 0).ljust(32, b"\0") for k in range(len(run.epochs)))
    epoch_dac = b"".join(struct.pack("<hhhffii", k, 0, e.kind, e.level, e.level_inc, e.duration, 0).ljust(48, b"\0")
                         for k, e in enumerate(run.epochs))
    sweeps = [np.column_stack([channel_trace(run, k, unit)[0] for unit in units]).ravel()
              for k in range(run.n_sweeps)]
    data = np.concatenate(sweeps).astype("<i2").tobytes()
    per_sweep = run.n_samples * n_channels
    synch = b"".join(struct.pack("<ii", k * per_sweep, per_sweep) for k in range(run.n_sweeps))
    # sections in order after the 512-byte header: (offset in the section table, bytes per entry, entries, payload)
    sections = [(76, 512, 1, bytes(protocol)), (92, 128, n_channels, bytes(adc)), (108, 256, n_channels, bytes(dac)),
                (124, 32, len(run.epochs), epoch_dig), (156, 48, len(run.epochs), epoch_dac),
                (220, len(strings_blob), 1, strings_blob), (236, 2, len(data) // 2, data),
                (316, 8, run.n_sweeps, synch)]
    header = bytearray(512)
    struct.pack_into("<4s", header, 0, b"ABF2")
    header[4:8] = bytes([0, 0, 6, 2])  # version 2.6.0.0 (pyabf reads the bytes reversed)
    struct.pack_into("<I", header, 8, 512)
    struct.pack_into("<I", header, 12, run.n_sweeps)
    struct.pack_into("<I", header, 16, 20200101)
    header[56:60] = bytes([0, 0, 6, 10])  # creator version
    struct.pack_into("<I", header, 60, index["creator"])
    struct.pack_into("<I", header, 72, index["protocol"])
    body, block = b"", 1
    for offset, size, count, payload in sections:
        struct.pack_into("<IIq", header, offset, block, size, count)
        padded = _pad(payload)
        body += padded
        block += len(padded) // 512
    path = Path(path)
    path.write_bytes(bytes(header) + body)
    return path


def write_abf_cell(root: str | Path, cell: AbfCell, version: int = 2, layout: str = "folder",
                   roles: Sequence[str] = ("long_square", "short_square", "ramp")) -> Path:
    """Write a cell's runs as ABF files.

    ``layout="folder"``: ``root/<cell_id>/<protocol>.abf`` for each role
    (protocol map ``cells: folder``); ``layout="file"``: the long-square run
    only, as ``root/<cell_id>.abf`` (``cells: file``). Returns the cell's
    folder or file.
    """
    writer = {1: write_abf1, 2: write_abf2}[version]
    root = Path(root)
    if layout == "file":
        root.mkdir(parents=True, exist_ok=True)
        return writer(root / f"{cell.cell_id}.abf", cell.runs["long_square"], cell.rate)
    folder = root / cell.cell_id
    folder.mkdir(parents=True, exist_ok=True)
    for role in roles:
        run = cell.runs[role]
        writer(folder / f"{run.protocol}.abf", run, cell.rate)
    return folder


def write_nwb_twin(path: str | Path, cell: AbfCell, layout: str = "sweep_table",
                   roles: Sequence[str] = ("long_square", "short_square", "ramp")) -> Path:
    """Write the same sweeps (commands minus the holding level, voltages as read from the ABF files) as NWB 2."""
    codes = {"long_square": nf.LONG_SQUARE_CODE, "short_square": nf.SHORT_SQUARE_CODE, "ramp": nf.RAMP_CODE}
    sweeps = [(codes[role], command - cell.runs[role].holding, voltage) for role in roles
              for command, voltage in zip(cell.runs[role].commands, cell.runs[role].voltages)]
    protocol = dataclasses.replace(nf.SMALL, sampling_rate=cell.rate, dtype="float64")
    recording = nf.CellRecording(cell.cell_id, cell.label, sweeps, protocol)
    return nf.write_cell_nwb(path, recording, layout=layout, compress=False)
