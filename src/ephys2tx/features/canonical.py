"""Canonical feature names: the IPFX summary features of the human table, with units and ranges.

Every table a user brings is mapped onto these names (see
:mod:`ephys2tx.features.column_map`). Each canonical feature has the unit IPFX
uses (voltages in mV, times in s, currents in pA, resistances in MΩ, slopes
in mV/ms, impedances in GΩ) and a plausible range for one cell's value. The
ranges are wide (they cover the human and mouse reference cells), yet narrow
enough that a column in the wrong unit (ms for s, V for mV, nA for pA) has a
median outside them: :func:`check_units` catches it and names the conversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ephys2tx.errors import InputError
from ephys2tx.schemas import HUMAN_IPFX_SCHEMA

__all__ = [
    "CANONICAL_FEATURES",
    "UNITS",
    "CanonicalFeature",
    "UnitIssue",
    "MixedUnitsIssue",
    "canonical_names",
    "check_units",
    "check_values_kept",
    "unit_factor",
]

#: unit -> (dimension, factor to the dimension's SI-like base unit).
UNITS: dict[str, tuple[str, float]] = {
    "mV": ("voltage", 1e-3), "V": ("voltage", 1.0), "uV": ("voltage", 1e-6), "µV": ("voltage", 1e-6),
    "s": ("time", 1.0), "ms": ("time", 1e-3), "us": ("time", 1e-6), "µs": ("time", 1e-6),
    "pA": ("current", 1e-12), "nA": ("current", 1e-9), "uA": ("current", 1e-6), "A": ("current", 1.0),
    "Ω": ("resistance", 1.0), "ohm": ("resistance", 1.0), "Ohm": ("resistance", 1.0), "kΩ": ("resistance", 1e3),
    "kohm": ("resistance", 1e3), "MΩ": ("resistance", 1e6), "Mohm": ("resistance", 1e6),
    "MOhm": ("resistance", 1e6), "GΩ": ("resistance", 1e9), "Gohm": ("resistance", 1e9),
    "GOhm": ("resistance", 1e9),
    "Hz": ("frequency", 1.0), "1/s": ("frequency", 1.0), "kHz": ("frequency", 1e3),
    "1/ms": ("frequency", 1e3),
    "mV/ms": ("voltage_rate", 1.0), "V/s": ("voltage_rate", 1.0), "mV/s": ("voltage_rate", 1e-3),
    "Hz/pA": ("rate_per_current", 1e12), "Hz/nA": ("rate_per_current", 1e9),
    "mV*s": ("voltage_time", 1e-3), "mV·s": ("voltage_time", 1e-3), "mV*ms": ("voltage_time", 1e-6),
    "mV·ms": ("voltage_time", 1e-6),
    "rad": ("angle", 1.0), "deg": ("angle", math.pi / 180.0),
    "1": ("dimensionless", 1.0), "ratio": ("dimensionless", 1.0), "count": ("dimensionless", 1.0),
    "%": ("dimensionless", 0.01),
}


def unit_factor(from_unit: str, to_unit: str, *, where: str = "column map") -> float:
    """Multiplier converting values in ``from_unit`` to ``to_unit``.

    Raises
    ------
    InputError
        Unknown unit, or units of different dimensions (e.g. pA for a time).
    """
    for unit in (from_unit, to_unit):
        if unit not in UNITS:
            raise InputError(f"{where}: unknown unit {unit!r}; use one of {', '.join(UNITS)}.")
    dim_from, f_from = UNITS[from_unit]
    dim_to, f_to = UNITS[to_unit]
    if dim_from != dim_to:
        raise InputError(f"{where}: unit {from_unit!r} ({dim_from}) cannot be converted to "
                         f"{to_unit!r} ({dim_to}); fix the unit in the column map.")
    return f_from / f_to


@dataclass(frozen=True)
class CanonicalFeature:
    """One canonical feature: IPFX name, unit, plausible range of a cell's value, family."""

    name: str
    unit: str
    low: float
    high: float
    family: str


