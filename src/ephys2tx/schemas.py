"""Declarative feature-family schemas, and the one family resolver (a leaf module).

Imported by :mod:`ephys2tx.data` (dataset families) and :mod:`ephys2tx.features`
(harmonisation, canonical names), and by the family models; it imports nothing
of ephys2tx but the error type.

Every input feature of a table belongs to exactly one of 12 named families.
The family order is fixed: it is the token order of the family models. The
schemas are plain data, so a reader can check them against the IPFX
documentation, and :func:`validate_families` enforces the rules (no feature
lost, none in two families) on any table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ephys2tx.errors import InputError


@dataclass(frozen=True)
class FamilySchema:
    """An ordered mapping ``family -> feature columns`` with a description per family.

    Attributes
    ----------
    name : str
        Name of the table schema (e.g. ``"human_ipfx"``).
    families : tuple of (str, tuple of str)
        Ordered families and their columns.
    descriptions : dict
        One line per family.
    """

    name: str
    families: tuple[tuple[str, tuple[str, ...]], ...]
    descriptions: Mapping[str, str]

    @property
    def family_names(self) -> list[str]:
        """Family names, in token order."""
        return [fam for fam, _ in self.families]

    @property
    def columns(self) -> list[str]:
        """All feature columns, family by family."""
        return [col for _, cols in self.families for col in cols]

    def as_dict(self) -> dict[str, list[str]]:
        """Plain ``{family: [columns]}`` in token order."""
        return {fam: list(cols) for fam, cols in self.families}

    def restricted_to(self, columns: Iterable[str]) -> dict[str, list[str]]:
        """The schema limited to ``columns``; families left empty are dropped."""
        keep = set(columns)
        out = {fam: [c for c in cols if c in keep] for fam, cols in self.families}
        return {fam: cols for fam, cols in out.items() if cols}

    def family_of(self) -> dict[str, str]:
        """Reverse map ``column -> family``."""
        return {col: fam for fam, cols in self.families for col in cols}


def validate_families(families: Mapping[str, Sequence[str]], columns: Sequence[str],
                      *, where: str = "table") -> None:
    """Check that ``families`` partitions ``columns`` exactly.

    Raises
    ------
    InputError
        If a column is in no family, in two families, or a family names a
        column the table does not have, or a family is empty.
    """
    seen: dict[str, str] = {}
    for fam, cols in families.items():
        if len(cols) == 0:
            raise InputError(f"feature family {fam!r} of {where} is empty; remove it or give it columns.")
        for col in cols:
            if col in seen:
                raise InputError(
                    f"feature {col!r} of {where} is in two families ({seen[col]!r} and {fam!r}); "
                    "put it in exactly one."
                )
            seen[col] = fam
    present = set(columns)
    unknown = [c for c in seen if c not in present]
    if unknown:
        raise InputError(
            f"feature family {seen[unknown[0]]!r} names column {unknown[0]!r}, which {where} "
            "does not have; fix the schema or the column name."
        )
    lost = [c for c in columns if c not in seen]
    if lost:
        raise InputError(
            f"column {lost[0]!r} of {where} is in no feature family "
            f"({len(lost)} such columns); add it to the family schema."
        )


# --------------------------------------------------------------------------- human
# IPFX summary features (Lee & Dalley 2023 naming; also the mouse L1 bridge table).
_HUMAN_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ramp_ap", (
        "upstroke_downstroke_ratio_ramp", "threshold_v_ramp", "width_ramp",
        "width_suprathresh_ramp", "upstroke_ramp", "downstroke_ramp", "postap_slope_ramp",
        "threshold_i_ramp", "trough_deltav_ramp", "fast_trough_deltav_ramp", "peak_deltav_ramp",
    )),
    ("short_square_ap", (
        "upstroke_downstroke_ratio_short_square", "threshold_v_short_square",
        "width_short_square", "width_suprathresh_short_square", "upstroke_short_square",
        "downstroke_short_square", "postap_slope_short_square",
        "fast_trough_deltav_short_square", "peak_deltav_short_square",
    )),
    ("rheobase_ap_shape", (
        "upstroke_downstroke_ratio_rheo", "threshold_v_rheo", "width_rheo",
        "width_suprathresh_rheo", "upstroke_rheo", "downstroke_rheo", "postap_slope_rheo",
        "trough_slowdeltav_rheo", "trough_deltav_rheo", "fast_trough_deltav_rheo",
        "peak_deltav_rheo",
    )),
    ("rheobase_firing", (
        "rheobase_i", "latency_rheo", "avg_rate_rheo", "mean_isi_rheo", "first_isi_inv_rheo",
        "fast_trough_v_last_rheo", "adp_v_last_rheo",
    )),
    ("hero_ap_shape", (
        "upstroke_downstroke_ratio_hero", "threshold_v_hero", "width_hero",
        "width_suprathresh_hero", "upstroke_hero", "downstroke_hero", "postap_slope_hero",
        "trough_slowdeltav_hero", "trough_deltav_hero", "fast_trough_deltav_hero",
        "peak_deltav_hero", "ahp_delay_ratio_hero",
    )),
    ("hero_firing_pattern", (
        "adapt_hero", "avg_rate_hero", "latency_hero", "mean_isi_hero", "median_isi_hero",
        "isi_cv_hero", "isi_norm_sq_var_hero", "first_isi_inv_hero",
    )),
    ("passive_membrane", ("v_baseline", "input_resistance", "tau")),
    ("hyperpolarising_sag", ("sag", "sag_peak_t", "sag_area", "vm_for_sag", "sag_tau")),
    ("depolarising_sag", ("sag_depol", "sag_peak_t_depol", "sag_area_depol")),
    ("fi_and_adaptation", (
        "fi_fit_slope", "adapt_mean", "isi_cv_mean", "isi_norm_sq_var_mean", "adapt_max",
        "isi_cv_max", "isi_norm_sq_var_max",
    )),
    ("spike_train_adaptation_ratios", (
        "isi_adapt_ratio", "width_adapt_ratio", "upstroke_adapt_ratio",
        "downstroke_adapt_ratio", "peak_v_adapt_ratio", "threshold_v_adapt_ratio",
        "fast_trough_v_adapt_ratio", "ahp_delay_ratio_5spike",
    )),
    ("chirp_resonance", (
        "peak_ratio_chirp", "peak_freq_chirp", "3db_freq_chirp", "peak_impedance_chirp",
        "low_freq_impedance_chirp", "sync_freq_chirp", "phase_peak_chirp", "phase_low_chirp",
        "total_inductive_phase_chirp",
    )),
)

HUMAN_IPFX_SCHEMA = FamilySchema(
    name="human_ipfx",
    families=_HUMAN_FAMILIES,
    descriptions={
        "ramp_ap": "first action potential evoked by the slow current ramp",
        "short_square_ap": "action potential evoked by the 3 ms short square",
        "rheobase_ap_shape": "first AP shape at rheobase (long square)",
        "rheobase_firing": "rheobase current, latency and firing at rheobase",
        "hero_ap_shape": "AP shape on the hero sweep (rheobase + 30-60 pA)",
        "hero_firing_pattern": "rate, latency and ISI statistics on the hero sweep",
        "passive_membrane": "resting potential, input resistance, membrane time constant",
        "hyperpolarising_sag": "sag and its kinetics on hyperpolarising steps",
        "depolarising_sag": "sag on depolarising subthreshold steps",
        "fi_and_adaptation": "f-I slope and adaptation across suprathreshold steps",
        "spike_train_adaptation_ratios": "change of AP features along the spike train",
        "chirp_resonance": "impedance profile from the chirp stimulus",
    },
)

# --------------------------------------------------------------------------- mouse
# Mouse VISp (Gouwens 2020), Allen Cell Types naming with units in the column names.
_MV = "(millivolts)"
_MOUSE_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ramp_ap", (
        f"Threshold V (ramp) {_MV}", f"Peak V (ramp) {_MV}", f"Fast trough V (ramp) {_MV}",
        f"Trough V (ramp) {_MV}", "Upstroke/downstroke ratio (ramp)",
        "Threshold I (ramp) (picoamps)",
    )),
    ("short_square_ap", (
        f"Threshold V (short square) {_MV}", f"Peak V (short square) {_MV}",
        f"Fast trough V (short square) {_MV}", f"Trough V (short square) {_MV}",
        "Upstroke/downstroke ratio (short square)", "Threshold I (short square) (picoamps)",
    )),
    ("rheobase_ap_voltages", (
        f"Threshold V (long square) {_MV}", f"Peak V (long square) {_MV}",
        f"Fast trough V (long square) {_MV}", f"Trough V (long square) {_MV}",
        "Upstroke/downstroke ratio (long square)",
    )),
    ("rheobase_current", ("Threshold I (long square) (picoamps)",)),
    ("first_spike_latency", ("Latency",)),
    ("ap_waveform", ("AP amplitude (mV)", "AP threshold (mV)", "AP width (ms)")),
    ("ap_kinetics_ahp", (
        "After hyperpolarization (mV)", "AP maximum rate of rise (Upstroke) (mV/ms)",
    )),
    ("passive_membrane", (
        "Resting membrane potential (mV)", "Input resistance (MΩ)", "tau",
    )),
    ("hyperpolarising_sag", ("Sag ratio",)),
    ("rebound", ("Rebound APs (number)",)),
    ("fi_curve", ("F I curve slope",)),
    ("firing_adaptation", ("Adaptation ratio", "Avg ISI")),
)

MOUSE_VISP_SCHEMA = FamilySchema(
    name="mouse_visp",
    families=_MOUSE_FAMILIES,
    descriptions={
        "ramp_ap": "first AP on the slow current ramp",
        "short_square_ap": "AP evoked by the 3 ms short square",
        "rheobase_ap_voltages": "first AP voltages at rheobase (long square)",
        "rheobase_current": "rheobase: threshold current of the long square",
        "first_spike_latency": "latency of the first spike at rheobase (s)",
        "ap_waveform": "summary AP amplitude, threshold and width",
        "ap_kinetics_ahp": "after-hyperpolarisation and maximal upstroke rate",
        "passive_membrane": "resting potential, input resistance, time constant (ms)",
        "hyperpolarising_sag": "sag ratio on hyperpolarising steps",
        "rebound": "rebound APs after hyperpolarisation",
        "fi_curve": "slope of the f-I curve",
        "firing_adaptation": "adaptation ratio and mean inter-spike interval",
    },
)

SCHEMAS: dict[str, FamilySchema] = {
    HUMAN_IPFX_SCHEMA.name: HUMAN_IPFX_SCHEMA,
    MOUSE_VISP_SCHEMA.name: MOUSE_VISP_SCHEMA,
}


#: Consecutive column chunks made by ``resolve_families(None, ..., default="chunks")``.
DEFAULT_N_CHUNKS = 12
_DEFAULTS = ("error", "columns", "chunks")


def resolve_families(families, n_features: int, feature_names=None, *,
                     default: str = "error") -> dict[str, list[int]]:
    """Resolve a family map to ``{family: [column positions]}``: the one resolver of every model.

    Every column must be in exactly one family: a column in none is refused
    (a family-token model would silently ignore it, and the per-family sparse
    PCA drop it), as is a column in two families, an unknown column or an
    empty family. Families keep their order (the token order).

    Parameters
    ----------
    families : mapping, sequence of sequences, or None
        ``{name: [columns]}`` with column names (needs ``feature_names``) or
        integer positions; or a sequence of position lists (named ``f0``, ``f1``, ...).
        None: see ``default``.
    n_features : int
        Number of input columns.
    feature_names : sequence of str, optional
        Column names of the input table.
    default : {"error", "columns", "chunks"}
        What ``families=None`` means: refused (``"error"``); one family per
        column (``"columns"``: ``f0``, ``f1``, ...); or up to
        :data:`DEFAULT_N_CHUNKS` consecutive, near-equal chunks (``"chunks"``:
        ``f00``, ``f01``, ...).

    Returns
    -------
    dict
        Family name -> list of int positions, in the order given.

    Raises
    ------
    InputError
        Says which family and column, and how to fix the definition.
    """
    import numpy as np

    if default not in _DEFAULTS:
        raise ValueError(f"default must be one of {', '.join(_DEFAULTS)}, got {default!r}.")
    if families is None and default == "columns":
        return {f"f{i}": [i] for i in range(n_features)}
    if families is None and default == "chunks":
        chunks = np.array_split(np.arange(n_features), min(DEFAULT_N_CHUNKS, n_features))
        return {f"f{k:02d}": [int(i) for i in c] for k, c in enumerate(chunks)}
    if isinstance(families, (str, bytes)) or not isinstance(families, (Mapping, Sequence)) \
            or len(families) == 0:
        raise InputError(f"families must be a non-empty mapping family -> columns, got "
                         f"{type(families).__name__}; pass e.g. dataset.families.")
    if not isinstance(families, Mapping):
        families = {f"f{i}": list(cols) for i, cols in enumerate(families)}
    lookup = None if feature_names is None else {str(n): i for i, n in enumerate(feature_names)}
    resolved: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for fam, cols in families.items():
        if isinstance(cols, (str, bytes)) or len(cols) == 0:
            raise InputError(f"feature family {fam!r} must be a non-empty list of columns, got {cols!r}.")
        indices = []
        for col in cols:
            if isinstance(col, (int, np.integer)) and not isinstance(col, bool):
                pos = int(col)
                if not 0 <= pos < n_features:
                    raise InputError(f"feature family {fam!r} names column index {pos}, but the input "
                                     f"has {n_features} columns; fix the family definition.")
            elif lookup is None:
                raise InputError(f"feature family {fam!r} names column {col!r} but the input has no "
                                 "column names; fit on a pandas DataFrame or give the families as "
                                 "integer positions.")
            elif str(col) not in lookup:
                raise InputError(f"feature family {fam!r} names column {col!r}, which is not in the "
                                 "training table; fix the family definition or the table's columns.")
            else:
                pos = lookup[str(col)]
            if pos in owner:
                raise InputError(f"column {col!r} is in two feature families ({owner[pos]!r} and "
                                 f"{fam!r}); put it in exactly one.")
            owner[pos] = str(fam)
            indices.append(pos)
        resolved[str(fam)] = indices
    lost = [j for j in range(n_features) if j not in owner]
    if lost:
        name = lost[0] if feature_names is None else feature_names[lost[0]]
        raise InputError(f"column {name!r} is in no feature family ({len(lost)} such columns); add "
                         "it to a family or drop it from the input.")
    return resolved
