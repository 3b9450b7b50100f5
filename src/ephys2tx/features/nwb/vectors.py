"""Per-cell IPFX feature vectors (14 families) and summary features.

The sweep handling follows ``ipfx.bin.run_feature_vector_extraction.
data_for_specimen_id`` (the path used for Gouwens et al. 2019/2020 and Allen
drcme) step by step and reuses ipfx for everything: sweep selection via the
stimulus ontology, spike detection and the long/short square and ramp
analyses.  A cell is accepted exactly when ipfx accepts it: e.g. a cell that
never fires on the ramp is accepted, and the ramp part of ``first_ap_v`` /
``first_ap_dv`` is then what ipfx's ``first_ap_vectors`` returns for no
spiking sweep (zeros).  The same analyses also feed
``ipfx.feature_record.build_cell_feature_record`` for the summary features,
so spikes are detected once per cell.

The 13 families of ``data_for_specimen_id`` are computed with ipfx's own
functions and arguments; ``inst_freq_norm`` is added: ``inst_freq`` divided by
the cell's maximal instantaneous frequency (as the drcme "inst_freq_norm" data
set), the shape of the rate curves independent of their scale.
"""

from __future__ import annotations

import numpy as np

from .adapter import CellFailure, close_data_set, default_ontology, install_ipfx_memoization, open_data_set

#: Every family, in table order: ipfx's 13 (``data_for_specimen_id``) plus ``inst_freq_norm``.
FAMILIES = (
    "first_ap_v", "first_ap_dv", "isi_shape", "step_subthresh", "subthresh_norm", "subthresh_depol_norm",
    "psth", "inst_freq", "inst_freq_norm", "spiking_upstroke_downstroke_ratio", "spiking_peak_v",
    "spiking_fast_trough_v", "spiking_threshold_v", "spiking_width",
)
#: The families that ``ipfx.bin.run_feature_vector_extraction.data_for_specimen_id`` returns.
IPFX_FAMILIES = tuple(f for f in FAMILIES if f != "inst_freq_norm")
SPIKE_FEATURES = ("upstroke_downstroke_ratio", "peak_v", "fast_trough_v", "threshold_v", "width")
TARGET_SAMPLING_RATE = 50_000
STEP_SUBTHRESH_AMPS = (-90, -70, -50, -30, -10)
SUPRA_TARGET_AMPS = np.arange(0, 120, 20)

# Compact layout: family -> (number of segments, values per segment); 498 in total.
# Segments are the sub-vectors ipfx concatenates (3 AP waveforms; 5 hyperpolarising
# steps; 6 suprathreshold amplitudes) and are block-averaged separately, so the
# family structure (and segment boundaries) survive the resampling.  The compact
# table is a documented subset: the 12 families of the seed study (psth and
# subthresh_depol_norm are left out).
COMPACT_LAYOUT = {
    "first_ap_v": (3, 22), "first_ap_dv": (3, 22), "isi_shape": (1, 20), "step_subthresh": (5, 10),
    "subthresh_norm": (1, 20), "inst_freq": (6, 8), "inst_freq_norm": (6, 8),
    **{f"spiking_{name}": (6, 6) for name in SPIKE_FEATURES},
}
#: Families of a ``compact=True`` table, in table order.
COMPACT_FAMILIES = tuple(f for f in FAMILIES if f in COMPACT_LAYOUT)

#: Spike features of the cell record, for each of the three stimulus kinds.
_RECORD_SPIKE_FEATURES = ("upstroke_downstroke_ratio", "peak_v", "peak_t", "trough_v", "trough_t",
                          "fast_trough_v", "fast_trough_t", "slow_trough_v", "slow_trough_t",
                          "threshold_v", "threshold_i", "threshold_t")
#: The fixed summary schema: every numeric feature of ``ipfx.feature_record.build_cell_feature_record``
#: (sweep numbers excluded), always present; NaN where ipfx gives None.  ipfx overwrites the
#: short square's ``threshold_i`` with the stimulus amplitude, so the names are unique (45).
SUMMARY_FEATURES = tuple(dict.fromkeys((
    "vrest", "ri", "sag", "tau", "vm_for_sag", "f_i_curve_slope", "adaptation", "latency", "avg_isi",
    *(f"{name}_{kind}" for kind in ("long_square", "ramp", "short_square") for name in _RECORD_SPIKE_FEATURES),
    "threshold_i_short_square",
)))


