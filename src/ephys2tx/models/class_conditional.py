"""Class-conditional alignment: rig shift and label shift estimated together, by EM.

Marginal alignment (quantile, optimal transport) forces the query's feature
distributions onto the reference's, which is only right if the query has the
reference's class mix. Here the query is modelled as a *mixture of the
reference's class-conditional distributions*, seen through an unknown
per-feature affine map (the rig):

    u_i = a ⊙ z_i + b,    u_i ~ Σ_k π_k N(μ_k, Σ_k)

where ``z_i`` is query cell ``i`` in the reference space (log where the
reference feature is positive, then standardised with the reference's mean and
SD), ``μ_k, Σ_k`` are the reference class means and (Ledoit-Wolf shrunk)
covariances, ``π`` the query's unknown class mix and ``(a_j, b_j)`` the unknown
per-feature scale and offset. Priors keep the rig small unless the data insist:

* ``log a_j ~ N(0, s_a²)`` and ``b_j ~ N(0, s_b²)``, with ``s_a, s_b`` from what
  a rig can plausibly do to that feature (:func:`ephys2tx.features.rig_shift.prior_scales`:
  ±15 mV junction potentials on absolute voltages, ×0.5-2 on resistances and
  time constants, ...), times ``offset_prior_scale``;
* ``π ~ Dirichlet`` centred on the reference's mix with ``pseudo_count`` cells.

So a small or unshifted query is left (almost) alone, and a query rich in one
class is explained by ``π`` rather than by dragging every feature. EM: the
E-step computes each cell's class responsibilities from the full-covariance
Gaussians on its observed features (missing values are marginalised, per
missingness pattern); the M-step updates ``π`` in closed form and each
``(a_j, b_j)`` by a few Newton steps on the expected log-likelihood with the
class-conditional variances (a generalised EM step, one feature at a time).
A per-cell class prior (e.g. from the cell's cortical layer) can replace the
estimated ``π``.

The aligned features (``a ⊙ z + b`` mapped back to the original units) are
then read by any reference classifier; ``π`` (or the per-cell prior) adjusts
its probabilities by Bayes' rule (:func:`ephys2tx.models.label_shift.apply_prior`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ephys2tx.data.user_tables import check_finite, feature_frame
from ephys2tx.errors import InputError
from ephys2tx.models.standardise import check_feature_values

__all__ = ["AlignmentResult", "ClassConditionalAligner"]

_CLIP = 8.0
#: ``covariance="auto"`` uses one covariance per class when every class has this many
#: cells per feature.
FULL_COVARIANCE_CELLS_PER_FEATURE = 10
_LOG2PI = np.log(2 * np.pi)


@dataclass
class AlignmentResult:
    """What :meth:`ClassConditionalAligner.align` estimated.

    Attributes
    ----------
    aligned : DataFrame
        The query in the reference's units after the estimated affine map (NaN kept).
    prior : ndarray (K,)
        Estimated class mix of the query (mean responsibility when a per-cell
        prior was given).
    responsibilities : ndarray (n, K)
        Class posteriors of the generative model.
    scale, offset : Series
        ``a_j`` and ``b_j`` (standardised reference space).
    n_iter : int
    converged : bool
    objective : list of float
        Penalised log-likelihood per iteration (non-decreasing up to the
        generalised M-step's approximation).
    params : dict
    """

    aligned: pd.DataFrame
    prior: np.ndarray
    responsibilities: np.ndarray
    scale: pd.Series
    offset: pd.Series
    n_iter: int
    converged: bool
    objective: list = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def feature_shift(self) -> pd.DataFrame:
        """Per feature: estimated scale and offset, most shifted first."""
        size = np.abs(np.log(self.scale.to_numpy())) + np.abs(self.offset.to_numpy())
        return (pd.DataFrame({"scale": self.scale, "offset_sd": self.offset, "size": size})
                .sort_values("size", ascending=False))


class ClassConditionalAligner(BaseEstimator):
    """Joint EM for the query's class mix and a per-feature affine rig map.

    Parameters
    ----------
    covariance : {"auto", "full", "tied"}
        Class covariances: one per class shrunk towards the pooled one, or the
        pooled one for all classes; ``auto``: full when every class has at
        least :data:`FULL_COVARIANCE_CELLS_PER_FEATURE` cells per feature
        (mouse VISp on 21 features), tied otherwise (human, 93 features:
        68 Lamp5 cells cannot estimate a 93 x 93 covariance).
    pseudo_count : float
        Weight (in cells) of the Dirichlet prior that centres ``π`` on the
        reference's class mix.
    offset_prior_scale : float
        Multiplies the prior SDs of ``a`` and ``b``: < 1 trusts the reference
        more, > 1 lets the rig move features further.
    max_iter, tol : int, float
        EM stops when the penalised log-likelihood per cell improves by less than ``tol``.
    min_cells : int
        Queries with fewer cells are not aligned (the map stays the identity);
        ``π`` is still estimated.
    mean_relevance : float or None
        If set, each class mean may also move for the query by a MAP update with
        this relevance (in cells; Reynolds et al. 2000's adaptation of mixture
        means): a class whose cells differ from the reference's in a way no
        per-feature rig explains (another species, slice culture) keeps its
        cells. None: class means fixed.

    Attributes
    ----------
    features_ : list of str
    classes_ : ndarray
    log_features_ : ndarray of bool
        Features modelled on a log scale (positive in >= 99% of reference cells).
    floor_, mean_, scale_ : ndarray
        Log floor, and mean/SD of the transformed reference.
    means_ : ndarray (K, d)
    covariances_ : ndarray (K, d, d)
    prior_ : ndarray (K,)
        The reference's class mix.
    offset_sd_, log_scale_sd_ : ndarray (d,)
        Prior SDs of ``b`` and ``log a``.
    """

    def __init__(self, covariance="auto", pseudo_count=10.0, offset_prior_scale=1.0,
                 max_iter=200, tol=1e-5, min_cells=10, mean_relevance=None):
        self.mean_relevance = mean_relevance
        self.covariance = covariance
        self.pseudo_count = pseudo_count
        self.offset_prior_scale = offset_prior_scale
        self.max_iter = max_iter
        self.tol = tol
        self.min_cells = min_cells

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing features are marginalised
        tags.target_tags.required = True
        return tags

    # ------------------------------------------------------------------ reference space

    def _frame(self, X) -> pd.DataFrame:
        if isinstance(X, pd.DataFrame):
            return X
        X = np.asarray(X, dtype=float)
        if X.ndim != 2:
            raise InputError(f"expected a 2-D table of features, got shape {X.shape}.")
        return pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])])

    def _transform(self, values: np.ndarray) -> np.ndarray:
        out = np.array(values, dtype=float)
        logged = self.log_features_
        if logged.any():
            out[:, logged] = np.log(np.maximum(out[:, logged], self.floor_[logged]))
        return out

    def to_space(self, X) -> np.ndarray:
        """Standardised (log where positive) reference-space coordinates of ``X`` (NaN kept)."""
        check_is_fitted(self, "means_")
        X = self._frame(X)
        missing = [f for f in self.features_ if f not in X.columns]
        if missing:
            raise InputError(f"the query lacks feature {missing[0]!r} of the alignment model.")
        frame = feature_frame(X, self.features_, where="the query")
        check_finite(frame, where="the query")  # inf was clipped to 8 SD: a silent, made-up value
        Z = (self._transform(frame.to_numpy()) - self.mean_) / self.scale_
        return np.clip(Z, -_CLIP, _CLIP)

    def from_space(self, Z: np.ndarray) -> np.ndarray:
        """Back from the reference space to the features' own units."""
        check_is_fitted(self, "means_")
        out = np.asarray(Z, dtype=float) * self.scale_ + self.mean_
        logged = self.log_features_
        out[:, logged] = np.exp(out[:, logged])
        return out

    # ------------------------------------------------------------------ fit

    def fit(self, X, y):
        """Learn the reference space and the class-conditional Gaussians.

        Parameters
        ----------
        X : DataFrame (cells x canonical features) or array
            Reference cells; NaN allowed.
        y : array-like
            Their classes.
        """
        from sklearn.covariance import LedoitWolf

        from ephys2tx.features.rig_shift import prior_scales

        if self.covariance not in ("auto", "full", "tied"):
            raise InputError(f"covariance must be 'auto', 'full' or 'tied', got {self.covariance!r}.")
        columns = [str(c) for c in X.columns] if isinstance(X, pd.DataFrame) else None
        check_feature_values(X, columns)
        values, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64,
                                  ensure_min_samples=3)
        check_classification_targets(y)
        self.features_ = columns or [f"x{j}" for j in range(values.shape[1])]
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise InputError("the alignment model needs at least two reference classes.")
        with np.errstate(all="ignore"):
            p01 = np.nanquantile(values, 0.01, axis=0)
            p50 = np.nanquantile(values, 0.5, axis=0)
        self.log_features_ = np.isfinite(p01) & (p01 > 0)
        self.floor_ = np.where(self.log_features_, 0.5 * np.where(np.isfinite(p01), p01, 1.0), -np.inf)
        T = self._transform(values)
        with np.errstate(all="ignore"):
            self.mean_ = np.where(np.isfinite(np.nanmean(T, axis=0)), np.nanmean(T, axis=0), 0.0)
            sd = np.nanstd(T, axis=0)
        self.scale_ = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
        Z = np.clip((T - self.mean_) / self.scale_, -_CLIP, _CLIP)

        K, d = len(self.classes_), Z.shape[1]
        self.means_ = np.zeros((K, d))
        residuals, per_class = [], []
        for k, cls in enumerate(self.classes_):
            Zk = Z[y == cls]
            # the class mean of each feature; 0 (the reference mean) where the class has no value
            # (no "Mean of empty slice" warning on the terminal)
            counts = np.isfinite(Zk).sum(axis=0)
            mu = np.where(counts > 0, np.nansum(Zk, axis=0) / np.maximum(counts, 1), 0.0)
            self.means_[k] = mu
            R = np.where(np.isnan(Zk), 0.0, Zk - mu)  # missing -> the class mean
            residuals.append(R)
            per_class.append(R)
        pooled = LedoitWolf(assume_centered=True).fit(np.vstack(residuals)).covariance_
        smallest = min(len(R) for R in per_class)
        self.covariance_type_ = self.covariance if self.covariance != "auto" else (
            "full" if smallest >= FULL_COVARIANCE_CELLS_PER_FEATURE * d else "tied")
        covs = []
        for R in per_class:
            if self.covariance_type_ == "tied" or len(R) < 5:
                covs.append(pooled)
            else:
                own = LedoitWolf(assume_centered=True).fit(R).covariance_
                covs.append(0.5 * own + 0.5 * pooled)  # shrink each class towards the pooled one
        self.covariances_ = np.stack(covs) + 1e-6 * np.eye(d)[None]
        counts = np.array([np.sum(y == c) for c in self.classes_], dtype=float)
        self.prior_ = counts / counts.sum()

        scales = prior_scales(self.features_) if all(isinstance(f, str) for f in self.features_) else None
        offset_sd = np.full(d, 0.25)
        log_scale_sd = np.full(d, 0.1)
        if scales is not None:
            for j, f in enumerate(self.features_):
                row = scales.loc[f]
                offset_sd[j] = row["offset_sd_standardised"]
                log_scale_sd[j] = row["log_scale_sd"]
                if np.isfinite(row["offset_sd"]) and not self.log_features_[j]:
                    offset_sd[j] = row["offset_sd"] / self.scale_[j]
                elif np.isfinite(row["log_factor_sd"]):
                    if self.log_features_[j]:
                        offset_sd[j] = row["log_factor_sd"] / self.scale_[j]
                    else:
                        log_scale_sd[j] = max(log_scale_sd[j], row["log_factor_sd"])
                        # x -> f x moves a standardised feature by (f - 1) mean / sd too
                        if np.isfinite(p50[j]):
                            offset_sd[j] = max(offset_sd[j], row["log_factor_sd"]
                                               * abs(p50[j]) / self.scale_[j])
        self.offset_sd_ = np.maximum(offset_sd, 1e-3)
        self.log_scale_sd_ = np.maximum(log_scale_sd, 1e-3)
        return self

    # ------------------------------------------------------------------ EM

    def _patterns(self, observed: np.ndarray) -> list:
        """Per missingness pattern: its rows, observed features and, per class, the inverse of
        the Cholesky factor of the observed covariance and half its log-determinant.

        The covariances do not change during the EM, so the factors are inverted once here
        and each EM iteration multiplies (one triangular solve per pattern, class and
        iteration took 110 of 120 s on 2,000 human cells with 72 missingness patterns).
        """
        from scipy.linalg import solve_triangular

        patterns, inverse = np.unique(observed, axis=0, return_inverse=True)
        inverse = np.asarray(inverse).reshape(-1)
        covs = self.covariances_
        # classes sharing one covariance (tied) share its factors: factorised once, not K times
        same = [next(j for j in range(k + 1) if np.array_equal(covs[j], covs[k]))
                for k in range(len(covs))]
        out = []
        for p, pattern in enumerate(patterns):
            obs = np.flatnonzero(pattern)
            if len(obs) == 0:
                continue
            factors = []
            for k, c in enumerate(covs):
                if same[k] < k:
                    factors.append(factors[same[k]])
                    continue
                L = np.linalg.cholesky(c[np.ix_(obs, obs)])
                factors.append((solve_triangular(L, np.eye(len(obs)), lower=True),
                                np.log(np.diag(L)).sum()))
            out.append((np.flatnonzero(inverse == p), obs, factors))
        return out

    def _log_likelihoods(self, U: np.ndarray, patterns: list, means=None) -> np.ndarray:
        """log N(u_obs; μ_k,obs, Σ_k,obs) for every cell and class (missing marginalised)."""
        means = self.means_ if means is None else means
        out = np.zeros((len(U), len(self.classes_)))
        for rows, obs, factors in patterns:
            Uo = U[np.ix_(rows, obs)]
            for k, (L_inv, half_logdet) in enumerate(factors):
                D = (Uo - means[k, obs]) @ L_inv.T
                out[rows, k] = (-0.5 * (D ** 2).sum(axis=1) - half_logdet
                                - 0.5 * len(obs) * _LOG2PI)
        return out

    def _update_affine(self, Z, observed, R, a, b, means=None):
        """Newton steps for each feature's (log a_j, b_j) given responsibilities ``R``."""
        means = self.means_ if means is None else means
        var = np.stack([np.diag(c) for c in self.covariances_])            # (K, d)
        s_b = self.offset_sd_ * self.offset_prior_scale
        s_t = self.log_scale_sd_ * self.offset_prior_scale
        Zf = np.where(observed, Z, 0.0)
        W = R[:, :, None] / var[None, :, :] * observed[:, None, :]          # (n, K, d)
        S_w = W.sum(axis=(0, 1))
        S_z = (W * Zf[:, None, :]).sum(axis=(0, 1))
        S_zz = (W * (Zf ** 2)[:, None, :]).sum(axis=(0, 1))
        S_mu = (W * means[None, :, :]).sum(axis=(0, 1))
        S_zmu = (W * Zf[:, None, :] * means[None, :, :]).sum(axis=(0, 1))
        n_obs = observed.sum(axis=0).astype(float)
        B = S_w + 1.0 / s_b ** 2
        Q = np.maximum(S_zz - S_z ** 2 / B, 1e-12)
        L = S_zmu - S_mu * S_z / B
        t = np.log(a)
        for _ in range(30):
            e = np.exp(t)
            grad = Q * e ** 2 - L * e - n_obs + t / s_t ** 2
            hess = 2 * Q * e ** 2 - L * e + 1.0 / s_t ** 2
            step = grad / np.where(hess > 1e-9, hess, 1e-9)
            step = np.clip(step, -0.5, 0.5)
            t = t - step
            if np.max(np.abs(step)) < 1e-8:
                break
        a = np.exp(t)
        b = (S_mu - a * S_z) / B
        keep = n_obs == 0
        return np.where(keep, 1.0, a), np.where(keep, 0.0, b)

    def _objective(self, ll_mix, a, b, observed, pi):
        s_b = self.offset_sd_ * self.offset_prior_scale
        s_t = self.log_scale_sd_ * self.offset_prior_scale
        jac = (observed * np.log(a)[None, :]).sum()
        penalty = -0.5 * ((np.log(a) / s_t) ** 2).sum() - 0.5 * ((b / s_b) ** 2).sum()
        dirichlet = float(self.pseudo_count * (self.prior_ * np.log(np.maximum(pi, 1e-300))).sum()) \
            if pi is not None else 0.0
        return float(ll_mix.sum() + jac + penalty + dirichlet)

    def align(self, X, class_prior=None) -> AlignmentResult:
        """Estimate the query's class mix and rig map, and return the aligned query.

        Parameters
        ----------
        X : DataFrame
            Query cells with (at least) the reference's features, same units.
        class_prior : array (K,) or (n, K), optional
            A known class mix (all cells, or one per cell, in ``classes_`` order);
            ``π`` is then fixed to it instead of estimated.
        """
        check_is_fitted(self, "means_")
        frame = self._frame(X)
        Z = self.to_space(frame)
        observed = np.isfinite(Z)
        n, d = Z.shape
        K = len(self.classes_)
        fixed = None
        if class_prior is not None:
            fixed = np.asarray(class_prior, dtype=float)
            fixed = np.broadcast_to(fixed, (n, K)) if fixed.ndim == 1 else fixed
            if fixed.shape != (n, K) or np.any(fixed < 0):
                raise InputError(f"class_prior must be ({K},) or ({n}, {K}) non-negative.")
            fixed = fixed / np.maximum(fixed.sum(axis=1, keepdims=True), 1e-300)
        a, b = np.ones(d), np.zeros(d)
        shift = np.zeros((K, d))  # per-class mean adaptation (mean_relevance)
        adapt = self.mean_relevance is not None and float(self.mean_relevance) > 0
        pi = self.prior_.copy()
        objective, converged, it = [], False, 0
        move = n >= int(self.min_cells)
        has_any = observed.any(axis=1)
        patterns = self._patterns(observed)
        for it in range(1, int(self.max_iter) + 1):
            U = np.where(observed, Z * a + b, np.nan)
            ll = self._log_likelihoods(np.nan_to_num(U), patterns, self.means_ + shift)
            logp = np.log(np.maximum(fixed, 1e-300)) if fixed is not None else np.log(pi)[None, :]
            joint = ll + logp
            top = joint.max(axis=1, keepdims=True)
            mix = top[:, 0] + np.log(np.exp(joint - top).sum(axis=1))
            R = np.exp(joint - mix[:, None])
            R[~has_any] = (fixed[~has_any] if fixed is not None else pi)
            objective.append(self._objective(mix[has_any], a, b, observed,
                                             None if fixed is not None else pi))
            if len(objective) > 1 and abs(objective[-1] - objective[-2]) < self.tol * max(n, 1):
                converged = True
                break
            if fixed is None:
                pi = (R[has_any].sum(axis=0) + self.pseudo_count * self.prior_) / \
                     (has_any.sum() + self.pseudo_count)
            if move:
                a, b = self._update_affine(Z, observed, R, a, b, self.means_ + shift)
                if adapt:
                    U = np.where(observed, Z * a + b, 0.0)
                    Ro = R[:, :, None] * observed[:, None, :]                    # (n, K, d)
                    resid = (Ro * (U[:, None, :] - self.means_[None, :, :])).sum(axis=0)
                    shift = resid / (Ro.sum(axis=0) + float(self.mean_relevance))
        U = np.where(observed, Z * a + b, np.nan)
        if adapt:  # each cell moved back by its classes' adaptation: reference class locations
            U = U - R @ shift
        aligned = self.from_space(np.nan_to_num(U))
        aligned[~observed] = np.nan
        aligned_frame = pd.DataFrame(aligned, index=frame.index, columns=self.features_)
        est = R.mean(axis=0) if fixed is not None else pi
        return AlignmentResult(
            aligned=aligned_frame, prior=est, responsibilities=R,
            scale=pd.Series(a, index=self.features_), offset=pd.Series(b, index=self.features_),
            n_iter=it, converged=converged, objective=objective,
            params={"covariance": self.covariance_type_, "pseudo_count": self.pseudo_count,
                    "offset_prior_scale": self.offset_prior_scale, "aligned": bool(move),
                    "mean_relevance": self.mean_relevance,
                    "fixed_prior": fixed is not None})
