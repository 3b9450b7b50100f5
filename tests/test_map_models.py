"""Extra map models: estimator contract, the ensemble built without refitting, rig augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from ephys2tx.mapping import combine_reference_models
from ephys2tx.models.map_models import RigAugmentedClassifier


def test_rig_augmentation_doubles_the_training_rows_with_distorted_copies():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(-70, 3, 200), rng.lognormal(5, 0.3, 200)])
    y = (X[:, 1] > np.median(X[:, 1])).astype(int)

    class Recorder(DecisionTreeClassifier):
        def fit(self, X, y, **kw):
            Recorder.seen = np.asarray(X)
            return super().fit(X, y, **kw)

    RigAugmentedClassifier(Recorder(random_state=0), feature_names=["v_baseline", "input_resistance"],
                           random_state=1).fit(X, y)
    seen = Recorder.seen
    assert seen.shape == (400, 2)
    np.testing.assert_array_equal(seen[:200], X)
    offsets = seen[200:, 0] - X[:, 0]
    assert np.abs(offsets).max() <= 15.0 + 1e-9 and np.abs(offsets).max() > 1.0
    factors = seen[200:, 1] / X[:, 1]
    assert factors.min() >= 0.5 - 1e-9 and factors.max() <= 2.0 + 1e-9
    with pytest.raises(ValueError, match="feature_names"):
        RigAugmentedClassifier(DecisionTreeClassifier(), feature_names=["a"]).fit(X, y)


def test_ensemble_from_parts_equals_fitting_the_ensemble(human):
    from ephys2tx.mapping import fit_reference_model

    feats = ["tau", "input_resistance", "v_baseline", "sag", "rheobase_i", "width_rheo"]
    X, y = human.features[feats], human.labels
    kw = dict(species="human", n_estimators=20, n_splits=3, random_state=0)
    forest = fit_reference_model(X, y, model="forest", **kw)
    hgb = fit_reference_model(X, y, model="hgb", **kw)
    combined = combine_reference_models([forest, hgb])
    fitted = fit_reference_model(X, y, model="ensemble", **kw)
    np.testing.assert_allclose(combined.diagnostics["oof_calibrated"], fitted.diagnostics["oof_calibrated"])
    a, b = combined.predict_frame(X.iloc[:50]), fitted.predict_frame(X.iloc[:50])
    np.testing.assert_allclose(a.filter(like="prob_").to_numpy(), b.filter(like="prob_").to_numpy())
    assert (a["ood_flag"] == b["ood_flag"]).all()
    assert combined.record["cv"]["macro_f1"] == pytest.approx(fitted.record["cv"]["macro_f1"])
