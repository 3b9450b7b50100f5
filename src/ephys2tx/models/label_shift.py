"""Label shift: a query whose class mix differs from the reference's.

A classifier's calibrated probabilities ``p(y | x)`` carry the reference's
class mix ``pi_ref``. Under label shift (``p(x | y)`` unchanged, ``p(y)``
changed) the right posterior for a query with class mix ``pi`` is Bayes' rule

    p_q(y | x)  ∝  p(y | x) * pi(y) / pi_ref(y)

(:func:`apply_prior`). ``pi`` is either known (a layer's class mix, an
explicit ``--prior``) or estimated from the unlabelled query:

* :func:`em_prior` — the EM of Saerens, Latinne & Decaestecker (2002, Neural
  Computation 14:21-41), with a Dirichlet pseudo-count towards ``pi_ref`` (a
  MAP estimate: small queries stay near the reference mix) and a probability
  floor (isotonic calibration gives exact zeros, which EM can never revive);
* :func:`bbse_prior` — black-box shift estimation (Lipton, Wang & Smola 2018,
  ICML): solve ``C w = mu`` with the out-of-fold confusion matrix ``C`` of the
  reference and the query's mean prediction ``mu``.

All functions are pure NumPy and return the parameters they used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ephys2tx.errors import InputError

__all__ = ["PriorEstimate", "apply_prior", "bbse_prior", "em_prior", "smooth_proba"]

#: Probability floor mixed into calibrated probabilities before any prior arithmetic.
DEFAULT_FLOOR = 0.01


def _check_proba(proba, what: str = "probabilities") -> np.ndarray:
    """``proba`` as a float array (n_cells, n_classes >= 2) of finite, non-negative values."""
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise InputError(f"{what} must be (n_cells, n_classes >= 2), got shape {proba.shape}.")
    bad = ~np.isfinite(proba) | (proba < 0)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{what} must be finite and non-negative; row {row}, class {col} is "
                         f"{float(proba[row, col])!r} ({int(bad.any(axis=1).sum())} such row(s)): drop the "
                         "cells without a prediction first.")
    return proba


def _check(proba, prior) -> tuple[np.ndarray, np.ndarray]:
    proba = _check_proba(proba)
    prior = np.asarray(prior, dtype=float)
    if prior.ndim != 1 or prior.shape[0] != proba.shape[1]:
        raise InputError(f"prior must have one value per class ({proba.shape[1]}), got shape {prior.shape}.")
    if not np.all(np.isfinite(prior)) or np.any(prior < 0) or prior.sum() <= 0:
        raise InputError(f"prior must be non-negative with a positive sum, got {prior.tolist()}.")
    return proba, prior / prior.sum()


def smooth_proba(proba, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """``(1 - floor) * p + floor / K``: no class ever has probability exactly zero."""
    proba = _check_proba(proba)
    k = proba.shape[1]
    return (1.0 - floor) * proba + floor / k


def apply_prior(proba, reference_prior, new_prior, *, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Bayes' rule: divide by the reference's class mix, multiply by the new one, renormalise.

    Parameters
    ----------
    proba : array (n, K)
        Calibrated probabilities under the reference's class mix.
    reference_prior : array (K,)
        The reference's class mix (what the calibrated probabilities assume).
    new_prior : array (K,) or (n, K)
        The query's class mix: one for all cells, or one row per cell (e.g. per layer).
    floor : float
        Mixed into the probabilities and into the new prior (:func:`smooth_proba`):
        no class is ever made impossible.
    """
    proba, reference_prior = _check(proba, reference_prior)
    new_prior = np.asarray(new_prior, dtype=float)
    if new_prior.ndim == 1:
        new_prior = np.broadcast_to(new_prior, proba.shape)
    if new_prior.shape != proba.shape or np.any(new_prior < 0) or not np.all(np.isfinite(new_prior)):
        raise InputError(f"new prior must be (K,) or (n, K) non-negative, got shape {new_prior.shape}.")
    rows = new_prior / np.maximum(new_prior.sum(axis=1, keepdims=True), 1e-300)
    rows = smooth_proba(rows, floor)  # a prior of 0 would make a class impossible
    q = smooth_proba(proba, floor) * rows / np.maximum(reference_prior, 1e-12)
    return q / q.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class PriorEstimate:
    """An estimated class mix of the query.

    Attributes
    ----------
    prior : ndarray (K,)
    proba : ndarray (n, K)
        The probabilities adjusted to ``prior`` by Bayes' rule.
    method : str
    n_iter : int
    params : dict
        Parameters used.
    """

    prior: np.ndarray
    proba: np.ndarray
    method: str
    n_iter: int
    params: dict


