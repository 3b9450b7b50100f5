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


def _cells(n=40, seed=0):
    import pandas as pd

    rng = np.random.RandomState(seed)
    return (pd.DataFrame(rng.normal(size=(n, 3)), columns=["rin", "tau", "vrest"]),
            np.resize(np.array(["Pvalb", "Sst", "Vip", "Lamp5"]), n))


@pytest.mark.parametrize("det", [MahalanobisOOD(), KNNDistanceOOD(n_neighbors=3)])
def test_values_too_large_to_standardise_are_refused_by_name(det):
    """1e300 is finite, but its square is not: the scale overflowed and every standardised value
    became 0 (KNN: silently no OOD flag) or NaN (a LinAlgError); now an error names the column."""
    X, y = _cells()
    X["tau"] *= 1e300
    with pytest.raises(InputError, match=r"feature column 'tau' has values too large to "
                                         r"standardise \(largest magnitude .*e\+300"):
        det.fit(X, y)


def test_mahalanobis_checks_its_labels():
    """Labels of another length, or one cell per class, were an IndexError / a LinAlgError."""
    X, y = _cells()
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        MahalanobisOOD().fit(X, y[:-1])
    with pytest.raises(InputError, match="a class with at least 2 cells.*class_conditional=False"):
        MahalanobisOOD().fit(X.iloc[:4], y[:4])
    assert MahalanobisOOD(class_conditional=False).fit(X.iloc[:4], y[:4]).predict(X).shape == (40,)
    with pytest.raises(ValueError, match="Unknown label type"):
        MahalanobisOOD().fit(X, np.where(np.arange(40) == 0, None, y).astype(object))


@pytest.mark.parametrize("det", [MahalanobisOOD(), KNNDistanceOOD(n_neighbors=3)])
def test_infinity_is_refused_by_name(det):
    """scikit-learn's 'Input X contains infinity' named no column, in fit and in score."""
    X, y = _cells()
    bad = X.copy()
    bad.loc[5, "vrest"] = np.inf
    with pytest.raises(InputError, match=r"feature column 'vrest' has the value inf \(row 5"):
        det.fit(bad, y)
    with pytest.raises(InputError, match=r"feature column 'vrest' has the value inf \(row 5"):
        det.fit(X, y).predict(bad)
