"""``adapt_predict``: starting from the caller's probabilities gives the same result, without a
second prediction of the query."""

from __future__ import annotations

import numpy as np
import pytest

from ephys2tx.models.shift_adapt import adapt_predict


@pytest.fixture(scope="module")
def model(human_forest_dir):
    from ephys2tx.mapping.reference import load_reference_model

    return load_reference_model(human_forest_dir)


@pytest.mark.parametrize("method", ["none", "em"])  # predict's methods (bbse needs fit diagnostics)
@pytest.mark.parametrize("with_prior", [False, True])
def test_given_probabilities_give_the_same_result_without_predicting_again(model, human, method,
                                                                           with_prior, monkeypatch):
    X = human.features.iloc[::3].reindex(columns=model.features).astype(float)
    X.iloc[:5] = np.nan  # cells without any feature value: no prediction either way
    ref, labels = human.features.reindex(columns=model.features), human.labels.to_numpy()
    prior = np.array([0.6, 0.1, 0.1, 0.2]) if with_prior else None
    frame = model.predict_frame(X)
    given = frame[[f"prob_{c}" for c in model.classes]].to_numpy(float)
    kept = given.copy()
    plain = adapt_predict(model, X, ref, labels, method, user_prior=prior, random_state=0)
    calls = []
    monkeypatch.setattr(type(model), "predict_frame",
                        lambda self, X: calls.append(len(X)) or frame, raising=True)
    fast = adapt_predict(model, X, ref, labels, method, user_prior=prior, random_state=0, proba=given)
    assert calls == []  # the query was not predicted again
    np.testing.assert_array_equal(fast.proba, plain.proba)  # bit-identical
    np.testing.assert_array_equal(given, kept)  # the caller's array is not modified in place
    if with_prior:
        np.testing.assert_array_equal(fast.prior_free_proba, plain.prior_free_proba)
    if method != "none":
        np.testing.assert_array_equal(fast.class_mix, plain.class_mix)
    assert np.isnan(fast.proba[:5]).all() and np.isfinite(fast.proba[5:]).all()


@pytest.mark.parametrize("method", ["em"])  # bbse needs the fit diagnostics of a map reference
def test_a_user_prior_replacing_em_is_said(model, human, method):
    """`--align em` with `--layer`: the layer's mix replaces EM's estimate, so the call equals
    `--align none`'s with the prior; the notes said only the prior was applied, the report
    'method: em' (as if the class mix had been estimated)."""
    X = human.features.iloc[::4].reindex(columns=model.features).astype(float)
    ref, labels = human.features.reindex(columns=model.features), human.labels.to_numpy()
    prior = np.array([0.6, 0.1, 0.1, 0.2])
    result = adapt_predict(model, X, ref, labels, method, user_prior=prior, random_state=0)
    same = adapt_predict(model, X, ref, labels, "none", user_prior=prior, random_state=0)
    np.testing.assert_array_equal(result.proba, same.proba)
    assert any(f"--align {method}: your class prior replaces the class mix {method} would "
               "estimate" in note for note in result.notes)
    assert not any("replaces" in note for note in same.notes)


def test_given_probabilities_of_the_wrong_shape_are_refused(model, human):
    X = human.features.iloc[:20].reindex(columns=model.features)
    with pytest.raises(ValueError, match="shape"):
        adapt_predict(model, X, X, ["Pvalb"] * 20, "em", proba=np.full((19, len(model.classes)), 0.25))


def test_layer_column_with_a_label_that_is_not_a_layer_names_file_column_and_cell(tmp_path):
    """``--layer-column`` mixing notations: L1, 1, 'layer 2/3', empty and NaN are read; a
    label that is no layer ('white matter', 'L7') is refused naming the file, the column and
    the cell (before: only "layer 'L7' is not a cortical layer")."""
    import pandas as pd

    from ephys2tx.errors import InputError
    from ephys2tx.models.shift_adapt import read_layer_column

    ids = [f"c{i}" for i in range(6)]
    good = pd.DataFrame({"cell_id": ids, "tau": np.arange(6.0) + 10,
                         "layer": ["L1", "1", "layer 2/3", "", None, "unknown"]})
    path = tmp_path / "cells.csv"
    good.to_csv(path, index=False)
    values = read_layer_column(path, "layer", ids, id_column="cell_id")
    # 'unknown' is no layer, like an empty cell (it stopped the command)
    assert values[:3] == ["L1", "1", "layer 2/3"] and values[3:] == [None, None, None]
    bad = good.assign(layer=["L1", "white matter", "", "L7", None, "white matter"])
    bad.to_csv(path, index=False)
    with pytest.raises(InputError) as err:
        read_layer_column(path, "layer", ids, id_column="cell_id")
    text = str(err.value)
    assert "layer 'white matter' is not a cortical layer" in text
    assert "column 'layer'" in text and str(path) in text and "cell c1" in text
    assert "3 cell(s)" in text and "'L7'" in text and "leave the cell empty" in text


def test_a_joint_em_that_did_not_converge_is_said(model, human, monkeypatch):
    """A joint EM that stops at its iteration limit is reported in the notes (terminal and
    report.md), not passed off silently as a converged fit (before: no note)."""
    import ephys2tx.models.shift_adapt as shift_adapt

    X = human.features.iloc[::4].reindex(columns=model.features).astype(float)
    ref, labels = human.features.reindex(columns=model.features), human.labels.to_numpy()
    done = adapt_predict(model, X, ref, labels, "ccm_mix", random_state=0)
    assert done.alignment.converged
    assert not any("without converging" in n for n in done.notes)
    real = shift_adapt.fit_alignment

    def stopped(*args, **kwargs):
        result = real(*args, **kwargs)
        result.converged, result.n_iter = False, 200
        return result

    monkeypatch.setattr(shift_adapt, "fit_alignment", stopped)
    capped = adapt_predict(model, X, ref, labels, "ccm_mix", random_state=0)
    assert any("joint EM stopped after 200 iterations without converging" in n for n in capped.notes)
    np.testing.assert_allclose(capped.proba, done.proba)


def test_a_parquet_layer_column_with_missing_values_is_read(tmp_path):
    """A nullable string column (pd.NA for a missing layer) is read as 'no layer'."""
    import pandas as pd

    from ephys2tx.models.shift_adapt import read_layer_column

    ids = ["c0", "c1", "c2"]
    pd.DataFrame({"cell_id": ids, "tau": [0.01, 0.02, 0.03],
                  "layer": pd.array(["L1", pd.NA, "unknown"], dtype="string")}).to_parquet(tmp_path / "c.parquet")
    assert read_layer_column(tmp_path / "c.parquet", "layer", ids, id_column="cell_id") == ["L1", None, None]
