"""Missing-value codes: values a table uses for "not measured" that no cell can have.

The mouse VISp table (Gouwens 2020) has no empty cell at all: where a feature
could not be measured it holds 0 (a ramp sweep without a spike has a 0 mV
threshold, a 0 pA threshold current and a 0 up/down-stroke ratio; a cell with
one spike has a 0 ms mean ISI and a 0 adaptation index). Left as numbers these
zeros pass the missingness QC and enter scalers, sparse PCA and trees as
measurements, where they act as a class-correlated flag (a ramp without a
spike: Pvalb 13.3% of cells, Lamp5 0.8%). The IPFX tables (human, mouse L1
bridge) mostly leave such values empty, but compute a 0 coefficient of
variation from a single inter-spike interval.

:data:`MISSING_CODE_RULES` is the one place these codes are defined. Each rule
names its columns in both namings (VISp/Allen Cell Types and canonical IPFX,
so one call treats the shared tables, harmonised mouse features and users'
canonical tables alike), the coded value and the evidence; the loaders apply
:func:`mask_missing_codes` before their QC, so the "> 25% missing" step sees
the codes as missing, and report the count of each rule (``ephys2tx
datasets``, ``report.md``, ``docs/data.md``).

Values that look like codes but are measurements are *not* masked (see
``docs/data.md``): areas clipped at 0 (``sag_area``, ``sag_area_depol``,
``total_inductive_phase_chirp``: 0 means no sag / no inductive phase),
counts (``Rebound APs``), quantised differences (``trough_slowdeltav_*``),
and peak voltages (a peak of 0 mV is a possible spike peak).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["MISSING_CODE_RULES", "MissingCodeRule", "mask_missing_codes", "rule_columns"]

_MV = "(millivolts)"
_STIMULI = ("ramp", "long square", "short square")


@dataclass(frozen=True)
class MissingCodeRule:
    """One missing-value code.

    Attributes
    ----------
    name : str
        Short stable name (reported with its counts).
    code : {"zero", "nonpositive", "all_zero"}
        ``zero``: a value exactly 0 is missing; ``nonpositive``: a value <= 0
        is missing; ``all_zero``: where *every* listed column of a row is
        exactly 0, all of them are missing (a joint code).
    columns : tuple of str
        Exact column names it applies to (e.g. VISp names).
    patterns : tuple of str
        Regular expressions (full match) for further column names (IPFX names).
    why : str
        The evidence, one sentence (shown in the docs).
    """

    name: str
    code: str
    columns: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    why: str = ""

    def matching(self, columns) -> list[str]:
        """The columns of a table that this rule applies to, in table order."""
        exact = set(self.columns)
        regexes = [re.compile(p) for p in self.patterns]
        return [c for c in columns if c in exact or any(r.fullmatch(str(c)) for r in regexes)]


#: The ramp AP block of the VISp table: all six are exactly 0 together in 273 of 4,260 cells.
VISP_RAMP_BLOCK = (
    f"Threshold V (ramp) {_MV}", f"Peak V (ramp) {_MV}", f"Fast trough V (ramp) {_MV}",
    f"Trough V (ramp) {_MV}", "Upstroke/downstroke ratio (ramp)", "Threshold I (ramp) (picoamps)",
)

#: Applied in this order; a value masked by an earlier rule is not counted again.
MISSING_CODE_RULES: tuple[MissingCodeRule, ...] = (
    MissingCodeRule(
        "ramp_without_spike", "all_zero", columns=VISP_RAMP_BLOCK,
        why="All six ramp AP features exactly 0 at once (0 mV threshold, peak and troughs, 0 pA, "
            "ratio 0) in 273 VISp cells (3 more have one of them at 0); class-dependent (Pvalb 13.3%, Lamp5 "
            "0.8%); of the 9 such cells also in the bridge table, 5 have no ramp AP there (NaN)."),
    MissingCodeRule(
        "zero_spike_or_rest_voltage", "zero",
        columns=tuple(f"{kind} V ({stim}) {_MV}" for stim in _STIMULI
                      for kind in ("Threshold", "Fast trough", "Trough"))
        + ("AP threshold (mV)", "Resting membrane potential (mV)"),
        patterns=(r"threshold_v_(ramp|short_square|rheo|hero)", r"fast_trough_v_last_rheo",
                  r"adp_v_last_rheo", r"v_baseline", r"vm_for_sag"),
        why="Thresholds, troughs and resting potentials are negative (VISp medians -32 to -69 mV); "
            "the 5 VISp fast troughs that are exactly 0 mV (ramp 1 outside the ramp code, long "
            "square 1, short square 3) each lie above the peak of their own AP, and no other "
            "fast-trough or trough value is within 0.5 mV of 0."),
    MissingCodeRule(
        "zero_spike_voltage_difference", "zero",
        patterns=(r"(peak|fast_trough|trough)_deltav_(ramp|short_square|rheo|hero)",),
        why="An IPFX voltage relative to threshold that is exactly 0 is what a 0 mV code minus a "
            "0 mV code gives when a zero-coded table is converted to IPFX names; the IPFX tables "
            "have none."),
    MissingCodeRule(
        "zero_threshold_current", "zero",
        columns=tuple(f"Threshold I ({stim}) (picoamps)" for stim in _STIMULI),
        patterns=(r"threshold_i_(ramp|short_square)", r"rheobase_i"),
        why="A cell needs current to reach threshold (smallest non-zero values: VISp ramp 5.8 pA, "
            "human rheobase 4 pA); 0 pA occurs only inside the VISp ramp code."),
    MissingCodeRule(
        "nonpositive_updown_ratio", "nonpositive",
        columns=tuple(f"Upstroke/downstroke ratio ({stim})" for stim in _STIMULI),
        patterns=(r"upstroke_downstroke_ratio_(ramp|short_square|rheo|hero)",),
        why="Upstroke / |downstroke| of an AP is > 0 by definition (IPFX: upstroke / -downstroke); "
            "one VISp (-39.4) and one human (-0.50) short-square value are negative."),
    MissingCodeRule(
        "nonpositive_duration", "nonpositive",
        columns=("Avg ISI", "AP width (ms)", "Latency", "tau"),
        patterns=(r"(mean|median)_isi_(rheo|hero)", r"width(_suprathresh)?_(ramp|short_square|rheo|hero)",
                  r"latency_(rheo|hero)", r"tau", r"sag_tau", r"sag_peak_t(_depol)?"),
        why="Intervals, widths, latencies and time constants are > 0; VISp holds 0 ms mean ISI for "
            "129 single-spike cells (9 of the 13 also in the bridge table have one spike on the hero "
            "sweep there) and tau 0 ms for one cell."),
    MissingCodeRule(
        "nonpositive_input_resistance", "nonpositive",
        columns=("Input resistance (MΩ)",), patterns=(r"input_resistance",),
        why="A membrane's input resistance is > 0; 1 VISp, 2 human and 2 bridge values are "
            "negative (failed fits)."),
    MissingCodeRule(
        "undefined_adaptation", "zero",
        columns=("Adaptation ratio",), patterns=(r"adapt_(hero|mean|max)",),
        why="The adaptation index needs >= 3 spikes; VISp holds exactly 0 in 368 cells (no other "
            "value repeats): 129 with one spike and 239 whose bridge hero sweep has 2 spikes. IPFX "
            "leaves it empty (NaN) instead."),
    MissingCodeRule(
        "undefined_isi_cv", "zero",
        patterns=(r"isi_cv_(hero|mean|max)",),
        why="A coefficient of variation of a single ISI is 0 by arithmetic, not a measurement: all "
            "34 human isi_cv_hero zeros are sweeps with 2 spikes whose adaptation IPFX left empty "
            "(avg_rate_hero keeps the spike count)."),
)


def rule_columns(columns, rules=MISSING_CODE_RULES) -> dict[str, list[str]]:
    """``rule name -> columns of `columns` it applies to`` (rules that apply to none omitted)."""
    out = {}
    for rule in rules:
        cols = rule.matching(columns)
        if cols and not (rule.code == "all_zero" and len(cols) < len(rule.columns)):
            out[rule.name] = cols
    return out


def _coded(values: np.ndarray, code: str) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        if code == "nonpositive":
            return values <= 0
        if code in ("zero", "all_zero"):
            return values == 0
    raise ValueError(f"unknown missing-value code kind {code!r}")


def _as_floats(table: pd.DataFrame, cols: list) -> np.ndarray:
    """``table[cols]`` as a float array (rows x cols); non-numeric entries are NaN (left for the
    caller's validation to report). Float64 columns are read as they are, without converting
    a copy of the block."""
    if all(table[c].dtype == np.float64 for c in cols):
        return np.vstack([table[c].to_numpy() for c in cols]).T  # column-major, as pandas gives it
    return table[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)


def mask_missing_codes(table: pd.DataFrame, rules=MISSING_CODE_RULES
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replace every missing-value code of ``table`` by NaN.

    Parameters
    ----------
    table : DataFrame
        Numeric feature columns in VISp or IPFX naming (other columns are left alone).
    rules : sequence of MissingCodeRule
        Default :data:`MISSING_CODE_RULES`, applied in order.

    Returns
    -------
    masked : DataFrame
        A copy with the codes set to NaN.
    counts : DataFrame
        One row per rule that applies to some column of ``table``: ``rule``,
        ``code``, ``columns`` (list), ``n_values`` (values newly set to NaN)
        and ``n_cells`` (rows with at least one).
    """
    masked = table.copy()
    rows = []
    for rule in rules:
        cols = rule.matching(masked.columns)
        if not cols or (rule.code == "all_zero" and len(cols) < len(rule.columns)):
            continue  # a joint code needs every column of its block
        values = _as_floats(masked, cols)
        hit = _coded(values, rule.code)
        if rule.code == "all_zero":
            hit = np.repeat(hit.all(axis=1)[:, None], len(cols), axis=1)
        for j in np.flatnonzero(hit.any(axis=0)):
            masked[cols[j]] = masked[cols[j]].mask(hit[:, j])
        rows.append({"rule": rule.name, "code": rule.code, "columns": cols,
                     "n_values": int(hit.sum()), "n_cells": int(hit.any(axis=1).sum())})
    return masked, pd.DataFrame(rows, columns=["rule", "code", "columns", "n_values", "n_cells"])
