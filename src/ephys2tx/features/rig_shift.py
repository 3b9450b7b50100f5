"""A synthetic "other rig": realistic distortions of canonical IPFX features, with their sizes.

What changes when the same cell is recorded and analysed in another lab, and by
how much (docs/shift.md gives the reasoning and the literature):

* **liquid-junction potential** (Neher 1992; Barry & Lynch 1991): absolute
  voltages (``threshold_v_*``, ``v_baseline``, ``vm_for_sag``, ``*_v_last_rheo``)
  move together by one offset. Junction potentials of common internal solutions
  against ACSF range from a few mV (KCl) to ~10-16 mV (K-gluconate), and labs
  differ in whether they correct them: :data:`RANGES` ``ljp_mv`` = ±15 mV.
  Voltages relative to threshold (``*_deltav_*``) do not move.
* **passive properties**: input resistance and membrane time constant depend on
  temperature, age, internal solution, access and the fitting window; each is
  multiplied by its own log-uniform factor in [0.5, 2]. Rheobase and ramp
  threshold current scale with 1/R (rheobase ≈ ΔV / R_in), the f–I slope with R.
* **spike kinetics**: temperature (Q10 ≈ 2-3 of channel gating, Hille 2001) and
  the acquisition filter change spike width; width × f, up/downstroke ÷ f, f
  log-uniform in [0.7, 1.5].
* **sag definition**: IPFX sag is (peak − steady state) / (peak − baseline);
  labs also normalise by the steady-state deflection, sag / (1 − sag), and use
  another hyperpolarising step (× [0.6, 1.6]).
* **adaptation definition**: the IPFX adaptation index is the mean normalised
  difference of consecutive ISIs; a lab that reports a last/first ISI ratio over
  N ISIs and converts it with the per-pair formula gets a monotone distortion
  (N in 2-4), or another sweep (× [0.5, 2]).

The same ranges give the priors of the class-conditional alignment
(:func:`prior_scales`): what a rig can plausibly do to each feature.
:func:`sample_feature_subset` and :func:`dirichlet_label_shift` add the two
other parts of a synthetic query (a lab's feature subset, its class mix).
"""

from __future__ import annotations

import operator
import re
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

__all__ = ["RANGES", "RigShift", "apply_rig_shift", "dirichlet_label_shift", "feature_kind",
           "prior_scales", "sample_feature_subset", "sample_rig_shift"]

#: Distortion ranges (docs/shift.md justifies each).
RANGES = {
    "ljp_mv": (-15.0, 15.0),            # uniform, added to every absolute voltage
    "resistance_factor": (0.5, 2.0),    # log-uniform, input resistance / impedance
    "tau_factor": (0.5, 2.0),           # log-uniform, time constants
    "kinetics_factor": (0.7, 1.5),      # log-uniform, spike width (÷ up/downstroke)
    "sag_factor": (0.6, 1.6),           # log-uniform, another hyperpolarising step
    "adapt_factor": (0.5, 2.0),         # log-uniform, another sweep
    "adapt_n_isi": (2, 4),              # ISIs of a last/first ratio converted per pair
    "feature_subset": (8, 15),          # features a lab shares with the reference
    "dirichlet_alpha": 1.0,             # label shift: class mix ~ Dirichlet(alpha, ..., alpha)
}

_ABS_VOLTAGE = re.compile(r"^(threshold_v_|v_baseline$|vm_for_sag$|fast_trough_v_last|adp_v_last)")
_KINDS = (
    ("voltage", _ABS_VOLTAGE),
    ("resistance", re.compile(r"^(input_resistance$|peak_impedance_chirp$|low_freq_impedance_chirp$)")),
    ("time_constant", re.compile(r"^(tau$|sag_tau$)")),
    ("current", re.compile(r"^(rheobase_i$|threshold_i_ramp$)")),
    ("fi_slope", re.compile(r"^fi_fit_slope$")),
    ("width", re.compile(r"^width_(suprathresh_)?(ramp|short_square|rheo|hero)$")),
    ("rate", re.compile(r"^(upstroke|downstroke)_(ramp|short_square|rheo|hero)$")),
    ("sag", re.compile(r"^sag(_depol)?$")),
    ("adaptation", re.compile(r"^adapt_(hero|mean|max)$")),
)


def feature_kind(name: str) -> str:
    """What a rig does to this canonical feature: ``voltage``, ``resistance``, ..., or ``other``."""
    for kind, pattern in _KINDS:
        if pattern.search(name):
            return kind
    return "other"


@dataclass(frozen=True)
class RigShift:
    """One synthetic rig (all factors multiply; ``ljp_mv`` adds)."""

    ljp_mv: float = 0.0
    resistance_factor: float = 1.0
    tau_factor: float = 1.0
    kinetics_factor: float = 1.0
    sag_factor: float = 1.0
    sag_steady_state: bool = False
    adapt_factor: float = 1.0
    adapt_n_isi: int = 0  # 0: IPFX definition; N >= 2: last/first ratio over N ISIs, converted per pair

    def as_dict(self) -> dict:
        """Plain parameters, for results."""
        return asdict(self)


def _log_uniform(rng, low, high) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def sample_rig_shift(rng) -> RigShift:
    """A random rig within :data:`RANGES`."""
    rng = np.random.default_rng(rng)
    lo, hi = RANGES["adapt_n_isi"]
    return RigShift(
        ljp_mv=float(rng.uniform(*RANGES["ljp_mv"])),
        resistance_factor=_log_uniform(rng, *RANGES["resistance_factor"]),
        tau_factor=_log_uniform(rng, *RANGES["tau_factor"]),
        kinetics_factor=_log_uniform(rng, *RANGES["kinetics_factor"]),
        sag_factor=_log_uniform(rng, *RANGES["sag_factor"]),
        sag_steady_state=bool(rng.random() < 0.5),
        adapt_factor=_log_uniform(rng, *RANGES["adapt_factor"]),
        adapt_n_isi=int(rng.integers(lo, hi + 1)) if rng.random() < 0.5 else 0,
    )


