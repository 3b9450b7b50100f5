"""Synthetic NWB 2 current-clamp recordings for tests and benchmarks.

Responses come from a single-compartment conductance-based model (Pospischil
et al. 2008 kinetics: Traub-Miles Na/Kd plus a slow M-type K current),
integrated with the exponential Euler method, vectorised over sweeps and
cells.  Two parameter sets are provided: ``FAST_SPIKING`` (Pvalb-like:
fast K kinetics, no adaptation, low input resistance) and ``ADAPTING``
(Sst-like: slow K kinetics, strong M current, high input resistance).

Files follow the Allen Cell Types protocol closely enough for ipfx's stimulus
ontology and feature extractors: a test pulse, coarse long squares from
hyperpolarising to well above rheobase (``C1LSCOARSE``), short squares at
threshold (``C1SSCOARSE``) and a ramp (``C1RP25PR1S``).  Two layouts are
written:

``"sweep_table"``
    Allen/DANDI layout with the (deprecated) ``SweepTable`` that ipfx reads.
    pynwb refuses to create a ``SweepTable`` in a new file except in its
    "construct mode" (used when objects are built from a file); we build the
    table through that path, exactly as ``NWBFile._check_sweep_table`` does.
``"icephys_table"``
    Modern layout with ``IntracellularRecordingsTable`` (plus simultaneous
    and sequential recordings tables) and no ``SweepTable``.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

SAMPLING_RATE = 50_000.0
DT_MS = 1000.0 / SAMPLING_RATE

TEST_PULSE_START = 0.02
TEST_PULSE_DURATION = 0.01
TEST_PULSE_AMP = -50.0  # pA
STIM_START = 0.3  # s, after the test pulse
LONG_SQUARE_DURATION = 1.0
SHORT_SQUARE_DURATION = 0.003
POST_STIM = 0.25
RAMP_SLOPE = 400.0  # pA/s
RAMP_DURATION = 1.0

LONG_SQUARE_CODE = "C1LSCOARSE150216"
SHORT_SQUARE_CODE = "C1SSCOARSE150112"
RAMP_CODE = "C1RP25PR1S141203"

LAYOUTS = ("sweep_table", "icephys_table")


@dataclasses.dataclass(frozen=True)
class NeuronParams:
    """Conductance-based neuron parameters.

    Conductances are densities in mS/cm^2 at 1 uF/cm^2, so the absolute
    conductance in nS equals density times ``capacitance_pf``.
    """

    capacitance_pf: float
    g_leak: float
    e_leak: float
    g_na: float
    g_kd: float
    g_m: float
    tau_m_max: float  # ms
    v_t: float  # mV, shifts Na/Kd kinetics
    phi_na: float  # rate factor of Na gates
    phi_k: float  # rate factor of Kd gate


FAST_SPIKING = NeuronParams(
    capacitance_pf=60.0, g_leak=0.15, e_leak=-72.0, g_na=60.0, g_kd=12.0,
    g_m=0.0, tau_m_max=500.0, v_t=-58.0, phi_na=1.6, phi_k=3.0,
)
ADAPTING = NeuronParams(
    capacitance_pf=50.0, g_leak=0.05, e_leak=-66.0, g_na=50.0, g_kd=5.0,
    g_m=0.25, tau_m_max=600.0, v_t=-60.0, phi_na=1.0, phi_k=1.0,
)
CELL_TYPES = {"Pvalb": FAST_SPIKING, "Sst": ADAPTING}

E_NA = 50.0
E_K = -90.0
_V_MIN, _V_MAX, _V_STEP = -200.0, 200.0, 0.01


def jitter_params(params: NeuronParams, rng: np.random.Generator, scale: float = 0.05) -> NeuronParams:
    """Return ``params`` with multiplicative log-normal jitter on positive fields."""
    changes = {}
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        if field.name in ("e_leak", "v_t"):
            changes[field.name] = value + rng.normal(0.0, 1.0)
        elif value > 0:
            changes[field.name] = value * float(np.exp(rng.normal(0.0, scale)))
    return dataclasses.replace(params, **changes)


def _exprel(x: np.ndarray, k: float) -> np.ndarray:
    """``x / (1 - exp(-x / k))`` with its limit ``k`` at ``x == 0``."""
    safe = np.where(np.abs(x) < 1e-6, 1e-6, x)
    return safe / -np.expm1(-safe / k)


def simulate(params: Sequence[NeuronParams], current_pa: np.ndarray, dt_ms: float = DT_MS) -> np.ndarray:
    """Simulate membrane voltage for a batch of traces.

    Parameters
    ----------
    params : sequence of NeuronParams
        One parameter set per trace (row of ``current_pa``).
    current_pa : ndarray, shape (n_traces, n_samples)
        Injected current in pA.
    dt_ms : float
        Time step in ms (equal to the sampling interval).

    Returns
    -------
    ndarray of float32, shape (n_traces, n_samples)
        Membrane voltage in mV.
    """
    current_pa = np.asarray(current_pa, dtype=np.float64)
    n_traces, n_samples = current_pa.shape
    if len(params) != n_traces:
        raise ValueError(f"got {len(params)} parameter sets for {n_traces} traces")
    p = {f.name: np.array([getattr(q, f.name) for q in params], dtype=np.float64)
         for f in dataclasses.fields(NeuronParams)}
    drive = current_pa / p["capacitance_pf"][:, None]  # mV/ms

    # Rate tables on a 0.01 mV grid: columns m_inf, m_rate, h_inf, h_rate,
    # n_inf, n_rate as functions of u = v - v_t, and w_inf, 1/tau_w of v.
    grid = np.arange(_V_MIN, _V_MAX, _V_STEP)
    a_m, b_m = 0.32 * _exprel(grid - 13.0, 4.0), 0.28 * _exprel(-(grid - 40.0), 5.0)
    a_h, b_h = 0.128 * np.exp(-(grid - 17.0) / 18.0), 4.0 / (1.0 + np.exp(-(grid - 40.0) / 5.0))
    a_n, b_n = 0.032 * _exprel(grid - 15.0, 5.0), 0.5 * np.exp(-(grid - 10.0) / 40.0)
    kin = np.stack([a_m / (a_m + b_m), a_m + b_m, a_h / (a_h + b_h), a_h + b_h,
                    a_n / (a_n + b_n), a_n + b_n], axis=1)
    w_inf = 1.0 / (1.0 + np.exp(-(grid + 35.0) / 10.0))
    w_rate = 3.3 * np.exp((grid + 35.0) / 20.0) + np.exp(-(grid + 35.0) / 20.0)
    slow = np.stack([w_inf, w_rate], axis=1)
    rate_scale = np.stack([np.ones(n_traces), p["phi_na"], np.ones(n_traces), p["phi_na"],
                           np.ones(n_traces), p["phi_k"]], axis=1) * np.array([0, -dt_ms, 0, -dt_ms, 0, -dt_ms])
    w_scale = -dt_ms / p["tau_m_max"]
    n_grid = len(grid)

    def lookup(x):
        return np.clip(((x - _V_MIN) / _V_STEP).astype(np.intp), 0, n_grid - 1)

    v = p["e_leak"].copy()
    k0 = kin[lookup(v - p["v_t"])]
    gates = k0[:, 0::2].copy()  # m, h, n
    w = slow[lookup(v), 0]
    out = np.empty((n_traces, n_samples), dtype=np.float32)
    g_l, e_l_term = p["g_leak"], p["g_leak"] * p["e_leak"]
    g_na, g_kd, g_m = p["g_na"], p["g_kd"], p["g_m"]
    for t in range(n_samples):
        out[:, t] = v
        k = kin[lookup(v - p["v_t"])]
        decay = np.exp(k[:, 1::2] * rate_scale[:, 1::2])
        gates = k[:, 0::2] + (gates - k[:, 0::2]) * decay
        s = slow[lookup(v)]
        w = s[:, 0] + (w - s[:, 0]) * np.exp(w_scale * s[:, 1])
        m, h, n = gates[:, 0], gates[:, 1], gates[:, 2]
        gna = g_na * m * m * m * h
        n2 = n * n
        gk = g_kd * n2 * n2 + g_m * w
        g_total = gna + gk + g_l
        v_inf = (gna * E_NA + gk * E_K + e_l_term + drive[:, t]) / g_total
        v = v_inf + (v - v_inf) * np.exp(-dt_ms * g_total)
    return out


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Stimulus protocol and file format of simulated cells.

    The default (:data:`SMALL`) keeps the test fixtures small: 1.55 s sweeps,
    a few long squares around rheobase, float32, gzip.  :data:`ALLEN_50K` and
    :data:`ALLEN_200K` are Allen-sized: 2.52 s long-square sweeps with the
    stimulus at 1.02 s, every long square from -110 pA to 160 pA above
    rheobase in 20 pA steps, short squares, three ramps, float64, no
    compression (about 55-70 MB per cell at 50 kHz, four times that at 200 kHz).
    """

    name: str = "small"
    sampling_rate: float = SAMPLING_RATE
    test_pulse_start: float = TEST_PULSE_START
    stim_start: float = STIM_START
    post_stim: float = POST_STIM
    long_square_duration: float = LONG_SQUARE_DURATION
    ls_amps: tuple = tuple(float(a) for a in np.arange(-90.0, 351.0, 20.0))
    keep_all_long_squares: bool = False  # False: hyperpolarising + last subthreshold + rheobase..+120 pA
    n_above_rheobase: int = 6
    ss_amps: tuple = tuple(float(a) for a in np.arange(100.0, 2001.0, 100.0))
    ss_repeats: int = 3
    ramp_slope: float = RAMP_SLOPE  # pA/s
    ramp_duration: float = RAMP_DURATION
    n_ramps: int = 1
    ramp_peak_x_rheobase: float | None = None  # ramp peak as a multiple of rheobase (overrides ramp_slope)
    dtype: str = "float32"
    compress: bool = True

    @property
    def dt_ms(self) -> float:
        return 1000.0 / self.sampling_rate


