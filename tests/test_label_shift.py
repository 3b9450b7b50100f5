"""Label-shift estimation (EM, BBSE) and Bayes' rule, on exact posteriors of a known model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from ephys2tx.errors import InputError
from ephys2tx.models.label_shift import apply_prior, bbse_prior, em_prior, smooth_proba

MEANS = np.array([-2.0, 0.0, 2.5])


def _posteriors(x, prior):
    like = norm.pdf(x[:, None], MEANS[None, :], 1.0)
    joint = like * prior
    return joint / joint.sum(axis=1, keepdims=True)


def _sample(prior, n, rng):
    y = rng.choice(len(prior), size=n, p=prior)
    return rng.normal(MEANS[y], 1.0), y


def test_em_recovers_the_query_class_mix():
    rng = np.random.default_rng(0)
    ref = np.array([0.5, 0.3, 0.2])
    query_mix = np.array([0.1, 0.2, 0.7])
    x, _ = _sample(query_mix, 4000, rng)
    est = em_prior(_posteriors(x, ref), ref, pseudo_count=0.0, floor=0.0)
    np.testing.assert_allclose(est.prior, query_mix, atol=0.03)
    np.testing.assert_allclose(est.proba.sum(axis=1), 1.0)
    assert est.method == "em" and est.params["pseudo_count"] == 0.0


def test_em_leaves_an_unshifted_query_alone_and_shrinks_small_ones():
    rng = np.random.default_rng(1)
    ref = np.array([0.5, 0.3, 0.2])
    x, _ = _sample(ref, 3000, rng)
    np.testing.assert_allclose(em_prior(_posteriors(x, ref), ref).prior, ref, atol=0.03)
    x_small, _ = _sample(np.array([0.0, 0.0, 1.0]), 5, rng)
    free = em_prior(_posteriors(x_small, ref), ref, pseudo_count=0.0).prior
    shrunk = em_prior(_posteriors(x_small, ref), ref, pseudo_count=50.0).prior
    assert np.abs(shrunk - ref).sum() < np.abs(free - ref).sum()


def test_bbse_recovers_the_query_class_mix():
    rng = np.random.default_rng(2)
    ref = np.array([0.4, 0.4, 0.2])
    x_ref, y_ref = _sample(ref, 4000, rng)
    query_mix = np.array([0.7, 0.1, 0.2])
    x, _ = _sample(query_mix, 4000, rng)
    est = bbse_prior(_posteriors(x, ref), ref, _posteriors(x_ref, ref), y_ref)
    np.testing.assert_allclose(est.prior, query_mix, atol=0.05)


def test_apply_prior_is_bayes_rule():
    proba = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    ref = np.array([0.5, 0.3, 0.2])
    same = apply_prior(proba, ref, ref, floor=0.0)
    np.testing.assert_allclose(same, proba)
    new = np.array([0.2, 0.3, 0.5])
    expected = proba * new / ref
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(apply_prior(proba, ref, new, floor=0.0), expected)
    per_row = apply_prior(proba, ref, np.vstack([ref, new]), floor=0.0)
    np.testing.assert_allclose(per_row[0], proba[0])
    np.testing.assert_allclose(per_row[1], expected[1])
    assert apply_prior(proba, ref, np.array([1.0, 0.0, 0.0]))[:, 1:].min() > 0


def test_floor_keeps_every_class_possible():
    proba = np.array([[1.0, 0.0, 0.0]])
    smoothed = smooth_proba(proba, 0.03)
    assert smoothed.min() > 0 and np.isclose(smoothed.sum(), 1.0)
    uniform = np.array([1 / 3] * 3)
    moved = apply_prior(np.array([[0.6, 0.4, 0.0]]), uniform, np.array([0.05, 0.95, 0.0]))
    assert moved.argmax() == 1 and moved[0, 2] > 0
    kept = apply_prior(proba, uniform, np.array([0.0, 0.5, 0.5]))
    assert kept[0, 0] > 0  # neither a zero probability nor a zero prior makes a class impossible


@pytest.mark.parametrize("prior", [[0.5, 0.5], [0.5, -0.1, 0.6], [np.nan, 0.5, 0.5], [0, 0, 0]])
def test_bad_priors_are_input_errors(prior):
    with pytest.raises(InputError):
        apply_prior(np.full((2, 3), 1 / 3), np.array(prior, float), np.array([1 / 3] * 3))


def test_probabilities_that_are_not_probabilities_are_refused():
    """NaN or inf probabilities made every estimated class mix NaN, silently; negative ones
    were used as they were."""
    rng = np.random.RandomState(0)
    proba, ref = rng.dirichlet(np.ones(4), 30), np.full(4, 0.25)
    for bad in (np.nan, np.inf, -0.5):
        edited = proba.copy()
        edited[3, 2] = bad
        for call in (lambda p: em_prior(p, ref), lambda p: apply_prior(p, ref, ref),
                     lambda p: bbse_prior(p, ref, proba, np.arange(30) % 4)):
            with pytest.raises(InputError, match=r"finite and non-negative; row 3, class 2"):
                call(edited)
    with pytest.raises(InputError, match=r"must be \(n_cells, n_classes >= 2\), got shape \(4,\)"):
        smooth_proba(proba[0])


def test_bbse_refuses_codes_that_are_not_class_positions():
    """Labels as text, or codes beyond the classes, gave the reference mix back, silently."""
    rng = np.random.RandomState(0)
    proba, ref = rng.dirichlet(np.ones(4), 30), np.full(4, 0.25)
    for codes in (np.resize(np.array(["Lamp5", "Pvalb", "Sst", "Vip"]), 30), np.arange(30) % 4 + 4):
        with pytest.raises(InputError, match=r"integer class codes in \[0, 4\)"):
            bbse_prior(proba, ref, proba, codes)
    with pytest.raises(InputError, match="do not match the 4 classes"):
        bbse_prior(proba, ref, proba, np.arange(29) % 4)
    with pytest.raises(InputError, match=r"out-of-fold probabilities must be \(n_cells"):
        bbse_prior(proba, ref, proba[:, 0], np.arange(30) % 4)