def em_prior(proba, reference_prior, *, pseudo_count: float = 10.0, floor: float = DEFAULT_FLOOR,
             max_iter: int = 200, tol: float = 1e-6) -> PriorEstimate:
    """MAP-EM estimate of the query's class mix (Saerens et al. 2002).

    Parameters
    ----------
    proba : array (n, K)
        Calibrated probabilities of the query cells under ``reference_prior``.
    reference_prior : array (K,)
    pseudo_count : float
        Dirichlet prior ``Dir(1 + pseudo_count * reference_prior)``: the estimate is
        ``(sum of posteriors + pseudo_count * reference_prior) / (n + pseudo_count)``.
    floor : float
        Probability floor (:func:`smooth_proba`).
    max_iter, tol : int, float
        Stop when no class proportion moves by more than ``tol``.
    """
    proba, ref = _check(proba, reference_prior)
    if len(proba) == 0:
        return PriorEstimate(ref.copy(), proba.copy(), "em", 0,
                             {"pseudo_count": pseudo_count, "floor": floor})
    p = smooth_proba(proba, floor)
    ratio = p / np.maximum(ref, 1e-12)
    pi = ref.copy()
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        q = ratio * pi
        q /= q.sum(axis=1, keepdims=True)
        new = (q.sum(axis=0) + pseudo_count * ref) / (len(q) + pseudo_count)
        done = np.max(np.abs(new - pi)) < tol
        pi = new
        if done:
            break
    q = ratio * pi
    q /= q.sum(axis=1, keepdims=True)
    return PriorEstimate(pi, q, "em", n_iter, {"pseudo_count": pseudo_count, "floor": floor,
                                               "max_iter": max_iter, "tol": tol})


def bbse_prior(proba, reference_prior, oof_proba, oof_codes, *, floor: float = DEFAULT_FLOOR,
               ridge: float = 1e-3) -> PriorEstimate:
    """Black-box shift estimation with soft predictions (Lipton et al. 2018).

    ``C[i, j] = mean over reference cells of p(ŷ = i | x) 1[y = j]`` (out of fold),
    ``mu[i] = mean over query cells of p(ŷ = i | x)``; ``w = argmin |C w - mu|² + ridge |w - 1|²``
    subject to ``w >= 0``, and the query mix is ``w * reference_prior`` renormalised.
    """
    from scipy.optimize import nnls

    proba, ref = _check(proba, reference_prior)
    oof = _check_proba(oof_proba, "out-of-fold probabilities")
    codes = np.asarray(oof_codes)
    k = proba.shape[1]
    if oof.shape[1] != k or len(oof) != len(codes) or codes.ndim != 1:
        raise InputError(f"out-of-fold probabilities {oof.shape} and codes {codes.shape} do not match "
                         f"the {k} classes: one row of {k} probabilities per code.")
    if codes.dtype.kind not in "iu" or codes.min(initial=0) < 0 or codes.max(initial=0) >= k:
        raise InputError(f"out-of-fold codes must be integer class codes in [0, {k}) (positions of "
                         f"the probability columns), got {codes.dtype} values such as "
                         f"{codes[:3].tolist()}; encode the labels first.")
    C = np.zeros((k, k))
    for j in range(k):
        C[:, j] = oof[codes == j].sum(axis=0) / len(codes)
    mu = proba.mean(axis=0) if len(proba) else C.sum(axis=1)
    # ridge towards w = 1 (no shift), as an augmented least-squares system
    A = np.vstack([C, np.sqrt(ridge) * np.eye(k)])
    rhs = np.concatenate([mu, np.sqrt(ridge) * np.ones(k)])
    w, _ = nnls(A, rhs)
    pi = w * ref
    pi = pi / pi.sum() if pi.sum() > 0 else ref.copy()
    return PriorEstimate(pi, apply_prior(proba, ref, pi, floor=floor), "bbse", 1,
                         {"ridge": ridge, "floor": floor})
