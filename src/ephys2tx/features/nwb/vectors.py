"""Per-cell IPFX feature vectors (12 families) and summary features.

The sweep handling follows ``ipfx.bin.run_feature_vector_extraction.
data_for_specimen_id`` (the path used for Gouwens et al. 2019/2020 and Allen
drcme) and reuses ipfx for everything: sweep selection via the stimulus
ontology, spike detection and the long/short square and ramp analyses.  The
same analyses also feed ``ipfx.feature_record.build_cell_feature_record`` for
the summary features, so spikes are detected once per cell.

``inst_freq_norm`` is ``inst_freq`` divided by the cell's maximal instantaneous
frequency (as the drcme "inst_freq_norm" data set): the shape of the rate
curves independent of their scale.
"""

from __future__ import annotations

import numpy as np

from .adapter import CellFailure, close_data_set, default_ontology, install_ipfx_memoization, open_data_set

FAMILIES = (
    "first_ap_v", "first_ap_dv", "isi_shape", "step_subthresh", "subthresh_norm", "inst_freq",
    "inst_freq_norm", "spiking_upstroke_downstroke_ratio", "spiking_peak_v", "spiking_fast_trough_v",
    "spiking_threshold_v", "spiking_width",
)
SPIKE_FEATURES = ("upstroke_downstroke_ratio", "peak_v", "fast_trough_v", "threshold_v", "width")
TARGET_SAMPLING_RATE = 50_000
STEP_SUBTHRESH_AMPS = (-90, -70, -50, -30, -10)
SUPRA_TARGET_AMPS = np.arange(0, 120, 20)

# Compact layout: family -> (number of segments, values per segment); 498 in total.
# Segments are the sub-vectors ipfx concatenates (3 AP waveforms; 5 hyperpolarising
# steps; 6 suprathreshold amplitudes) and are block-averaged separately, so the
# family structure (and segment boundaries) survive the resampling.
COMPACT_LAYOUT = {
    "first_ap_v": (3, 22), "first_ap_dv": (3, 22), "isi_shape": (1, 20), "step_subthresh": (5, 10),
    "subthresh_norm": (1, 20), "inst_freq": (6, 8), "inst_freq_norm": (6, 8),
    **{f"spiking_{name}": (6, 6) for name in SPIKE_FEATURES},
}


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
    """Resample each family to its ``COMPACT_LAYOUT`` length (498 values in total)."""
    return {name: block_average(vectors[name], *COMPACT_LAYOUT[name]) for name in FAMILIES}