SMALL = Protocol()
ALLEN_50K = Protocol(name="allen50k", stim_start=1.02, post_stim=0.5, ls_amps=tuple(float(a) for a in
                     np.arange(-110.0, 611.0, 20.0)), keep_all_long_squares=True, n_above_rheobase=8,
                     n_ramps=3, dtype="float64", compress=False)
ALLEN_200K = dataclasses.replace(ALLEN_50K, name="allen200k", sampling_rate=200_000.0)
PROTOCOLS = {p.name: p for p in (SMALL, ALLEN_50K, ALLEN_200K)}


def _with_test_pulse(n_samples: int, protocol: Protocol = SMALL) -> np.ndarray:
    i = np.zeros(n_samples)
    a = int(protocol.test_pulse_start * protocol.sampling_rate)
    i[a:a + int(TEST_PULSE_DURATION * protocol.sampling_rate)] = TEST_PULSE_AMP
    return i


def long_square_current(amp: float, protocol: Protocol = SMALL) -> np.ndarray:
    """Current (pA) of a coarse long-square sweep with test pulse."""
    rate = protocol.sampling_rate
    n = int((protocol.stim_start + protocol.long_square_duration + protocol.post_stim) * rate)
    i = _with_test_pulse(n, protocol)
    a = int(protocol.stim_start * rate)
    i[a:a + int(protocol.long_square_duration * rate)] = amp
    return i


