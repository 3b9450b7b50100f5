"""``ephys2tx.models.predict_shift``: the cautious EM candidates, the class-mix test, the user prior."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ephys2tx.errors import InputError
from ephys2tx.models.predict_shift import (MIX_TEST_ALPHA, PREDICT_ALIGN_METHODS, PREDICT_CANDIDATES,
                                          class_mix_test, parse_predict_method, predict_auto_method,
                                          predict_with_shift)


def test_method_names_parse_and_unknown_ones_are_refused():
    assert parse_predict_method("none") == ("none", 0.0, False)
    assert parse_predict_method("em") == ("em", 10.0, False)
    assert parse_predict_method("em@300") == ("em", 300.0, False)
    assert parse_predict_method("em_test") == ("em", 10.0, True)
    assert parse_predict_method("em_test@100") == ("em", 100.0, True)
    assert PREDICT_ALIGN_METHODS == ("auto", *PREDICT_CANDIDATES)
    for bad in ("auto", "em@", "em@abc", "ot", "em_test@7"):
        with pytest.raises(InputError, match="unknown predict --align"):
            parse_predict_method(bad)


def _gaussian_query(mix, n, rng, ref):
    """Exact posteriors of 1-D unit Gaussians at -2, 0, 2 under the class mix ``ref``."""
    y = rng.choice(3, size=n, p=mix)
    x = rng.normal(loc=np.array([-2.0, 0.0, 2.0])[y])
    like = np.exp(-0.5 * (x[:, None] - np.array([-2.0, 0.0, 2.0])[None, :]) ** 2)
    post = like * ref
    return post / post.sum(axis=1, keepdims=True)


def test_class_mix_test_holds_its_level_and_detects_a_changed_mix():
    """Synthetic mechanics: exact posteriors, 300 queries of 200 cells each way."""
    rng = np.random.default_rng(12)
    ref = np.array([0.5, 0.3, 0.2])
    same = [class_mix_test(_gaussian_query(ref, 200, rng, ref), ref)["p_value"] for _ in range(300)]
    shifted = [class_mix_test(_gaussian_query([0.2, 0.3, 0.5], 200, rng, ref), ref)["p_value"]
               for _ in range(300)]
    # level: at most 3x alpha false rejections; power: nearly always rejects a 0.5 -> 0.2 change
    assert np.mean(np.array(same) < MIX_TEST_ALPHA) <= 3 * MIX_TEST_ALPHA
    assert np.mean(np.array(shifted) < MIX_TEST_ALPHA) >= 0.95
    # under no shift the p-values are roughly uniform, not all near 1
    assert 0.3 < np.median(same) < 0.7
    out = class_mix_test(_gaussian_query([0.2, 0.3, 0.5], 400, rng, ref), ref)
    assert out["df"] == 2 and out["n_cells"] == 400 and out["statistic"] > 0
    assert out["mix"][2] > ref[2]  # the maximum-likelihood mix moved towards the third class
    assert class_mix_test(np.empty((0, 3)), ref)["p_value"] == 1.0


# ----------------------------------------------------------------------------- a real model


@pytest.fixture(scope="module")
def model(human_forest_dir):
    from ephys2tx.mapping.reference import load_reference_model

    return load_reference_model(human_forest_dir)


@pytest.fixture(scope="module")
def pvalb_query(human):
    """60 real human Pvalb cells: a class mix far from the training mix."""
    return human.features.loc[human.labels.index[human.labels == "Pvalb"][:60]]


def _proba(outcome, classes):
    return outcome.predictions[[f"prob_{c}" for c in classes]].to_numpy(float)


def test_a_larger_pseudo_count_keeps_the_mix_nearer_the_training_mix(model, pvalb_query):
    from ephys2tx.models.shift_adapt import reference_prior

    ref = reference_prior(model)
    pvalb = list(model.classes).index("Pvalb")
    mixes = {m: predict_with_shift(model, pvalb_query, align=m).adapt.class_mix for m in ("em", "em@100", "em@300")}
    # em@n is (posteriors + n * training mix) / (cells + n): monotone shrinkage towards the training mix
    assert mixes["em"][pvalb] > mixes["em@100"][pvalb] > mixes["em@300"][pvalb] > ref[pvalb]
    for mix in mixes.values():
        np.testing.assert_allclose(mix.sum(), 1.0)


def test_em_test_adapts_only_when_the_class_mix_test_rejects(model, pvalb_query, human):
    em = predict_with_shift(model, pvalb_query, align="em")
    tested = predict_with_shift(model, pvalb_query, align="em_test")
    assert any(n.startswith("class-mix test") and "EM re-estimates it" in n for n in tested.notes)
    np.testing.assert_allclose(_proba(tested, model.classes), _proba(em, model.classes))
    assert "predicted_subclass_unadapted" in tested.predictions.columns
    # the training mix itself (a stratified sample of cells): no evidence of a changed mix
    sample = human.labels.groupby(human.labels, group_keys=False).apply(lambda s: s.iloc[::6])
    calm = predict_with_shift(model, human.features.loc[sample.index], align="em_test")
    note = next(n for n in calm.notes if n.startswith("class-mix test"))
    none = predict_with_shift(model, human.features.loc[sample.index], align="none")
    if "no adaptation" in note:
        assert calm.adapt.class_mix is None and "predicted_subclass_unadapted" not in calm.predictions
        np.testing.assert_allclose(_proba(calm, model.classes), _proba(none, model.classes))
    else:  # the forest is over-confident on its own training cells; say which
        pytest.fail(f"the class-mix test rejected the training mix: {note}")


@pytest.mark.parametrize("method", [m for m in PREDICT_CANDIDATES if m != "none"])
def test_a_layer_prior_replaces_the_estimated_mix_for_every_candidate(method, model, pvalb_query):
    """--layer with EM: the prior is applied to the model's own probabilities, never to EM's."""
    from ephys2tx.models.label_shift import apply_prior
    from ephys2tx.models.shift_adapt import reference_prior

    classes = list(model.classes)
    prior = np.array([0.7 if c == "Lamp5" else 0.1 for c in classes])
    rows = np.tile(prior, (len(pvalb_query), 1))
    rows[:5] = np.nan  # cells without a layer keep the training mix
    out = predict_with_shift(model, pvalb_query, align=method, user_prior=rows)
    free = predict_with_shift(model, pvalb_query, align=method)
    base = model.predict_frame(pvalb_query)[[f"prob_{c}" for c in classes]].to_numpy(float)
    ref = reference_prior(model)
    expected = apply_prior(base, ref, np.where(np.isnan(rows), ref, rows))
    np.testing.assert_allclose(_proba(out, classes), expected, atol=1e-12)
    pd.testing.assert_series_equal(out.predictions["predicted_subclass_no_prior"],
                                   free.predictions["predicted_subclass"], check_names=False)
    assert any("replaces the EM-estimated class mix" in n for n in out.notes)
    # the prior is not washed out: more Lamp5 calls than EM on this all-Pvalb query
    assert (out.predictions["predicted_subclass"] == "Lamp5").sum() >= \
        (free.predictions["predicted_subclass"] == "Lamp5").sum()


def test_auto_names_the_benchmark_choice():
    from ephys2tx.models.predict_shift import PREDICT_AUTO_METHOD

    assert PREDICT_AUTO_METHOD in PREDICT_CANDIDATES
    method, reason = predict_auto_method(50)
    assert method == PREDICT_AUTO_METHOD and reason.startswith("50 cells")
    assert ("EM" in reason) == (method != "none")
    assert predict_auto_method(5)[0] == "none"