# name -> (unit, low, high). Ranges: plausible values of one cell (checked on the column median).
_SPEC: dict[str, tuple[str, float, float]] = {}


def _add(names, unit, low, high):
    for name in names:
        _SPEC[name] = (unit, low, high)


_STIMS = ("ramp", "short_square", "rheo", "hero")
_add([f"upstroke_downstroke_ratio_{s}" for s in _STIMS], "1", 0.3, 40.0)
_add([f"threshold_v_{s}" for s in _STIMS], "mV", -100.0, -5.0)
_add([f"width_{s}" for s in _STIMS] + [f"width_suprathresh_{s}" for s in _STIMS], "s", 2e-5, 0.03)
_add([f"upstroke_{s}" for s in _STIMS], "mV/ms", 5.0, 1500.0)
_add([f"downstroke_{s}" for s in _STIMS], "mV/ms", -1500.0, -1.0)
_add([f"postap_slope_{s}" for s in _STIMS], "mV/ms", -100.0, 30.0)
_add(["threshold_i_ramp", "rheobase_i"], "pA", 1.0, 3000.0)
# trough minus threshold: negative (reference medians -12 to -25 mV; at most 1.7% of cells above
# +5 mV in any shared table); a positive median is an AHP depth reported as positive (sign: -1)
_add([f"trough_deltav_{s}" for s in ("ramp", "rheo", "hero")], "mV", -80.0, 5.0)
_add([f"fast_trough_deltav_{s}" for s in _STIMS], "mV", -80.0, 5.0)
_add([f"peak_deltav_{s}" for s in _STIMS], "mV", 1.0, 150.0)
_add(["trough_slowdeltav_rheo", "trough_slowdeltav_hero"], "mV", -40.0, 5.0)
_add(["latency_rheo", "latency_hero"], "s", 5e-4, 2.0)
_add(["avg_rate_rheo", "avg_rate_hero"], "Hz", 0.5, 500.0)
_add(["mean_isi_rheo", "mean_isi_hero", "median_isi_hero"], "s", 1e-3, 2.0)
_add(["first_isi_inv_rheo", "first_isi_inv_hero"], "Hz", 0.5, 1000.0)
_add(["fast_trough_v_last_rheo", "adp_v_last_rheo"], "mV", -100.0, -5.0)
_add(["ahp_delay_ratio_hero", "ahp_delay_ratio_5spike"], "1", 0.0, 1.0)
_add(["adapt_hero", "adapt_mean", "adapt_max"], "1", -1.0, 1.0)
_add(["isi_cv_hero", "isi_cv_mean", "isi_cv_max"], "1", 0.0, 5.0)
_add(["isi_norm_sq_var_hero", "isi_norm_sq_var_mean", "isi_norm_sq_var_max"], "1", 0.0, 1.0)
_add(["v_baseline"], "mV", -110.0, -20.0)
_add(["vm_for_sag"], "mV", -150.0, -40.0)
_add(["input_resistance"], "MΩ", 5.0, 5000.0)
_add(["tau"], "s", 5e-4, 0.3)
# IPFX sag = (peak - steady state) / (peak - baseline) deflection: reference medians 0.04-0.29
# per class. A median near 1 is another definition (steady/peak or peak/steady ratio).
_add(["sag"], "1", -0.2, 0.7)
_add(["sag_depol"], "1", -0.2, 2.0)
_add(["sag_peak_t", "sag_peak_t_depol"], "s", 1e-3, 1.5)
_add(["sag_area", "sag_area_depol"], "mV*s", 0.0, 20.0)
_add(["sag_tau"], "s", 1e-4, 3.0)
_add(["fi_fit_slope"], "Hz/pA", -0.5, 5.0)
_add(["isi_adapt_ratio"], "1", 0.01, 200.0)
_add(["width_adapt_ratio", "upstroke_adapt_ratio", "downstroke_adapt_ratio",
      "threshold_v_adapt_ratio", "fast_trough_v_adapt_ratio"], "1", 0.0, 5.0)