def block_average(vector: np.ndarray, n_segments: int, n_out: int) -> np.ndarray:
    """Split ``vector`` into ``n_segments`` equal parts and average each into ``n_out`` bins."""
    vector = np.asarray(vector, dtype=np.float64)
    if vector.size % n_segments:
        raise ValueError(f"vector of length {vector.size} does not split into {n_segments} segments")
    out = []
    for segment in np.split(vector, n_segments):
        if segment.size < n_out:  # upsample short segments by linear interpolation
            x = np.linspace(0, segment.size - 1, n_out)
            out.append(np.interp(x, np.arange(segment.size), segment))
            continue
        for chunk in np.array_split(segment, n_out):
            finite = chunk[np.isfinite(chunk)]
            out.append(finite.mean() if finite.size else np.nan)
    return np.asarray(out)


def compact_vectors(vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Resample the :data:`COMPACT_FAMILIES` to their ``COMPACT_LAYOUT`` lengths (498 values in total)."""
    return {name: block_average(vectors[name], *COMPACT_LAYOUT[name]) for name in COMPACT_FAMILIES}


def _stage(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except CellFailure:
        raise
    except Exception as exc:
        raise CellFailure(f"{what}: {type(exc).__name__}: {exc}") from exc


def _no_stimulus_is_a_failure(preprocess, what: str):
    """``preprocess(data_set, numbers)`` with ipfx's crash on sweeps without a stimulus made a reason.

    ipfx 2.1.2's ``validate_sweeps`` returns a plain list when no sweep has a
    stimulus (zero, or zeroed by a conversion factor of 0), and
    ``preprocess_*_sweeps`` then fails with "'list' object has no attribute 'sweeps'".
    """
    def run(data_set, numbers):
        try:
            return preprocess(data_set, numbers)
        except AttributeError as exc:
            if "'list' object has no attribute 'sweeps'" not in str(exc):
                raise
            raise CellFailure(f"{what} analysis: none of the {len(numbers)} {what} sweep(s) has both a stimulus "
                              "and a recorded response (the command current is constant, or the response is NaN "
                              "or zero from its start, as in an aborted sweep): check the data and the series' "
                              "conversion factors") from exc
    return run


def extract_cell(path, ap_window: float = 0.003, compact: bool = False, ontology=None,
                 summary: bool = True, reader: str = "h5py") -> dict:
    """Compute the 14 feature-vector families and IPFX summary features of one cell.

    The file is opened once; each sweep is read once and analysed once by
    ipfx, and the same analyses feed both the vectors and the summary.

    Parameters
    ----------
    path : str or Path
        NWB 2 file (either icephys layout) of one cell.
    ap_window : float
        Length (s) of the AP waveform window after threshold.
    compact : bool
        Only the 12 :data:`COMPACT_FAMILIES`, resampled to ``COMPACT_LAYOUT`` (498 values).
    ontology : ipfx.stimulus.StimulusOntology, optional
        Defaults to ipfx's default ontology.
    summary : bool
        Also compute the IPFX summary features (``ipfx.feature_record``).
    reader : {"h5py", "pynwb"}
        NWB reading path, see :func:`ephys2tx.features.nwb.adapter.open_data_set`.

    Returns
    -------
    dict
        ``{"vectors": {family: 1-d array}, "summary": {name: float}, "layout": str}``
        (``summary`` has every key of :data:`SUMMARY_FEATURES`, NaN where ipfx
        gives None; it is empty when ``summary=False``).

    Raises
    ------
    CellFailure
        With the reason when the cell cannot be extracted.
    """
    install_ipfx_memoization()
    ontology = ontology if ontology is not None else default_ontology()
    data_set, layout = open_data_set(path, ontology, reader=reader)
    try:
        return _extract_from_data_set(data_set, layout, ontology, ap_window, compact, summary)
    finally:
        close_data_set(data_set)


def _extract_from_data_set(data_set, layout, ontology, ap_window, compact, summary) -> dict:
    import ipfx.script_utils as su

    modes = set(data_set.sweep_table["clamp_mode"]) if "clamp_mode" in data_set.sweep_table else set()
    if modes and "CurrentClamp" not in modes:
        raise CellFailure(f"no current-clamp sweep ({len(data_set.sweep_table)} sweep(s), all "
                          f"{' / '.join(sorted(map(str, modes)))}): features are extracted from "
                          "current-clamp recordings only")
    # Same order and calls as data_for_specimen_id: long squares, short squares, ramps.
    # ipfx raises (FeatureError, ValueError) where it rejects a cell; the message
    # becomes the recorded failure reason.
    lsq_numbers = _stage("long square sweeps", su.categorize_iclamp_sweeps, data_set, ontology.long_square_names)
    lsq_sweeps, lsq_features, lsq_an, lsq_start, lsq_end = _stage(
        "long square analysis", _no_stimulus_is_a_failure(su.preprocess_long_square_sweeps, "long square"),
        data_set, lsq_numbers)
    ssq_numbers = _stage("short square sweeps", su.categorize_iclamp_sweeps, data_set, ontology.short_square_names)
    ssq_sweeps, ssq_features, ssq_an = _stage(
        "short square analysis", _no_stimulus_is_a_failure(su.preprocess_short_square_sweeps, "short square"),
        data_set, ssq_numbers)
    ramp_numbers = _stage("ramp sweeps", su.categorize_iclamp_sweeps, data_set, ontology.ramp_names)
    ramp_sweeps, ramp_features, ramp_an = _stage(
        "ramp analysis", su.preprocess_ramp_sweeps, data_set, ramp_numbers)

    result = _stage("feature vectors", feature_vectors, lsq_sweeps, lsq_features, lsq_start, lsq_end,
                    ssq_sweeps, ssq_features, ramp_sweeps, ramp_features, ap_window)
    if compact:
        result = _stage("compact resampling", compact_vectors, result)
    summary_features = _stage("summary features", _summary, lsq_sweeps, lsq_features, lsq_an,
                              ssq_features, ramp_features) if summary else {}
    return {"vectors": result, "summary": summary_features, "layout": layout}


def feature_vectors(lsq_sweeps, lsq_features, lsq_start, lsq_end, ssq_sweeps=None, ssq_features=None,
                    ramp_sweeps=None, ramp_features=None, ap_window: float = 0.003) -> dict[str, np.ndarray]:
    """The feature-vector families from ipfx's analyses, as ``data_for_specimen_id`` computes them.

    Parameters
    ----------
    lsq_sweeps, lsq_features, lsq_start, lsq_end
        Output of ``ipfx.script_utils.preprocess_long_square_sweeps``.
    ssq_sweeps, ssq_features : optional
        Output of ``preprocess_short_square_sweeps``; None when the recording
        has no short squares (e.g. an ABF step protocol).
    ramp_sweeps, ramp_features : optional
        Output of ``preprocess_ramp_sweeps``; None when there is no ramp.
    ap_window : float
        AP waveform window (s).

    Returns
    -------
    dict
        Family -> 1-d float64 array. Without short squares or ramps, their
        thirds of ``first_ap_v``/``first_ap_dv`` are NaN (ipfx has no
        definition for a missing protocol; zeros would claim a flat AP).
    """
    import ipfx.feature_vectors as fv

    out = {}
    hyperpol, hyperpol_deflect = fv.identify_subthreshold_hyperpol_with_amplitudes(lsq_features, lsq_sweeps)
    out["step_subthresh"] = fv.step_subthreshold(hyperpol, list(STEP_SUBTHRESH_AMPS), lsq_start, lsq_end,
                                                 amp_tolerance=5)
    out["subthresh_norm"] = fv.subthresh_norm(hyperpol, hyperpol_deflect, lsq_start, lsq_end)
    depol, depol_deflect = fv.identify_subthreshold_depol_with_amplitudes(lsq_features, lsq_sweeps)
    out["subthresh_depol_norm"] = fv.subthresh_depol_norm(depol, depol_deflect, np.round(lsq_start, decimals=3),
                                                          np.round(lsq_end, decimals=3))
    isi_sweep, isi_info = fv.identify_sweep_for_isi_shape(lsq_sweeps, lsq_features, lsq_end - lsq_start)
    out["isi_shape"] = fv.isi_shape(isi_sweep, isi_info, lsq_end)

    def first_aps(sweeps, features, key, **kwargs):
        if sweeps is None:  # protocol absent from the recording
            n = int(TARGET_SAMPLING_RATE * ap_window)
            return np.full(n, np.nan), np.full(n - 1, np.nan)
        idx = features[key].index
        return fv.first_ap_vectors([sweeps.sweeps[i] for i in idx], [features["spikes_set"][i] for i in idx],
                                   target_sampling_rate=TARGET_SAMPLING_RATE, window_length=ap_window, **kwargs)

    ssq_v, ssq_dv = first_aps(ssq_sweeps, ssq_features, "common_amp_sweeps", skip_clipped=True)
    rheo = lsq_features["rheobase_sweep"].name
    lsq_v, lsq_dv = fv.first_ap_vectors(
        [lsq_sweeps.sweeps[rheo]], [lsq_features["spikes_set"][rheo]],
        target_sampling_rate=TARGET_SAMPLING_RATE, window_length=ap_window)
    ramp_v, ramp_dv = first_aps(ramp_sweeps, ramp_features, "spiking_sweeps", skip_clipped=True)
    out["first_ap_v"] = np.hstack([ssq_v, lsq_v, ramp_v])
    out["first_ap_dv"] = np.hstack([ssq_dv, lsq_dv, ramp_dv])

    supra = fv.identify_suprathreshold_spike_info(lsq_features, SUPRA_TARGET_AMPS, shift=10)
    out["psth"] = fv.psth_vector(supra, lsq_start, lsq_end)
    inst_freq = np.asarray(fv.inst_freq_vector(supra, lsq_start, lsq_end), dtype=np.float64)
    out["inst_freq"] = inst_freq
    peak = np.nanmax(inst_freq) if np.any(np.isfinite(inst_freq)) else np.nan
    out["inst_freq_norm"] = inst_freq / peak if peak and np.isfinite(peak) else np.full_like(inst_freq, np.nan)
    for name in SPIKE_FEATURES:
        out[f"spiking_{name}"] = fv.spike_feature_vector(name, supra, lsq_start, lsq_end)
    return {name: np.asarray(out[name], dtype=np.float64).ravel() for name in FAMILIES}


def _summary(lsq_sweeps, lsq_features, lsq_an, ssq_features, ramp_features) -> dict:
    """IPFX summary features via ``ipfx.feature_record.build_cell_feature_record``.

    ``build_cell_feature_record`` reads only scalar features, the rheobase and
    hero sweeps and the ``mean_spike_0`` dicts, so only those are converted
    (``LongSquareAnalysis.as_dict`` would convert every sweep's spike table to
    dicts, which costs more than the record itself); the values are identical.
    ``ssq_features``/``ramp_features`` may be None (protocol absent): their
    features are then NaN. Returns every key of :data:`SUMMARY_FEATURES`,
    NaN where ipfx gives None.
    """
    import ipfx.feature_record as fr

    sweep_numbers = [dict(sweep_number=s.sweep_number) for s in lsq_sweeps.sweeps]
    frames = ("sweeps", "spikes_set", "subthreshold_membrane_property_sweeps", "subthreshold_sweeps",
              "spiking_sweeps")
    long_squares = {k: v for k, v in lsq_features.items() if k not in frames}
    for key in ("hero_sweep", "rheobase_sweep"):
        long_squares[key] = lsq_an._sweep_to_dict(lsq_features[key], sweep_numbers)
    cell_features = {
        "long_squares": long_squares,
        "short_squares": {} if ssq_features is None else
        {k: v for k, v in ssq_features.items() if k not in frames + ("common_amp_sweeps",)},
        "ramps": {} if ramp_features is None else {k: v for k, v in ramp_features.items() if k not in frames},
    }
    record = fr.build_cell_feature_record(cell_features)
    return {k: _as_float(record.get(k)) for k in SUMMARY_FEATURES}


def _as_float(value) -> float:
    if value is None or isinstance(value, bool):
        return float("nan")
    return float(value)