def short_square_current(amp: float, protocol: Protocol = SMALL) -> np.ndarray:
    """Current (pA) of a 3 ms short-square sweep with test pulse."""
    rate = protocol.sampling_rate
    n = int((protocol.stim_start + SHORT_SQUARE_DURATION + protocol.post_stim) * rate)
    i = _with_test_pulse(n, protocol)
    a = int(protocol.stim_start * rate)
    i[a:a + int(round(SHORT_SQUARE_DURATION * rate))] = amp
    return i


def ramp_current(slope_pa_per_s: float, duration: float, protocol: Protocol = SMALL) -> np.ndarray:
    """Current (pA) of a ramp sweep with test pulse."""
    rate = protocol.sampling_rate
    n = int((protocol.stim_start + duration + protocol.post_stim) * rate)
    i = _with_test_pulse(n, protocol)
    a = int(protocol.stim_start * rate)
    k = int(duration * rate)
    i[a:a + k] = slope_pa_per_s * (np.arange(1, k + 1) / rate)
    return i


def _count_spikes(v: np.ndarray) -> int:
    return int(((v[1:] > 0.0) & (v[:-1] <= 0.0)).sum())


@dataclasses.dataclass
class CellRecording:
    """Sweeps of one simulated cell: list of (stimulus code, current pA, voltage mV); ``protocol`` used."""

    cell_id: str
    label: str
    sweeps: list
    protocol: Protocol = SMALL


def simulate_traces(params: Sequence[NeuronParams], currents: Sequence[np.ndarray], dt_ms: float) -> list:
    """Simulate each (parameter set, current) pair in one batch; voltages (float32) of each current's length."""
    n_max = max(len(i) for i in currents)
    padded = np.stack([np.pad(np.asarray(i, dtype=np.float64), (0, n_max - len(i))) for i in currents])
    v = simulate(list(params), padded, dt_ms=dt_ms)
    return [v[k, :len(i)] for k, i in enumerate(currents)]


