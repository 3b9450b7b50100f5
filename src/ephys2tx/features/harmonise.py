"""Cross-species harmonisation: mouse VISp (Allen Cell Types naming) -> human IPFX naming.

The map is declarative: each harmonised feature names its IPFX target, the VISp
columns it is computed from, and the conversion (unit scale, difference to
threshold, sign). :func:`verify_on_bridge` checks every mapped feature on the
cells measured in both the VISp table and the mouse L1 bridge table (the same
cells, named in both schemas) and reports Pearson r and the median absolute
difference. Only features with r >= :data:`MIN_BRIDGE_R` are used by the
transfer models (:func:`harmonised_features`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ephys2tx.errors import InputError

#: A mapped feature is kept only if its bridge correlation reaches this.
MIN_BRIDGE_R = 0.9

_MV = "(millivolts)"


@dataclass(frozen=True)
class FeatureMapping:
    """One harmonised feature.

    Attributes
    ----------
    target : str
        IPFX (human table) column name.
    source : str
        VISp column.
    minus : str or None
        VISp column subtracted from ``source`` (e.g. threshold, for IPFX's
        ``*_deltav_*`` features expressed relative to threshold).
    scale : float
        Multiplier applied last (e.g. 1e-3 for ms -> s; -1 for a sign flip).
    conversion : str
        Human-readable description, for the docs.
    """

    target: str
    source: str
    minus: str | None = None
    scale: float = 1.0
    conversion: str = "identity"

    def apply(self, table: pd.DataFrame) -> pd.Series:
        """Compute the target from a VISp-named table."""
        for col in (self.source, self.minus):
            if col is not None and col not in table.columns:
                raise InputError(f"harmonisation of {self.target!r} needs column {col!r}, "
                                 "which the mouse table does not have.")
        values = table[self.source].astype(float)
        if self.minus is not None:
            values = values - table[self.minus].astype(float)
        return (values * self.scale).rename(self.target)


def _delta(target: str, kind: str, stim: str) -> FeatureMapping:
    return FeatureMapping(target, f"{kind} V ({stim}) {_MV}", f"Threshold V ({stim}) {_MV}",
                          conversion=f"{kind} V − Threshold V ({stim}), mV")


#: Every candidate mapping, verified or not (see docs/harmonisation.md for the measured r).
MOUSE_TO_HUMAN: tuple[FeatureMapping, ...] = (
    FeatureMapping("threshold_v_ramp", f"Threshold V (ramp) {_MV}", conversion="mV"),
    FeatureMapping("upstroke_downstroke_ratio_ramp", "Upstroke/downstroke ratio (ramp)"),
    FeatureMapping("threshold_i_ramp", "Threshold I (ramp) (picoamps)", conversion="pA"),
    _delta("peak_deltav_ramp", "Peak", "ramp"),
    _delta("fast_trough_deltav_ramp", "Fast trough", "ramp"),
    _delta("trough_deltav_ramp", "Trough", "ramp"),
    FeatureMapping("threshold_v_short_square", f"Threshold V (short square) {_MV}", conversion="mV"),
    FeatureMapping("upstroke_downstroke_ratio_short_square", "Upstroke/downstroke ratio (short square)"),
    _delta("peak_deltav_short_square", "Peak", "short square"),
    FeatureMapping("threshold_v_rheo", f"Threshold V (long square) {_MV}", conversion="mV"),
    FeatureMapping("upstroke_downstroke_ratio_rheo", "Upstroke/downstroke ratio (long square)"),
    _delta("peak_deltav_rheo", "Peak", "long square"),
    FeatureMapping("fast_trough_deltav_rheo", "After hyperpolarization (mV)", scale=-1.0,
                   conversion="− After hyperpolarization, mV"),
    _delta("trough_deltav_rheo", "Trough", "long square"),
    FeatureMapping("rheobase_i", "Threshold I (long square) (picoamps)", conversion="pA"),
    FeatureMapping("width_rheo", "AP width (ms)", scale=1e-3, conversion="ms → s"),
    FeatureMapping("upstroke_rheo", "AP maximum rate of rise (Upstroke) (mV/ms)", conversion="mV/ms"),
    FeatureMapping("latency_rheo", "Latency", conversion="s"),
    FeatureMapping("v_baseline", "Resting membrane potential (mV)", conversion="mV"),
    FeatureMapping("input_resistance", "Input resistance (MΩ)", conversion="MΩ"),
    FeatureMapping("tau", "tau", scale=1e-3, conversion="ms → s"),
    FeatureMapping("sag", "Sag ratio"),
    FeatureMapping("fi_fit_slope", "F I curve slope", conversion="Hz/pA"),
    FeatureMapping("adapt_hero", "Adaptation ratio"),
    FeatureMapping("mean_isi_hero", "Avg ISI", scale=1e-3, conversion="ms → s"),
)


#: IPFX features the bridge table lacks but can be computed from its own columns
#: (IPFX's ``*_deltav_*`` features are relative to the AP threshold).
BRIDGE_DERIVED: dict[str, tuple[str, str]] = {
    "trough_deltav_ramp": ("trough_v_ramp", "threshold_v_ramp"),
    "trough_deltav_rheo": ("trough_v_rheo", "threshold_v_rheo"),
}


def bridge_with_derived(bridge_features: pd.DataFrame) -> pd.DataFrame:
    """The bridge table plus the :data:`BRIDGE_DERIVED` columns it can compute."""
    out = bridge_features.copy()
    for target, (value, threshold) in BRIDGE_DERIVED.items():
        if target not in out.columns and {value, threshold} <= set(out.columns):
            out[target] = out[value].astype(float) - out[threshold].astype(float)
    return out


def convert_mouse(table: pd.DataFrame, mappings=MOUSE_TO_HUMAN) -> pd.DataFrame:
    """VISp-named features -> IPFX-named features (one column per mapping)."""
    return pd.concat([m.apply(table) for m in mappings], axis=1)


def verify_on_bridge(visp_features: pd.DataFrame, bridge_features: pd.DataFrame,
                     mappings=MOUSE_TO_HUMAN) -> pd.DataFrame:
    """Compare converted VISp values with the bridge table's own values, cell by cell.

    Parameters
    ----------
    visp_features : DataFrame
        VISp-named features, index = cell id.
    bridge_features : DataFrame
        IPFX-named features of the bridge table, index = the same cell ids.

    Returns
    -------
    DataFrame
        One row per mapping: target, source, conversion, n (cells with both
        values), pearson_r, median_abs_diff, bridge_median (scale reference)
        and ``kept`` (r >= MIN_BRIDGE_R).
    """
    common = visp_features.index.intersection(bridge_features.index)
    if len(common) == 0:
        raise InputError("no cell is in both the VISp and the bridge table; check the cell ids.")
    converted = convert_mouse(visp_features.loc[common], mappings)
    bridge_features = bridge_with_derived(bridge_features)
    rows = []
    for m in mappings:
        if m.target not in bridge_features.columns:
            rows.append({"target": m.target, "source": m.source, "conversion": m.conversion,
                         "n": 0, "pearson_r": np.nan, "median_abs_diff": np.nan,
                         "bridge_median": np.nan})
            continue
        a = converted[m.target]
        b = bridge_features.loc[common, m.target].astype(float)
        ok = a.notna() & b.notna() & np.isfinite(a) & np.isfinite(b)
        r = float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 2 else np.nan
        rows.append({
            "target": m.target, "source": m.source + (f" − {m.minus}" if m.minus else ""),
            "conversion": m.conversion, "n": int(ok.sum()), "pearson_r": r,
            "median_abs_diff": float(np.median(np.abs(a[ok] - b[ok]))),
            "bridge_median": float(np.median(b[ok])),
        })
    out = pd.DataFrame(rows)
    out["kept"] = out["pearson_r"] >= MIN_BRIDGE_R
    return out


#: The harmonised features used by the transfer models: every mapping whose bridge
#: correlation is >= MIN_BRIDGE_R (enforced on the real files by tests/test_harmonise.py).
#: Left out: threshold_v_short_square (r 0.85) and upstroke_downstroke_ratio_short_square
#: (r 0.85; the two tables pick different short-square sweeps), latency_rheo (r 0.39) and
#: mean_isi_hero (r 0.77; VISp ``Latency`` and ``Avg ISI`` come from other sweeps).
HARMONISED_FEATURES: tuple[str, ...] = (
    "threshold_v_ramp", "upstroke_downstroke_ratio_ramp", "threshold_i_ramp", "peak_deltav_ramp",
    "fast_trough_deltav_ramp", "trough_deltav_ramp", "peak_deltav_short_square",
    "threshold_v_rheo", "upstroke_downstroke_ratio_rheo", "peak_deltav_rheo",
    "fast_trough_deltav_rheo", "trough_deltav_rheo", "rheobase_i", "width_rheo", "upstroke_rheo",
    "v_baseline", "input_resistance", "tau", "sag", "fi_fit_slope", "adapt_hero",
)


def bridge_verification(data_dir=None, *, verify: bool = True) -> pd.DataFrame:
    """:func:`verify_on_bridge` on the real VISp and bridge tables (all VISp cells, held-out included)."""
    from ephys2tx.data.datasets import load_bridge_features, load_dataset

    visp = load_dataset("mouse_visp", data_dir, verify=verify, max_missing=1.0)
    parts = [visp.features] + ([visp.held_out.features] if visp.held_out is not None else [])
    return verify_on_bridge(pd.concat(parts), load_bridge_features(data_dir, verify=verify))


def harmonised_features(verification: pd.DataFrame) -> list[str]:
    """Targets that passed the bridge verification, in map order."""
    return verification.loc[verification["kept"], "target"].tolist()


def verification_markdown(verification: pd.DataFrame) -> str:
    """The verification table as Markdown (feature, conversion, n, r, median |difference|, kept)."""
    table = verification[["target", "source", "conversion", "n", "pearson_r", "median_abs_diff",
                          "bridge_median", "kept"]].copy()
    table["pearson_r"] = table["pearson_r"].map(lambda v: f"{v:.4f}")
    for col in ("median_abs_diff", "bridge_median"):
        table[col] = table[col].map(lambda v: f"{v:.3g}")
    return table.rename(columns={"target": "IPFX feature", "source": "VISp columns",
                                 "median_abs_diff": "median abs. difference"}).to_markdown(index=False)
