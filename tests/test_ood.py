"""Out-of-distribution detectors (mechanics on synthetic data; real AUROC in test_mapping)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ephys2tx.errors import InputError
from ephys2tx.models.ood import KNNDistanceOOD, MahalanobisOOD, make_ood, ood_from_dict


def _blobs(seed=0):
    rng = np.random.RandomState(seed)
    centres = np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0]], float)
    y = rng.randint(0, 3, 900)
    X = centres[y] + rng.normal(size=(900, 3))
    outliers = np.array([0, 0, 6.0]) + rng.normal(size=(100, 3))
    return X, y, outliers


@pytest.mark.parametrize("det", [MahalanobisOOD(), KNNDistanceOOD(n_neighbors=5)])
def test_separates_outliers_and_respects_false_alarm_rate(det):
    X, y, out = _blobs()
    det.fit(X[:600], y[:600])
    held = det.score_samples(X[600:])
    det.set_threshold(held)
    assert np.mean(held > det.threshold_) == pytest.approx(0.05, abs=0.01)
    assert roc_auc_score(np.r_[np.zeros(300), np.ones(100)],
                         np.r_[held, det.score_samples(out)]) > 0.95
    assert det.predict(out).mean() > 0.8


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_json_round_trip_and_nan(method):
    X, y, out = _blobs(1)
    X[::7, 1] = np.nan
    det = make_ood(method).fit(X, y)
    again = ood_from_dict(det.to_dict())
    np.testing.assert_allclose(again.score_samples(out), det.score_samples(out), rtol=1e-4)
    assert np.isfinite(det.score_samples(X)).all()


def test_errors():
    with pytest.raises(InputError):
        make_ood("isolation")
    det = MahalanobisOOD().fit(*_blobs()[:2])
    with pytest.raises(InputError, match="expects 3 features"):
        det.score_samples(np.zeros((2, 4)))
    with pytest.raises(InputError):
        det.set_threshold([1.0, 2.0], false_alarm_rate=1.5)