def simulate_cells(labels: Sequence[str], seed: int = 0, include_ramp: bool = True,
                   noise_mv: float = 0.05, protocol: Protocol = SMALL) -> list[CellRecording]:
    """Simulate an Allen-like protocol for several cells at once.

    Parameters
    ----------
    labels : sequence of str
        Cell type of each cell, keys of ``CELL_TYPES``.
    seed : int
        Seed for parameter jitter and recording noise.
    include_ramp : bool
        If False, cells get no ramp sweep (extraction must then fail).
    noise_mv : float
        Standard deviation of additive recording noise (mV).
    protocol : Protocol
        Timing, amplitudes, sampling rate and data type (default :data:`SMALL`).
    """
    rng = np.random.default_rng(seed)
    cells = [jitter_params(CELL_TYPES[label], rng) for label in labels]
    n_cells = len(cells)

    # One batch for the long and short squares of all cells (the time loop dominates cost),
    # then one for the ramps (whose slope may depend on each cell's rheobase).
    ls_amps, ss_amps = np.asarray(protocol.ls_amps), np.asarray(protocol.ss_amps)
    steps = ([(LONG_SQUARE_CODE, long_square_current(a, protocol)) for a in ls_amps]
             + [(SHORT_SQUARE_CODE, short_square_current(a, protocol)) for a in ss_amps])
    v_steps = simulate_traces([c for c in cells for _ in steps], [i for _ in cells for _, i in steps],
                              protocol.dt_ms)
    n_ls, n_ss = len(ls_amps), len(ss_amps)
    rheobase_index = []
    for k in range(n_cells):
        ls_v = v_steps[k * len(steps):k * len(steps) + n_ls]
        spiking = [j for j, v in enumerate(ls_v) if _count_spikes(v) > 0]
        if not spiking:
            raise RuntimeError(f"simulated cell {k} ({labels[k]}) does not spike; adjust parameters")
        rheobase_index.append(spiking[0])
    ramps = []
    if include_ramp:
        for k in range(n_cells):
            slope = protocol.ramp_slope
            if protocol.ramp_peak_x_rheobase is not None:
                slope = protocol.ramp_peak_x_rheobase * ls_amps[rheobase_index[k]] / protocol.ramp_duration
            ramps.append((RAMP_CODE, ramp_current(slope, protocol.ramp_duration, protocol)))
        v_ramps = simulate_traces(cells, [i for _, i in ramps], protocol.dt_ms)

    recordings = []
    for k, label in enumerate(labels):
        block = v_steps[k * len(steps):(k + 1) * len(steps)]
        traces = [(code, i, v) for (code, i), v in zip(steps, block)]
        ls, ss = traces[:n_ls], traces[n_ls:]
        ss_spiking = [j for j, (_, _, v) in enumerate(ss) if _count_spikes(v) > 0]
        if not ss_spiking:
            raise RuntimeError(f"simulated cell {k} ({label}) does not spike on short squares; adjust parameters")
        r = rheobase_index[k]
        last = r + protocol.n_above_rheobase
        if protocol.keep_all_long_squares:
            sweeps = ls[:last + 1]
        else:  # hyperpolarising sweeps, the last subthreshold one and rheobase .. +120 pA
            sweeps = [ls[j] for j, a in enumerate(ls_amps) if a < 0 or j == r - 1 or r <= j <= last]
        j = ss_spiking[0]
        sweeps += ([ss[j - 1]] if j > 0 else []) + [ss[j]] * protocol.ss_repeats
        if include_ramp:
            sweeps += [(ramps[k][0], ramps[k][1], v_ramps[k])] * protocol.n_ramps
        noisy = [(code, i, (v + rng.normal(0.0, noise_mv, v.shape)).astype(protocol.dtype))
                 for code, i, v in sweeps]
        recordings.append(CellRecording(cell_id=f"cell{seed:03d}_{k:03d}", label=label, sweeps=noisy,
                                        protocol=protocol))
    return recordings


