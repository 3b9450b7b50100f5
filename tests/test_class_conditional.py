"""Joint EM of class mix and rig map: recovers known shifts, leaves unshifted queries alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from ephys2tx.errors import InputError
from ephys2tx.models.class_conditional import ClassConditionalAligner

FEATURES = ["v_baseline", "input_resistance", "peak_deltav_rheo", "upstroke_downstroke_ratio_rheo"]
MEANS = np.array([[-70.0, 150.0, 60.0, 2.0],     # class 0
                  [-65.0, 300.0, 50.0, 3.5],     # class 1
                  [-75.0, 90.0, 70.0, 1.5]])     # class 2
SDS = np.array([3.0, 0.25, 5.0, 0.3])            # input resistance: SD on the log scale


def _cells(labels, rng):
    X = rng.normal(MEANS[labels], SDS)
    X[:, 1] = MEANS[labels, 1] * np.exp(rng.normal(0, SDS[1], len(labels)))
    return pd.DataFrame(X, columns=FEATURES)


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(0)
    y = rng.choice(3, size=1500, p=[0.5, 0.3, 0.2])
    return _cells(y, rng), y


def test_recovers_class_mix_and_junction_offset(reference):
    X, y = reference
    rng = np.random.default_rng(1)
    yq = rng.choice(3, size=600, p=[0.1, 0.2, 0.7])
    Q = _cells(yq, rng)
    Q["v_baseline"] += 8.0           # a junction potential
    Q["input_resistance"] *= 1.6     # another temperature
    aligner = ClassConditionalAligner().fit(X, y)
    assert aligner.covariance_type_ == "full"
    res = aligner.align(Q)
    np.testing.assert_allclose(res.prior, [0.1, 0.2, 0.7], atol=0.05)
    back = res.aligned
    assert abs((back["v_baseline"] - Q["v_baseline"]).mean() + 8.0) < 1.5
    ratio = np.exp(np.log(back["input_resistance"] / Q["input_resistance"]).mean())
    assert 1 / 1.6 * 0.85 < ratio < 1 / 1.6 * 1.15
    assert res.converged and res.n_iter < aligner.max_iter
    objective = np.asarray(res.objective)
    assert objective[-1] >= objective[0]
    accuracy = (res.responsibilities.argmax(axis=1) == yq).mean()
    assert accuracy > 0.9


def test_unshifted_query_is_left_alone(reference):
    X, y = reference
    rng = np.random.default_rng(2)
    yq = rng.choice(3, size=300, p=[0.5, 0.3, 0.2])
    res = ClassConditionalAligner().fit(X, y).align(_cells(yq, rng))
    assert np.all(np.abs(np.log(res.scale)) < 0.1)
    assert np.all(np.abs(res.offset) < 0.2)


def test_small_query_is_not_moved_and_prior_can_be_fixed(reference):
    X, y = reference
    rng = np.random.default_rng(3)
    Q = _cells(np.array([2, 2, 2, 1, 0]), rng)
    Q["v_baseline"] += 10.0
    aligner = ClassConditionalAligner(min_cells=10).fit(X, y)
    res = aligner.align(Q)
    assert not res.params["aligned"]
    pd.testing.assert_frame_equal(res.aligned, Q[FEATURES], check_exact=False, rtol=1e-9)
    fixed = aligner.align(Q, class_prior=np.array([0.0, 0.0, 1.0]))
    assert fixed.params["fixed_prior"]
    assert np.all(fixed.responsibilities[:, 2] > 0.999)
    with pytest.raises(InputError):
        aligner.align(Q, class_prior=np.ones((2, 3)))


def test_missing_values_are_marginalised_and_kept_missing(reference):
    X, y = reference
    rng = np.random.default_rng(4)
    yq = rng.choice(3, size=400, p=[0.2, 0.2, 0.6])
    Q = _cells(yq, rng)
    Q.loc[Q.index[::3], "peak_deltav_rheo"] = np.nan
    Q.loc[Q.index[1::5], ["v_baseline", "input_resistance"]] = np.nan
    Q.loc[Q.index[7]] = np.nan
    res = ClassConditionalAligner(covariance="tied").fit(X, y).align(Q)
    assert res.aligned.isna().equals(Q.isna())
    assert np.isfinite(res.responsibilities).all()
    np.testing.assert_allclose(res.prior, [0.2, 0.2, 0.6], atol=0.07)


def test_estimator_contract(reference):
    X, y = reference
    est = ClassConditionalAligner(pseudo_count=3.0)
    assert clone(est).get_params()["pseudo_count"] == 3.0
    assert not hasattr(est, "means_")  # __init__ only stores parameters
    with pytest.raises(InputError):
        ClassConditionalAligner(covariance="diag").fit(X, y)
    with pytest.raises(InputError):
        ClassConditionalAligner().fit(X, np.zeros(len(X)))
    fitted = ClassConditionalAligner().fit(X, y)
    with pytest.raises(InputError, match="lacks feature"):
        fitted.align(X.drop(columns=["v_baseline"]))


def test_class_mean_adaptation_keeps_a_class_that_moved_on_its_own(reference):
    """One class differs in a way no per-feature rig explains: adapting class means keeps it."""
    X, y = reference
    rng = np.random.default_rng(5)
    yq = rng.choice(3, size=900, p=[0.34, 0.33, 0.33])
    Q = _cells(yq, rng)
    Q.loc[yq == 2, "peak_deltav_rheo"] -= 15.0    # class 2 only, 3 SD: it now looks like class 0
    Q.loc[yq == 2, "v_baseline"] += 6.0
    fixed = ClassConditionalAligner().fit(X, y).align(Q)
    adapted = ClassConditionalAligner(mean_relevance=10.0).fit(X, y).align(Q)
    acc_fixed = (fixed.responsibilities.argmax(axis=1) == yq).mean()
    acc_adapted = (adapted.responsibilities.argmax(axis=1) == yq).mean()
    assert acc_adapted > acc_fixed + 0.05 and acc_adapted > 0.85
    assert adapted.params["mean_relevance"] == 10.0


def test_a_feature_a_class_never_has_is_fitted_without_a_warning():
    """A class with no value in a feature gets the reference mean there, silently (was a
    RuntimeWarning 'Mean of empty slice' on the terminal of every run)."""
    import warnings

    from ephys2tx.models.class_conditional import ClassConditionalAligner

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(120, 3)), columns=["a", "b", "c"])
    y = np.repeat([0, 1, 2], 40)
    X.loc[y == 2, "b"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        al = ClassConditionalAligner().fit(X, y)
    assert al.means_[2, 1] == 0.0 and np.isfinite(al.means_).all()


def test_em_inverts_each_covariance_once_and_likelihoods_stay_exact(reference, monkeypatch):
    """The EM's likelihoods with missing features equal the Gaussian log-density of the
    observed features, and the covariance factors are inverted once per missingness pattern
    and class, not once per EM iteration (before: one triangular solve per pattern, class and
    iteration, 110 of 120 s of a 2,000-cell human map; a 20,000-cell human map did not end
    in 6 minutes)."""
    import scipy.linalg
    from scipy.stats import multivariate_normal

    X, y = reference
    aligner = ClassConditionalAligner(mean_relevance=100).fit(X, y)
    rng = np.random.default_rng(3)
    query = _cells(rng.choice(3, size=300, p=[0.2, 0.3, 0.5]), rng)
    query.iloc[::3, 1] = np.nan  # three missingness patterns
    query.iloc[::5, 3] = np.nan
    Z = aligner.to_space(query)
    observed = np.isfinite(Z)
    patterns = aligner._patterns(observed)
    ll = aligner._log_likelihoods(np.nan_to_num(Z), patterns)
    for i in (0, 1, 3, 15):
        obs = np.flatnonzero(observed[i])
        for k in range(len(aligner.classes_)):
            want = multivariate_normal(aligner.means_[k, obs],
                                       aligner.covariances_[k][np.ix_(obs, obs)]).logpdf(Z[i, obs])
            assert ll[i, k] == pytest.approx(want, rel=1e-9, abs=1e-9)
    calls = []
    real = scipy.linalg.solve_triangular
    monkeypatch.setattr(scipy.linalg, "solve_triangular",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    result = aligner.align(query)
    n_patterns = len(np.unique(observed, axis=0))
    assert result.n_iter > 2
    assert len(calls) <= n_patterns * len(aligner.classes_)
    calls.clear()  # one covariance shared by all classes: factorised once per pattern
    tied = ClassConditionalAligner(covariance="tied").fit(X, y)
    tied_result = tied.align(query)
    assert tied_result.n_iter > 2 and len(calls) == n_patterns
    assert np.isfinite(tied_result.responsibilities).all()


def test_query_columns_are_read_by_name_or_refused_by_name():
    """Reordered columns give the same coordinates; a repeated feature was an IndexError and text
    a pandas error naming no column."""
    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.normal(size=(80, 3)) + 5, columns=["tau", "sag", "rin"])
    aligner = ClassConditionalAligner(max_iter=5).fit(X, np.resize(np.array(["a", "b", "c", "d"]), 80))
    np.testing.assert_array_equal(aligner.to_space(X[["rin", "tau", "sag"]].assign(extra=1.0)),
                                  aligner.to_space(X))
    with pytest.raises(InputError, match="the query has 2 columns named 'tau'"):
        aligner.align(pd.concat([X, X[["tau"]]], axis=1))
    with pytest.raises(InputError, match=r"feature 'sag' of the query has non-numeric value 'x' \(cell 0\)"):
        aligner.align(X.assign(sag=["x"] + [1.0] * 79))


def test_infinity_in_the_query_is_refused_not_clipped(reference):
    """An inf of the query was clipped to 8 SD and aligned as if measured: a made-up value in
    the aligned table, silently. Now align names the column and the cell."""
    X, y = reference
    aligner = ClassConditionalAligner().fit(X, y)
    query = X.iloc[:30].copy()
    query.iloc[4, 1] = np.inf
    with pytest.raises(InputError, match=r"column 'input_resistance' of the query has the value "
                                         r"inf \(cell 4, 1 such"):
        aligner.align(query)
    with pytest.raises(InputError, match=r"feature column 'input_resistance' has the value inf"):
        ClassConditionalAligner().fit(query, y[:30])