def _stage(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except CellFailure:
        raise
    except Exception as exc:
        raise CellFailure(f"{what}: {type(exc).__name__}: {exc}") from exc


def extract_cell(path, ap_window: float = 0.003, compact: bool = False, ontology=None,
                 summary: bool = True, reader: str = "h5py") -> dict:
    """Compute the 12 feature-vector families and IPFX summary features of one cell.

    The file is opened once; each sweep is read once and analysed once by
    ipfx, and the same analyses feed both the vectors and the summary.

    Parameters
    ----------
    path : str or Path
        NWB 2 file (either icephys layout) of one cell.
    ap_window : float
        Length (s) of the AP waveform window after threshold.
    compact : bool
        Resample the families to ``COMPACT_LAYOUT`` (498 values).
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
        (``summary`` is empty when ``summary=False``).

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
    import ipfx.feature_vectors as fv
    import ipfx.script_utils as su

    def sweeps_of(names, kind):
        numbers = _stage(f"reading {kind} sweeps", su.categorize_iclamp_sweeps, data_set, names)
        if len(numbers) == 0:
            raise CellFailure(f"no {kind} sweep (stimulus codes known to ipfx's ontology) in file")
        return numbers

    lsq_numbers = sweeps_of(ontology.long_square_names, "long square")
    ssq_numbers = sweeps_of(ontology.short_square_names, "short square")
    ramp_numbers = sweeps_of(ontology.ramp_names, "ramp")

    lsq_sweeps, lsq_features, lsq_an, lsq_start, lsq_end = _stage(
        "long square analysis", su.preprocess_long_square_sweeps, data_set, lsq_numbers)
    if lsq_features.get("rheobase_sweep") is None or lsq_features.get("spiking_sweeps") is None \
            or len(lsq_features["spiking_sweeps"]) == 0:
        raise CellFailure("no suprathreshold long square sweep (no spikes detected on any long square)")
    ssq_sweeps, ssq_features, ssq_an = _stage(
        "short square analysis", su.preprocess_short_square_sweeps, data_set, ssq_numbers)
    ramp_sweeps, ramp_features, ramp_an = _stage(
        "ramp analysis", su.preprocess_ramp_sweeps, data_set, ramp_numbers)
    if len(ramp_features.get("spiking_sweeps", [])) == 0:
        raise CellFailure("no ramp sweep with spikes")
    if len(ssq_features.get("common_amp_sweeps", [])) == 0:
        raise CellFailure("no repeated suprathreshold short square sweeps")

    def vectors():
        out = {}
        hyperpol, hyperpol_deflect = fv.identify_subthreshold_hyperpol_with_amplitudes(lsq_features, lsq_sweeps)
        out["step_subthresh"] = fv.step_subthreshold(hyperpol, list(STEP_SUBTHRESH_AMPS), lsq_start, lsq_end,
                                                     amp_tolerance=5)
        out["subthresh_norm"] = fv.subthresh_norm(hyperpol, hyperpol_deflect, lsq_start, lsq_end)
        isi_sweep, isi_info = fv.identify_sweep_for_isi_shape(lsq_sweeps, lsq_features, lsq_end - lsq_start)
        out["isi_shape"] = fv.isi_shape(isi_sweep, isi_info, lsq_end)

        ssq_idx = ssq_features["common_amp_sweeps"].index
        ssq_v, ssq_dv = fv.first_ap_vectors(
            [ssq_sweeps.sweeps[i] for i in ssq_idx], [ssq_features["spikes_set"][i] for i in ssq_idx],
            target_sampling_rate=TARGET_SAMPLING_RATE, window_length=ap_window, skip_clipped=True)
        rheo = lsq_features["rheobase_sweep"].name
        lsq_v, lsq_dv = fv.first_ap_vectors(
            [lsq_sweeps.sweeps[rheo]], [lsq_features["spikes_set"][rheo]],
            target_sampling_rate=TARGET_SAMPLING_RATE, window_length=ap_window)
        ramp_idx = ramp_features["spiking_sweeps"].index
        ramp_v, ramp_dv = fv.first_ap_vectors(
            [ramp_sweeps.sweeps[i] for i in ramp_idx], [ramp_features["spikes_set"][i] for i in ramp_idx],
            target_sampling_rate=TARGET_SAMPLING_RATE, window_length=ap_window, skip_clipped=True)
        out["first_ap_v"] = np.hstack([ssq_v, lsq_v, ramp_v])
        out["first_ap_dv"] = np.hstack([ssq_dv, lsq_dv, ramp_dv])

        supra = fv.identify_suprathreshold_spike_info(lsq_features, SUPRA_TARGET_AMPS, shift=10)
        inst_freq = np.asarray(fv.inst_freq_vector(supra, lsq_start, lsq_end), dtype=np.float64)
        out["inst_freq"] = inst_freq
        peak = np.nanmax(inst_freq) if np.any(np.isfinite(inst_freq)) else np.nan
        out["inst_freq_norm"] = inst_freq / peak if peak and np.isfinite(peak) else np.full_like(inst_freq, np.nan)
        for name in SPIKE_FEATURES:
            out[f"spiking_{name}"] = fv.spike_feature_vector(name, supra, lsq_start, lsq_end)
        return {name: np.asarray(out[name], dtype=np.float64).ravel() for name in FAMILIES}

    result = _stage("feature vectors", vectors)
    if compact:
        result = _stage("compact resampling", compact_vectors, result)

    summary_features = _stage("summary features", _summary, lsq_sweeps, lsq_features, lsq_an,
                              ssq_features, ramp_features) if summary else {}
    return {"vectors": result, "summary": summary_features, "layout": layout}


def _summary(lsq_sweeps, lsq_features, lsq_an, ssq_features, ramp_features) -> dict:
    """IPFX summary features via ``ipfx.feature_record.build_cell_feature_record``.

    ``build_cell_feature_record`` reads only scalar features, the rheobase and
    hero sweeps and the ``mean_spike_0`` dicts, so only those are converted
    (``LongSquareAnalysis.as_dict`` would convert every sweep's spike table to
    dicts, which costs more than the record itself); the values are identical.
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
        "short_squares": {k: v for k, v in ssq_features.items() if k not in frames + ("common_amp_sweeps",)},
        "ramps": {k: v for k, v in ramp_features.items() if k not in frames},
    }
    record = fr.build_cell_feature_record(cell_features)
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            and not k.endswith("sweep_num")}