def _make_series(sweep_number: int, code: str, i_pa: np.ndarray, v_mv: np.ndarray, electrode, compress: bool,
                 protocol: Protocol = SMALL):
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb.icephys import CurrentClampSeries, CurrentClampStimulusSeries

    def wrap(x):
        x = np.asarray(x, dtype=protocol.dtype)
        return H5DataIO(x, compression="gzip", compression_opts=4, shuffle=True) if compress else x

    stim = CurrentClampStimulusSeries(
        name=f"data_{sweep_number:05d}_DA0", data=wrap(i_pa), rate=protocol.sampling_rate,
        starting_time=0.0, electrode=electrode, gain=1.0, conversion=1e-12,
        stimulus_description=f"{code}_DA_0", sweep_number=np.uint32(sweep_number),
    )
    resp = CurrentClampSeries(
        name=f"data_{sweep_number:05d}_AD0", data=wrap(v_mv), rate=protocol.sampling_rate,
        starting_time=0.0, electrode=electrode, gain=1.0, conversion=1e-3,
        stimulus_description=f"{code}_DA_0", sweep_number=np.uint32(sweep_number),
        bias_current=0.0, bridge_balance=0.0, capacitance_compensation=0.0,
    )
    return stim, resp


def _new_sweep_table(nwbfile):
    """Create a SweepTable the way pynwb does for objects read from a file."""
    from pynwb.icephys import SweepTable

    table = SweepTable.__new__(SweepTable, parent=nwbfile, in_construct_mode=True)
    table.__init__(name="sweep_table")
    table._in_construct_mode = False
    return table