_add(["peak_v_adapt_ratio"], "1", -20.0, 20.0)
_add(["peak_ratio_chirp"], "1", 0.5, 20.0)
_add(["peak_freq_chirp", "3db_freq_chirp", "sync_freq_chirp"], "Hz", 0.1, 100.0)
_add(["peak_impedance_chirp", "low_freq_impedance_chirp"], "GΩ", 0.005, 20.0)
_add(["phase_peak_chirp", "phase_low_chirp"], "rad", -math.pi, math.pi)
_add(["total_inductive_phase_chirp"], "rad", 0.0, 2 * math.pi)

_FAMILY_OF = HUMAN_IPFX_SCHEMA.family_of()
#: Canonical features, in the human table's family order.
CANONICAL_FEATURES: dict[str, CanonicalFeature] = {
    name: CanonicalFeature(name, *_SPEC[name], family=_FAMILY_OF[name])
    for name in HUMAN_IPFX_SCHEMA.columns
}
assert set(_SPEC) == set(CANONICAL_FEATURES), "every canonical feature needs a unit and range"


def canonical_names() -> list[str]:
    """All canonical names, family by family."""
    return list(CANONICAL_FEATURES)


def require_canonical(name: str, *, where: str = "column map") -> CanonicalFeature:
    """The :class:`CanonicalFeature` ``name``, or an InputError suggesting close names."""
    if name in CANONICAL_FEATURES:
        return CANONICAL_FEATURES[name]
    import difflib

    close = difflib.get_close_matches(name, CANONICAL_FEATURES, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise InputError(f"{where}: unknown canonical feature name {name!r}{hint}; see "
                     "docs/mapping.md for the list of IPFX names.")


@dataclass(frozen=True)
class UnitIssue:
    """A column whose median lies outside its feature's plausible range."""

    feature: str
    source: str
    median: float
    suggestion: str | None  # e.g. "values look like ms: multiply by 0.001 (unit: ms)"

    def message(self) -> str:
        """One line: what, where, how to fix."""
        spec = CANONICAL_FEATURES[self.feature]
        text = (f"column {self.source!r} (canonical {self.feature}, expected {spec.unit} in "
                f"[{spec.low:g}, {spec.high:g}]) has median {self.median:.4g}, outside the "
                "plausible range")
        if self.suggestion:
            text += f"; {self.suggestion}"
        return text + "; fix the column map, or pass --force to continue anyway."


#: Factors tried on a column whose median is implausible: the unit prefixes (milli to pico, e.g.
#: A for pA, V for mV, s for ms, Ω for MΩ), then a flipped sign.
_CANDIDATE_SCALES = (1e-3, 1e3, 1e-6, 1e6, 1e-9, 1e9, 1e-12, 1e12, -1.0)


#: Other labs' definitions of dimensionless features and the column-map ``expr`` converting them.
_DEFINITION_HINTS = {
    "sag": ("IPFX sag is (peak − steady state) / (peak − baseline deflection), about 0.05-0.3; a "
            "value near 1 is another definition: for a steady/peak ratio set `expr: 1 - x`, for a "
            "peak/steady ratio `expr: 1 - 1/x`"),
    **dict.fromkeys(("adapt_hero", "adapt_mean", "adapt_max"), (
        "the IPFX adaptation index is the mean (ISI2 − ISI1) / (ISI2 + ISI1) of consecutive ISIs, "
        "about 0-0.2; a value of 1 or more is another definition: for a ratio of later to earlier "
        "ISIs set `expr: (x - 1) / (x + 1)` (for a percentage, `unit: \"%\"`)")),
}


def _scale_into_range(spec: CanonicalFeature, value: float) -> float | None:
    """The factor of :data:`_CANDIDATE_SCALES` that brings ``value`` into the feature's range.

    When several unit factors do (a range spanning decades), the one landing
    closest to the middle of the range (on a log scale) is the likely unit:
    1e-9 A is 1000 pA (x1e12), not 1 pA (x1e9).
    """
    dimensionless = UNITS[spec.unit][0] == "dimensionless"
    fitting = [scale for scale in _CANDIDATE_SCALES
               if (scale == -1.0 or not dimensionless)  # a unit cannot explain a dimensionless value
               and spec.low <= value * scale <= spec.high]
    # a flipped sign competes with the unit factors in a range spanning 0 (an AHP depth of +13 mV
    # for fast_trough_deltav: -13 mV, not 0.013 mV); elsewhere it is the last resort
    factors = [scale for scale in fitting if scale > 0 or spec.low < 0 < spec.high]
    if not factors:
        return fitting[0] if fitting else None
    bounds = [abs(b) for b in (spec.low, spec.high) if b != 0]
    middle = (math.sqrt(bounds[0] * bounds[1]) if len(bounds) == 2 and spec.low * spec.high > 0
              else max(bounds) / 10)
    return min(factors, key=lambda scale: abs(math.log10(abs(value * scale) / middle))
               if value * scale != 0 else math.inf)


def _suggest(spec: CanonicalFeature, median: float, declared: str | None = None) -> str | None:
    """The conversion that brings ``median`` into the range, phrased for the user.

    ``declared`` is the unit the column map gave the column (default: the
    canonical unit); the unit named in the hint is relative to it (a column
    mapped as V whose values are mV: ``set `unit: mV```).
    """
    if spec.name.startswith("adapt_") and median >= 1:
        return _DEFINITION_HINTS[spec.name]
    if UNITS[spec.unit][0] == "dimensionless" and median > max(spec.high, 2.0) \
            and spec.low <= median * 0.01 <= spec.high:
        return ("the values look like percent: set `unit: \"%\"` in this column's map entry "
                "(or divide the column by 100)")
    if spec.name in _DEFINITION_HINTS:
        return _DEFINITION_HINTS[spec.name]
    scale = _scale_into_range(spec, median)
    if scale is None:
        return None
    if scale == -1.0:
        return "the sign looks flipped: add `sign: -1` to this column's map entry"
    declared = declared if declared in UNITS and UNITS[declared][0] == UNITS[spec.unit][0] else spec.unit
    units = [u for u, (dim, f) in UNITS.items()
             if dim == UNITS[spec.unit][0] and np.isclose(f / UNITS[declared][1], scale)]
    unit_hint = (f" (the values look like {units[0]}, not {declared}: set `unit: {units[0]}`)"
                 if units else "")
    return f"multiply by {scale:g}{unit_hint}"


#: A column whose median is plausible but with at least this share (and
#: :data:`MIXED_MIN_VALUES`) of its values outside the plausible range mixes units
#: (in the shared reference tables no feature has more than 1% of its values outside).
MIXED_SHARE = 0.10
MIXED_MIN_VALUES = 3


@dataclass(frozen=True)
class MixedUnitsIssue:
    """A column with a plausible median but a sizeable share of its values outside the range."""

    feature: str
    source: str
    n_values: int
    n_outside: int
    example: float
    scale: float | None  # the factor that brings the outlying values into the range, if one does

    def message(self) -> str:
        """One line: what, where, how to fix."""
        spec = CANONICAL_FEATURES[self.feature]
        text = (f"column {self.source!r} (canonical {self.feature}, expected {spec.unit} in "
                f"[{spec.low:g}, {spec.high:g}]): {self.n_outside} of its {self.n_values} values "
                f"lie outside the plausible range (e.g. {self.example:.4g}) although its median is "
                "inside: the column mixes units, or those cells were converted differently")
        if self.scale == -1.0:
            text += "; those values look sign-flipped"
        elif self.scale is not None and self.scale > 1:
            text += f"; those values look {self.scale:g} times too small"
        elif self.scale is not None:
            text += f"; those values look {1 / self.scale:g} times too large"
        return text + "; fix those values, or pass --force to continue anyway."


def check_units(table: pd.DataFrame, sources: dict[str, str] | None = None,
                units: dict[str, str] | None = None) -> list[UnitIssue | MixedUnitsIssue]:
    """Columns of a canonical-named table whose values are implausible for their feature.

    A column whose median is outside the plausible range (a wrong unit or
    definition) is a :class:`UnitIssue`; one whose median is plausible but
    with at least :data:`MIXED_SHARE` of its values outside the range (units
    mixed between cells, e.g. a batch of cells in ms among cells in s) is a
    :class:`MixedUnitsIssue`.

    Parameters
    ----------
    table : DataFrame
        Canonical names as columns (already converted by the column map).
    sources : dict, optional
        Canonical name -> the user's column name, for messages.
    units : dict, optional
        Canonical name -> the unit the column map gave the user's column (for
        a linear conversion), so that a hint names the unit to set in the map.

    Returns
    -------
    list of UnitIssue or MixedUnitsIssue
        Empty when every column looks right.
    """
    sources = sources or {}
    units = units or {}
    issues = []
    for name in table.columns:
        if name not in CANONICAL_FEATURES:
            continue
        values = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        spec = CANONICAL_FEATURES[name]
        median = float(np.median(values))
        source = sources.get(name, name)
        if not spec.low <= median <= spec.high:
            issues.append(UnitIssue(name, source, median, _suggest(spec, median, units.get(name))))
            continue
        outside = values[(values < spec.low) | (values > spec.high)]
        if len(outside) >= max(MIXED_MIN_VALUES, MIXED_SHARE * len(values)):
            typical = float(np.median(outside))
            issues.append(MixedUnitsIssue(name, source, len(values), len(outside), typical,
                                          _scale_into_range(spec, typical)))
    return issues


@dataclass(frozen=True)
class LostValuesIssue:
    """A column most of whose values are negative where no cell can have a negative value."""

    feature: str
    source: str
    n_values: int
    n_lost: int

    def message(self) -> str:
        """One line: what, where, how to fix."""
        return (f"column {self.source!r} (canonical {self.feature}): {self.n_lost} of its "
                f"{self.n_values} values are negative, which no cell can have (they would be read as "
                "missing-value codes); the sign looks flipped: fix it (a column map can set "
                "`sign: -1`), or pass --force to treat them as missing.")


def check_values_kept(raw: pd.DataFrame, table: pd.DataFrame, sources: dict[str, str] | None = None,
                      *, min_values: int = 3) -> list[LostValuesIssue]:
    """Canonical columns most of whose values are negative codes: a flipped sign, not missing values.

    A few negative durations or resistances are failed fits and are read as
    missing (see :mod:`ephys2tx.data.missing_codes`); most of a column
    negative is a sign error that must not silently become "missing". (Zeros
    are left alone: a column of 0 codes is a legitimately missing feature.)

    Parameters
    ----------
    raw : DataFrame
        The canonical table before missing-value codes are masked.
    table : DataFrame
        The same after masking.
    sources : dict, optional
        Canonical name -> the user's column name, for messages.
    min_values : int
        Columns with fewer values are not judged.
    """
    sources = sources or {}
    issues = []
    for name in raw.columns:
        values = pd.to_numeric(raw[name], errors="coerce")
        n_values = int(values.notna().sum())
        if name not in table.columns or n_values < min_values:
            continue
        lost = int(((values < 0) & table[name].isna()).sum())
        if lost > n_values / 2:
            issues.append(LostValuesIssue(name, sources.get(name, name), n_values, lost))
    return issues
