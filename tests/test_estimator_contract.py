"""The scikit-learn estimator contract, for every estimator of ``ephys2tx.models``.

One ``parametrize_with_checks`` over all of them, on small settings (few trees, few epochs) so
that the quick suite stays quick. Each expected failure is listed below with its reason; nothing
else may fail.

The transfer estimators need mouse cells, which are fit parameters (routed metadata), not rows of
``X``; scikit-learn's checks call ``fit(X, y)``. The checks therefore run on a subclass whose
``fit(X, y)`` passes the check's own rows as the mouse cells (``_WithMouseCells``): everything
else (validation, cloning, pickling, fitted attributes, predictions) is the estimator's own.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from ephys2tx.models.calibration import IsotonicCalibrator, TemperatureScaler
from ephys2tx.models.class_conditional import ClassConditionalAligner
from ephys2tx.models.ood import KNNDistanceOOD, MahalanobisOOD
from ephys2tx.models.selection import InnerCVSelector
from ephys2tx.models.transfer import MousePriorClassifier


class MousePriorWithMouseCells(MousePriorClassifier):
    """:class:`MousePriorClassifier` whose ``fit(X, y)`` also takes ``(X, y)`` as the mouse cells."""

    def fit(self, X, y):
        return super().fit(X, y, X_source=X, y_source=np.ravel(np.asarray(y)))


def _tiny_mouse_prior(**kw):
    return MousePriorWithMouseCells(base=DecisionTreeClassifier(random_state=0), random_state=0, **kw)


ESTIMATORS = [
    TemperatureScaler(),
    IsotonicCalibrator(),
    MahalanobisOOD(),
    MahalanobisOOD(class_conditional=False),
    KNNDistanceOOD(n_neighbors=3),
    ClassConditionalAligner(max_iter=20),
    MousePriorWithMouseCells(max_iter=5, random_state=0),
    _tiny_mouse_prior(alignment="coral", source_model=LogisticRegression(max_iter=200)),
    InnerCVSelector([("C=1", LogisticRegression()), ("C=0.1", LogisticRegression(C=0.1))],
                    random_state=0),
]

#: The calibrators read X as class probabilities with one column per class and y as codes of
#: those columns; these three checks fit 2 columns with labels 0..2 (make_blobs, 3 centres).
_CALIBRATOR_FAILS = {
    name: "y must index X's probability columns; the check gives 3 classes for 2 columns"
    for name in ("check_estimators_overwrite_params", "check_estimators_fit_returns_self",
                 "check_readonly_memmap_input")}

#: check name -> reason, per estimator class (nothing else may fail).
EXPECTED_FAILED: dict[type, dict[str, str]] = {
    TemperatureScaler: _CALIBRATOR_FAILS,
    IsotonicCalibrator: _CALIBRATOR_FAILS,
}


def _expected_failed(estimator) -> dict[str, str]:
    return EXPECTED_FAILED.get(type(estimator), {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed)
def test_sklearn_contract(estimator, check):
    check(estimator)
