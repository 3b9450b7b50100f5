"""Shift alarm: is a query unlike the reference, before any alignment hides it?

Three measurements on the *unaligned* mapped features:

1. **Dataset-level two-sample test** (Gretton et al. 2012): the maximum mean
   discrepancy (MMD, Gaussian kernel with the median-distance bandwidth) between
   the query and the reference, in the reference space (log where positive,
   standardised on the reference, missing values at the reference median),
   with a permutation p-value. Two versions:

   * *marginal*: query vs reference as it is. It fires when the query differs
     in any way, including only by its class mix (a layer-1 query does);
   * *beyond label shift*: query vs a reference subsample drawn with the
     query's class mix as estimated by EM on the model's calibrated
     probabilities (:func:`ephys2tx.models.label_shift.em_prior`). It fires when
     a different class mix cannot explain the difference: another rig,
     pipeline, species, or cells unlike any reference class.

2. **Per-feature ranking**: two-sample Kolmogorov-Smirnov statistic of each
   feature against the reference and against the class-mix-reweighted
   reference, with the median shift in reference SD units. Above
   :data:`MAX_KS_QUERY` query cells the KS statistics read a uniform random
   subsample of that many query cells (drawn with ``random_state``, after the
   MMD tests' draws, so smaller queries are untouched). The KS statistic is
   the sup-distance between two empirical CDFs, so the subsample moves it by
   at most the distance between the subsample's and the full query's CDFs:
   below 0.014 per feature with probability 0.99 at 20,000 cells (the DKW
   inequality, ``2 exp(-2 n eps^2)``; tighter still when drawing without
   replacement), well inside the statistic's own noise from the at most 1,000
   reference cells (about 0.05). The KS columns rank the features and name the
   most shifted ones; no decision reads them. The median shift uses all cells.

3. **Per-cell OOD** (the reference model's score, computed here on the
   unaligned features) and a binomial test of the flagged share against the
   5% expected for reference cells.

The alarm fires (``level == "alarm"``) when the beyond-label-shift test or the
OOD excess is significant at ``alpha``; a significant marginal test alone is a
``note`` (the class mix differs). The false-alarm rate on held-out reference
cells and the power on the shift scenarios are measured by
:mod:`ephys2tx.experiments.shift_benchmark` (docs/shift.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["ShiftReport", "mmd_permutation_test", "ood_alarm", "reference_space", "shift_alarm"]

#: Significance level of the alarm.
ALPHA = 0.01
#: Features missing in more than this share of query cells are left out of the tests.
MAX_MISSING = 0.5
#: Query cells read by the per-feature KS statistics: a larger query is subsampled (uniformly,
#: without replacement, with the alarm's ``random_state``) to this many cells. The sorts of the
#: KS were half the alarm's time on 300,000 cells; the subsample error is below 0.014 per feature
#: with probability 0.99 (DKW), against about 0.05 from the 1,000 reference cells (module docstring).
MAX_KS_QUERY = 20_000


#: Below this many query cells, "no shift detected" says that the test has little power.
SMALL_QUERY = 20


def reference_space(query: pd.DataFrame, reference: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list]:
    """Query and reference in the reference space: log where positive, standardised, median-filled.

    Returns
    -------
    (Zq, Zr, features)
        Features missing in more than :data:`MAX_MISSING` of query cells (or in
        all reference cells) are dropped.
    """
    feats = [f for f in query.columns if f in reference.columns
             and query[f].notna().mean() >= 1 - MAX_MISSING and reference[f].notna().any()]
    R = reference[feats].to_numpy(dtype=float)
    Q = query[feats].to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        p01 = np.nanquantile(R, 0.01, axis=0)
    logged = np.isfinite(p01) & (p01 > 0)
    floor = np.where(logged, 0.5 * np.where(np.isfinite(p01), p01, 1.0), 0.0)

    def tr(V):
        V = V.copy()
        V[:, logged] = np.log(np.maximum(V[:, logged], floor[logged]))
        return V

    R, Q = tr(R), tr(Q)
    med = np.nanmedian(R, axis=0)
    sd = np.nanstd(R, axis=0)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
    Zr = np.clip((np.where(np.isnan(R), med, R) - med) / sd, -8, 8)
    Zq = np.clip((np.where(np.isnan(Q), med, Q) - med) / sd, -8, 8)
    return Zq, Zr, feats


def mmd_permutation_test(X: np.ndarray, Y: np.ndarray, *, n_permutations: int = 200,
                         random_state=0) -> tuple[float, float, float]:
    """MMD² (biased, Gaussian kernel, median heuristic) and its permutation p-value.

    Returns
    -------
    (mmd2, p_value, bandwidth)
    """
    rng = np.random.default_rng(random_state)
    n, m = len(X), len(Y)
    if n < 2 or m < 2:
        return float("nan"), float("nan"), float("nan")
    Z = np.vstack([X, Y])
    sq = (Z ** 2).sum(axis=1)
    D2 = np.maximum(sq[:, None] + sq[None, :] - 2 * Z @ Z.T, 0.0)
    sub = rng.choice(len(Z), size=min(len(Z), 1000), replace=False)
    off = D2[np.ix_(sub, sub)][np.triu_indices(len(sub), k=1)]
    h2 = float(np.median(off[off > 0])) if np.any(off > 0) else 1.0
    K = np.exp(-D2 / h2)
    N = n + m
    S = np.zeros((N, n_permutations + 1))
    S[:n, 0] = 1.0
    for p in range(1, n_permutations + 1):
        S[rng.permutation(N)[:n], p] = 1.0
    KS = K @ S
    total = K.sum(axis=1)
    s_k_s = (S * KS).sum(axis=0)                      # s' K s
    s_k_1 = (S * total[:, None]).sum(axis=0)          # s' K 1
    one_k_one = total.sum()
    # MMD² = s'Ks/n² + (1-s)'K(1-s)/m² - 2 s'K(1-s)/(nm)
    rest = one_k_one - 2 * s_k_1 + s_k_s
    cross = s_k_1 - s_k_s
    stats = s_k_s / n ** 2 + rest / m ** 2 - 2 * cross / (n * m)
    observed = float(stats[0])
    p_value = float((1 + np.sum(stats[1:] >= observed)) / (n_permutations + 1))
    return observed, p_value, float(np.sqrt(h2))


def _weighted_ks(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """KS statistic between sample ``x`` and sample ``y`` (``y`` optionally weighted)."""
    x = np.sort(x[np.isfinite(x)])
    ok = np.isfinite(y)
    y = y[ok]
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)[ok]
    if len(x) == 0 or len(y) == 0 or w.sum() <= 0:
        return float("nan")
    order = np.argsort(y)
    y, w = y[order], w[order] / w.sum()
    grid = np.concatenate([x, y])
    fx = np.searchsorted(x, grid, side="right") / len(x)
    fy = np.concatenate([[0.0], np.cumsum(w)])[np.searchsorted(y, grid, side="right")]
    return float(np.max(np.abs(fx - fy)))


@dataclass
class ShiftReport:
    """The shift alarm of one query against one reference.

    Attributes
    ----------
    level : {"ok", "note", "alarm"}
    message : str
        One line for the terminal.
    n_query, n_reference : int
    features : list of str
        Features the tests used.
    mmd2, p_marginal : float
    mmd2_beyond_label_shift, p_beyond_label_shift : float
    class_mix : dict
        Class mix of the query estimated by EM (calibrated probabilities).
    reference_mix : dict
    ood_rate, ood_expected, p_ood : float
    per_feature : DataFrame
        ``ks``, ``ks_beyond_label_shift``, ``median_shift_sd`` per feature,
        sorted by ``ks_beyond_label_shift``.
    params : dict
    """

    level: str
    message: str
    n_query: int
    n_reference: int
    features: list
    mmd2: float
    p_marginal: float
    mmd2_beyond_label_shift: float
    p_beyond_label_shift: float
    class_mix: dict
    reference_mix: dict
    ood_rate: float
    ood_expected: float
    p_ood: float
    per_feature: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    params: dict = field(default_factory=dict)

    @property
    def fired(self) -> bool:
        """Whether the loud alarm fires."""
        return self.level == "alarm"

    def as_dict(self) -> dict:
        """JSON-able summary (per-feature table as records)."""
        out = {k: getattr(self, k) for k in (
            "level", "message", "n_query", "n_reference", "features", "mmd2", "p_marginal",
            "mmd2_beyond_label_shift", "p_beyond_label_shift", "class_mix", "reference_mix",
            "ood_rate", "ood_expected", "p_ood", "params")}
        out["per_feature"] = self.per_feature.reset_index().to_dict(orient="records")
        return out


def _mix_sample(labels: np.ndarray, classes, mix: np.ndarray, size: int, rng) -> np.ndarray:
    """Row indices of a reference subsample with class proportions ``mix``."""
    rows = []
    counts = np.floor(np.asarray(mix) * size).astype(int)
    for cls, k in zip(classes, counts):
        pool = np.flatnonzero(labels == cls)
        if k == 0 or len(pool) == 0:
            continue
        rows.append(rng.choice(pool, size=k, replace=k > len(pool)))
    return np.concatenate(rows) if rows else np.arange(0)


def shift_alarm(query: pd.DataFrame, reference: pd.DataFrame, reference_labels, *,
                proba=None, reference_prior=None, classes=None, ood_flags=None,
                ood_expected: float = 0.05, alpha: float = ALPHA, n_permutations: int = 200,
                max_reference: int = 1000, max_query: int = 1000,
                max_ks_query: int | None = MAX_KS_QUERY, random_state=0) -> ShiftReport:
    """Test a query against the reference before any alignment.

    Parameters
    ----------
    query, reference : DataFrame
        Canonical features (unaligned); the tests use the shared columns.
    reference_labels : array-like
        Class of each reference cell.
    proba : array (n_query, K), optional
        Calibrated class probabilities of the query cells (unaligned); needed
        for the beyond-label-shift test (its class mix is estimated by EM).
    reference_prior : array (K,), optional
        Class mix the probabilities assume (default: the reference labels' mix).
    classes : list, optional
        Class order of ``proba`` (default: sorted reference labels).
    ood_flags : array of bool, optional
        Per-cell OOD flags of the query (unaligned features).
    ood_expected : float
        Flag rate of in-distribution cells (the OOD threshold's false-alarm rate).
    alpha : float
        Significance level.
    n_permutations : int
        Raised to ``2 / alpha`` if lower (a permutation p-value cannot go below
        ``1 / (permutations + 1)``).
    max_reference, max_query : int
        Cells of each side used by the MMD tests (random subsamples above these;
        the kernel matrix is quadratic in their sum).
    max_ks_query : int or None
        Query cells read by the per-feature KS statistics (a uniform random
        subsample above it, see :data:`MAX_KS_QUERY`); None reads all cells.
    random_state : int
    """
    from scipy.stats import binomtest

    from ephys2tx.models.label_shift import em_prior

    rng = np.random.default_rng(random_state)
    # a permutation p-value is at least 1 / (permutations + 1): enough of them to reach alpha
    n_permutations = max(int(n_permutations), int(np.ceil(2.0 / alpha)))
    labels = np.asarray(reference_labels)
    classes = list(classes) if classes is not None else sorted(pd.unique(labels))
    ref_mix = np.array([np.mean(labels == c) for c in classes])
    reference_prior = ref_mix if reference_prior is None else np.asarray(reference_prior, float)
    has_value = query.notna().any(axis=1).to_numpy()
    q = query if has_value.all() else query.loc[has_value]  # read only
    Zq, Zr, feats = reference_space(q, reference)
    n, m = len(Zq), len(Zr)
    sub = rng.choice(m, size=min(m, max_reference), replace=False)
    q_sub = rng.choice(n, size=min(n, max_query), replace=False) if n else np.arange(0)
    mmd2 = p_marg = mmd2_ls = p_ls = float("nan")
    mix = reference_prior.copy()
    if feats and n >= 5:
        mmd2, p_marg, _ = mmd_permutation_test(Zq[q_sub], Zr[sub], n_permutations=n_permutations,
                                               random_state=rng.integers(2 ** 31))
    if proba is not None and np.asarray(proba).shape[0] == len(query):
        P = np.asarray(proba, float)[has_value]
        if len(P):
            mix = em_prior(P, reference_prior).prior
        if feats and n >= 5:
            rows = _mix_sample(labels, classes, mix, min(m, max_reference), rng)
            if len(rows) >= 5:
                mmd2_ls, p_ls, _ = mmd_permutation_test(Zq[q_sub], Zr[rows],
                                                        n_permutations=n_permutations,
                                                        random_state=rng.integers(2 ** 31))
    weights = np.ones(m)
    for k, cls in enumerate(classes):
        in_k = labels == cls
        if in_k.any():
            weights[in_k] = mix[k] / in_k.mean()
    # the KS sorts on a bounded subsample of a large query (drawn last: earlier draws unchanged)
    ks_rows = slice(None)
    if max_ks_query is not None and n > max_ks_query:
        ks_rows = np.sort(rng.choice(n, size=int(max_ks_query), replace=False))
    Zks = Zq[ks_rows]
    per_feature = pd.DataFrame(
        {"ks": [_weighted_ks(Zks[:, j], Zr[:, j]) for j in range(len(feats))],
         "ks_beyond_label_shift": [_weighted_ks(Zks[:, j], Zr[:, j], weights) for j in range(len(feats))],
         "median_shift_sd": [float(np.median(Zq[:, j]) - np.median(Zr[:, j])) for j in range(len(feats))]},
        index=pd.Index(feats, name="feature")).sort_values("ks_beyond_label_shift", ascending=False)

    flags = None if ood_flags is None else np.asarray(pd.Series(ood_flags).fillna(False), bool)[has_value]
    ood_rate = float(flags.mean()) if flags is not None and len(flags) else float("nan")
    p_ood = float(binomtest(int(flags.sum()), len(flags), ood_expected, alternative="greater").pvalue) \
        if flags is not None and len(flags) else float("nan")

    beyond = np.isfinite(p_ls) and p_ls < alpha
    marginal = np.isfinite(p_marg) and p_marg < alpha
    ood_excess = np.isfinite(p_ood) and p_ood < alpha and ood_rate > 2 * ood_expected
    top = ", ".join(per_feature.index[:3])
    if beyond or ood_excess:
        level = "alarm"
        why = []
        if beyond:
            why.append(f"unlike the reference beyond a class-mix difference (MMD p={p_ls:.3g}; "
                       f"most shifted: {top})")
        if ood_excess:
            why.append(f"{ood_rate:.0%} of cells out of distribution (5% expected, p={p_ood:.2g})")
        message = ("SHIFT ALARM: the query is " + "; ".join(why) + ". Predictions may be wrong: "
                   "see the first section of report.md.")
    elif marginal:
        level = "note"
        message = (f"the query's features differ from the reference (MMD p={p_marg:.3g}), as a "
                   f"different class mix would explain (estimated: "
                   + ", ".join(f"{c} {v:.0%}" for c, v in zip(classes, mix)) + ").")
    else:
        level = "ok"
        message = (f"no shift detected between query and reference (MMD p={p_marg:.3g}; "
                   f"{ood_rate:.0%} of cells OOD)." if np.isfinite(p_marg)
                   else "too few cells or features to test for a shift.")
        if np.isfinite(p_marg) and n < SMALL_QUERY:  # "no shift detected" is weak evidence here
            message += (f" With {n} cells the test has little power: a shift of a rig or a cell "
                        "type may go undetected.")
    return ShiftReport(
        level=level, message=message, n_query=int(n), n_reference=int(m), features=feats,
        mmd2=mmd2, p_marginal=p_marg, mmd2_beyond_label_shift=mmd2_ls, p_beyond_label_shift=p_ls,
        class_mix={c: float(v) for c, v in zip(classes, mix)},
        reference_mix={c: float(v) for c, v in zip(classes, reference_prior)},
        ood_rate=ood_rate, ood_expected=float(ood_expected), p_ood=p_ood, per_feature=per_feature,
        params={"alpha": alpha, "n_permutations": n_permutations, "max_reference": max_reference,
                "max_query": max_query, "max_ks_query": max_ks_query,
                "max_missing": MAX_MISSING, "kernel": "gaussian, median heuristic",
                "random_state": random_state if isinstance(random_state, int) else None})


def ood_alarm(ood_flags, *, ood_expected: float = 0.05, alpha: float = ALPHA) -> ShiftReport:
    """The alarm from the per-cell OOD flags alone (``predict``: a saved model has no reference cells)."""
    from scipy.stats import binomtest

    flags = np.asarray(pd.Series(ood_flags).dropna(), dtype=bool)
    n = len(flags)
    rate = float(flags.mean()) if n else float("nan")
    p = float(binomtest(int(flags.sum()), n, ood_expected, alternative="greater").pvalue) if n else float("nan")
    fired = np.isfinite(p) and p < alpha and rate > 2 * ood_expected
    message = (f"SHIFT ALARM: {rate:.0%} of cells are out of distribution ({ood_expected:.0%} expected, "
               f"p={p:.2g}); predictions may be wrong: check units and definitions, or use "
               "`ephys2tx map`, which tests the shift and can correct it." if fired else
               f"{rate:.0%} of cells out of distribution ({ood_expected:.0%} expected).")
    return ShiftReport(level="alarm" if fired else "ok", message=message, n_query=n, n_reference=0,
                       features=[], mmd2=float("nan"), p_marginal=float("nan"),
                       mmd2_beyond_label_shift=float("nan"), p_beyond_label_shift=float("nan"),
                       class_mix={}, reference_mix={}, ood_rate=rate, ood_expected=ood_expected,
                       p_ood=p, params={"alpha": alpha, "test": "OOD flags only"})
