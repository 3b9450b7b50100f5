"""Calibration: ECE, reliability curve, temperature and isotonic scaling."""

from __future__ import annotations

import numpy as np
import pytest

from ephys2tx.errors import InputError
from ephys2tx.models.calibration import (IsotonicCalibrator, TemperatureScaler,
                                         calibrator_from_dict, cross_fitted_calibration,
                                         expected_calibration_error, reliability_curve)


def _overconfident(n=3000, k=4, seed=0):
    """Labels drawn from softmax(z); predictions = softmax(3 z): overconfident."""
    rng = np.random.RandomState(seed)
    z = rng.normal(size=(n, k)) * 1.5
    p_true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=p) for p in p_true])
    p_model = np.exp(3 * z) / np.exp(3 * z).sum(1, keepdims=True)
    return p_model, y


def test_ece_zero_for_perfect_and_positive_for_overconfident():
    y = np.array([0, 1, 2, 3])
    assert expected_calibration_error(np.eye(4), y) == pytest.approx(0.0)
    proba, y = _overconfident()
    assert expected_calibration_error(proba, y) > 0.1


def test_reliability_curve_counts():
    proba, y = _overconfident(500)
    curve = reliability_curve(proba, y, n_bins=10)
    assert sum(curve["count"]) == 500
    assert all(0 <= a <= 1 for a in curve["accuracy"])


@pytest.mark.parametrize("cls", [TemperatureScaler, IsotonicCalibrator])
def test_calibrators_reduce_ece_on_held_out_folds(cls):
    proba, y = _overconfident()
    folds = np.arange(len(y)) % 5
    method = "temperature" if cls is TemperatureScaler else "isotonic"
    after = cross_fitted_calibration(proba, y, folds, method)
    assert expected_calibration_error(after, y) < 0.5 * expected_calibration_error(proba, y)
    assert np.allclose(after.sum(1), 1.0)


def test_temperature_recovers_known_temperature():
    proba, y = _overconfident(6000)
    assert TemperatureScaler().fit(proba, y).temperature_ == pytest.approx(3.0, rel=0.15)


@pytest.mark.parametrize("cls", [TemperatureScaler, IsotonicCalibrator])
def test_json_round_trip(cls):
    proba, y = _overconfident(800)
    cal = cls().fit(proba, y)
    again = calibrator_from_dict(cal.to_dict())
    np.testing.assert_allclose(again.transform(proba), cal.transform(proba))


def test_bad_inputs():
    with pytest.raises(InputError):
        TemperatureScaler().fit(np.ones(4), np.zeros(4, int))
    with pytest.raises(InputError):
        TemperatureScaler().fit(np.full((4, 2), 0.5), np.array([0, 1, 2, 0]))
    with pytest.raises(InputError):
        calibrator_from_dict({"method": "platt"})


def test_metrics_refuse_rows_that_are_not_probabilities():
    """NaN probabilities gave an ECE of 0.0 (perfect), silently; labels of another length a
    numpy broadcasting error; fold ids of another length an IndexError."""
    rng = np.random.RandomState(0)
    proba, codes = rng.dirichlet(np.ones(4), 40), np.arange(40) % 4
    with pytest.raises(InputError, match=r"finite numbers in \[0, 1\]; row 0, class 0 is nan"):
        expected_calibration_error(np.full((4, 4), np.nan), [0, 1, 2, 3])
    with pytest.raises(InputError, match=r"row 1, class 0 is 5\.0"):
        reliability_curve(np.vstack([proba[:1], [5.0, 0, 0, 0]]), [0, 1])
    with pytest.raises(InputError, match="one label code per row of probabilities: 40 rows"):
        expected_calibration_error(proba, codes[:-1])
    with pytest.raises(InputError, match="one label and one fold id per row"):
        cross_fitted_calibration(proba, codes, np.arange(39) % 2)
    with pytest.raises(InputError, match="at least 2 folds"):
        cross_fitted_calibration(proba, codes, np.zeros(40, int))