#: Feature kind -> (the :class:`RigShift` field, how it acts on the values): a liquid junction
#: potential adds to voltages; the resistance scales resistances and f-I slopes and divides
#: currents; the kinetics scale widths and divide rates.
_SIMPLE_EFFECTS = {
    "voltage": ("ljp_mv", operator.add),
    "resistance": ("resistance_factor", operator.mul),
    "time_constant": ("tau_factor", operator.mul),
    "current": ("resistance_factor", operator.truediv),
    "fi_slope": ("resistance_factor", operator.mul),
    "width": ("kinetics_factor", operator.mul),
    "rate": ("kinetics_factor", operator.truediv),
}


def apply_rig_shift(X: pd.DataFrame, shift: RigShift) -> pd.DataFrame:
    """The features of ``X`` (canonical names and units) as the rig ``shift`` would report them."""
    out = X.astype(float).copy()
    for col in out.columns:
        kind = feature_kind(col)
        v = out[col].to_numpy()
        if kind in _SIMPLE_EFFECTS:
            field, op = _SIMPLE_EFFECTS[kind]
            v = op(v, getattr(shift, field))
        elif kind == "sag":
            if shift.sag_steady_state:
                v = v / np.maximum(1.0 - v, 0.05)
            v = v * shift.sag_factor
        elif kind == "adaptation":
            if shift.adapt_n_isi >= 2:
                a = np.clip(v, -0.95, 0.95)
                ratio = ((1 + a) / (1 - a)) ** (shift.adapt_n_isi - 1)
                v = np.where(np.isnan(v), np.nan, (ratio - 1) / (ratio + 1))
            v = v * shift.adapt_factor
        out[col] = v
    return out


def sample_feature_subset(features, rng, *, low: int | None = None, high: int | None = None) -> list[str]:
    """A random subset of ``low``-``high`` features (all if there are fewer), in the given order."""
    rng = np.random.default_rng(rng)
    lo, hi = RANGES["feature_subset"]
    lo, hi = low or lo, high or hi
    features = list(features)
    k = min(len(features), int(rng.integers(lo, hi + 1)))
    keep = set(rng.choice(len(features), size=k, replace=False).tolist())
    return [f for i, f in enumerate(features) if i in keep]


def dirichlet_label_shift(labels: pd.Series, rng, *, alpha: float | None = None,
                          min_cells: int = 40) -> pd.Index:
    """Cells of ``labels`` resampled (without replacement) to a Dirichlet-drawn class mix.

    The mix is drawn from ``Dirichlet(alpha, ..., alpha)`` over the classes
    present; the query is as large as the available cells of each class allow
    (at least ``min_cells``: the mix is redrawn otherwise, up to 100 times).
    """
    rng = np.random.default_rng(rng)
    alpha = RANGES["dirichlet_alpha"] if alpha is None else alpha
    counts = labels.value_counts()
    classes = list(counts.index)
    for _ in range(100):
        mix = rng.dirichlet(np.full(len(classes), float(alpha)))
        n = int(np.floor(np.min(counts.to_numpy() / np.maximum(mix, 1e-12))))
        n = min(n, len(labels))
        if n >= min_cells:
            break
    take = np.floor(mix * n).astype(int)
    chosen = []
    for cls, k in zip(classes, take):
        ids = labels.index[labels.to_numpy() == cls]
        if k > 0:
            chosen.extend(rng.choice(ids, size=min(k, len(ids)), replace=False).tolist())
    return pd.Index(chosen)


def prior_scales(features, *, offset_sd_default: float = 0.25, log_scale_sd_default: float = 0.1):
    """How far a rig can plausibly move each feature, for the alignment priors.

    Returns
    -------
    DataFrame
        Index: features. Columns: ``kind``; ``offset_sd`` in the feature's
        canonical unit for absolute voltages (half the junction-potential range),
        else NaN; ``log_factor_sd``: SD of the log of a multiplicative factor
        (half the log-range of the factor) for multiplicative kinds, else NaN;
        ``log_scale_sd``: SD of the log of the slope of an affine change of the
        standardised feature; ``offset_sd_standardised``: default offset SD in
        reference SD units (used when the other two do not apply).
    """
    half_log = {k: np.log(RANGES[f"{k}_factor"][1] / RANGES[f"{k}_factor"][0]) / 4
                for k in ("resistance", "tau", "kinetics", "sag", "adapt")}
    factor_of = {"resistance": half_log["resistance"], "time_constant": half_log["tau"],
                 "current": half_log["resistance"], "fi_slope": half_log["resistance"],
                 "width": half_log["kinetics"], "rate": half_log["kinetics"],
                 "sag": half_log["sag"], "adaptation": half_log["adapt"]}
    rows = []
    for f in features:
        kind = feature_kind(f)
        rows.append({
            "feature": f, "kind": kind,
            "offset_sd": (RANGES["ljp_mv"][1] - RANGES["ljp_mv"][0]) / 4 if kind == "voltage" else np.nan,
            "log_factor_sd": factor_of.get(kind, np.nan),
            "log_scale_sd": 0.3 if kind in ("sag", "adaptation") else log_scale_sd_default,
            "offset_sd_standardised": offset_sd_default,
        })
    return pd.DataFrame(rows).set_index("feature")