def write_cell_nwb(path: str | Path, recording: CellRecording, layout: str = "sweep_table",
                   compress: bool | None = None) -> Path:
    """Write one simulated cell as an NWB 2 file in the requested layout.

    ``compress`` defaults to the recording protocol's (gzip for the small
    fixtures, none for Allen-sized cells); data are written in the protocol's
    dtype (float32 or float64) at its sampling rate.
    """
    protocol = recording.protocol
    compress = protocol.compress if compress is None else compress
    from pynwb import NWBHDF5IO, NWBFile

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    path = Path(path)
    nwbfile = NWBFile(
        session_description=f"synthetic {recording.label} cell",
        identifier=str(uuid.uuid5(uuid.NAMESPACE_URL, recording.cell_id + layout)),
        session_start_time=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
        institution="ephys2tx synthetic",
    )
    device = nwbfile.create_device(name="amplifier")
    electrode = nwbfile.create_icephys_electrode(name="electrode_0", description="synthetic", device=device)
    table = _new_sweep_table(nwbfile) if layout == "sweep_table" else None
    for sweep_number, (code, i_pa, v_mv) in enumerate(recording.sweeps):
        stim, resp = _make_series(sweep_number, code, i_pa, v_mv, electrode, compress, protocol)
        if layout == "sweep_table":
            nwbfile.add_stimulus(stim)
            nwbfile.add_acquisition(resp)
            table.add_entry(stim)
            table.add_entry(resp)
        else:
            nwbfile.add_intracellular_recording(electrode=electrode, stimulus=stim, response=resp)
    if layout == "sweep_table":
        nwbfile.sweep_table = table
    else:
        n = len(recording.sweeps)
        sim = [nwbfile.add_icephys_simultaneous_recording(recordings=[k]) for k in range(n)]
        codes = [code for code, _, _ in recording.sweeps]
        for code in dict.fromkeys(codes):
            rows = [k for k, c in enumerate(codes) if c == code]
            nwbfile.add_icephys_sequential_recording(simultaneous_recordings=[sim[k] for k in rows],
                                                     stimulus_type=code)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def write_nwb1_file(path: str | Path) -> Path:
    """Write a minimal HDF5 file with the NWB 1 layout (``nwb_version`` NWB-1.0.5)."""
    import h5py

    path = Path(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("nwb_version", data=np.bytes_("NWB-1.0.5"))
        f.attrs["nwb_version"] = "NWB-1.0.5"
        f.create_dataset("session_start_time", data=np.bytes_("2015-01-01T00:00:00"))
        f.create_group("general")
        sweep = f.create_group("acquisition/timeseries/Sweep_0")
        sweep.create_dataset("data", data=np.zeros(100, dtype=np.float32))
        f.create_group("stimulus/presentation")
    return path


def write_truncated_copy(source: str | Path, target: str | Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of the bytes of ``source`` (a broken download)."""
    data = Path(source).read_bytes()
    target = Path(target)
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def generate_cells(out_dir: str | Path, labels: Iterable[str], layout: str = "sweep_table",
                   seed: int = 0, include_ramp: bool = True, protocol: Protocol = SMALL) -> list[tuple[Path, str]]:
    """Simulate cells and write one NWB file per cell.

    Returns
    -------
    list of (path, label)
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recordings = simulate_cells(list(labels), seed=seed, include_ramp=include_ramp, protocol=protocol)
    return [(write_cell_nwb(out_dir / f"{rec.cell_id}_{rec.label}_{layout}.nwb", rec, layout=layout), rec.label)
            for rec in recordings]


def standard_fixture_set(root: str | Path, n_per_type: int = 3, seed: int = 0) -> dict:
    """Write (once; reused if present) the NWB fixture set used by the tests.

    ``n_per_type`` Pvalb and Sst cells in the Allen layout plus one of each in
    the IntracellularRecordingsTable layout, one cell without a ramp, an
    adapting cell that does not fire on its ramp, an NWB 1 file and a
    truncated file.

    Returns
    -------
    dict
        ``good`` (list of (path, label)), ``no_ramp``, ``no_ramp_spike``, ``nwb1``, ``truncated`` paths.
    """
    import json

    root = Path(root)
    manifest = root / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        return {"good": [(Path(p), lab) for p, lab in data["good"]],
                **{k: Path(v) for k, v in data.items() if k != "good"}}
    root.mkdir(parents=True, exist_ok=True)
    labels = ["Pvalb", "Sst"] * n_per_type + ["Pvalb", "Sst", "Sst"]
    recs = simulate_cells(labels, seed=seed)
    good = []
    for k, rec in enumerate(recs[:-1]):
        layout = "sweep_table" if k < 2 * n_per_type else "icephys_table"
        good.append((write_cell_nwb(root / f"{rec.cell_id}_{rec.label}_{layout}.nwb", rec, layout=layout),
                     rec.label))
    no_ramp_rec = dataclasses.replace(recs[-1], cell_id="no_ramp",
                                      sweeps=[s for s in recs[-1].sweeps if s[0] != RAMP_CODE])
    # An adapting cell whose ramp stays below rheobase: ipfx accepts it (ramp AP waveform = zeros).
    quiet = simulate_cells(["Sst"], seed=seed + 100,
                           protocol=dataclasses.replace(SMALL, ramp_peak_x_rheobase=0.5))[0]
    paths = {
        "no_ramp": write_cell_nwb(root / "no_ramp.nwb", no_ramp_rec),
        "no_ramp_spike": write_cell_nwb(root / "adapting_no_ramp_spike.nwb", quiet),
        "nwb1": write_nwb1_file(root / "nwb1_cell.nwb"),
        "truncated": write_truncated_copy(good[0][0], root / "truncated.nwb"),
    }
    manifest.write_text(json.dumps({"good": [(str(p), lab) for p, lab in good],
                                    **{k: str(v) for k, v in paths.items()}}))
    return {"good": good, **paths}


def allen_fixture_set(root: str | Path, protocol: Protocol = ALLEN_50K, seed: int = 7,
                      layouts: Sequence[str] = LAYOUTS) -> dict:
    """Write (once; reused if present) Allen-sized simulated cells in each layout.

    Three cells: fast-spiking (Pvalb-like), adapting (Sst-like) and an adapting
    cell whose ramp peaks at half its rheobase (so it never fires on the ramp),
    each written in every layout of ``layouts``.

    Returns
    -------
    dict
        ``{layout: [(path, kind), ...]}`` with kind ``fast_spiking``,
        ``adapting`` or ``adapting_no_ramp_spike``.
    """
    import json

    root = Path(root)
    manifest = root / f"manifest_{protocol.name}.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        return {layout: [(Path(p), kind) for p, kind in cells] for layout, cells in data.items()}
    root.mkdir(parents=True, exist_ok=True)
    spiking = simulate_cells(["Pvalb", "Sst"], seed=seed, protocol=protocol)
    quiet = simulate_cells(["Sst"], seed=seed + 1,
                           protocol=dataclasses.replace(protocol, ramp_peak_x_rheobase=0.5))
    recordings = list(zip(["fast_spiking", "adapting", "adapting_no_ramp_spike"], spiking + quiet))
    out = {}
    for layout in layouts:
        out[layout] = [(write_cell_nwb(root / f"{protocol.name}_{kind}_{layout}.nwb", rec, layout=layout), kind)
                       for kind, rec in recordings]
    manifest.write_text(json.dumps({k: [(str(p), kind) for p, kind in v] for k, v in out.items()}))
    return out
