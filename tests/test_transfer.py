"""Tests of the mouse -> human transfer designs on small samples of the real tables."""

from __future__ import annotations

import numpy as np
import pytest

from ephys2tx import CLASSES
from ephys2tx.errors import InputError
from ephys2tx.features.families import HUMAN_IPFX_SCHEMA, MOUSE_VISP_SCHEMA
from ephys2tx.features.harmonise import HARMONISED_FEATURES
from ephys2tx.models.transfer import (
    MouseHumanTransferClassifier,
    MousePriorClassifier,
    _coral_map,
    species_inputs,
    transfer_models,
)

TINY = dict(max_epochs=3, patience=2, token_dim=4, hidden_size=4, embedding_dim=4, batch_size=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _import_torch():
    """torch, imported when a test runs: collecting the tests imports no torch."""
    global torch
    import torch


@pytest.fixture(scope="module")
def sample(human, mouse_visp):
    """300 human training cells, 100 human test cells and 600 mouse cells (fixed seed)."""
    cells = human.features.sample(400, random_state=0).index
    mouse_cells = mouse_visp.features.sample(600, random_state=0).index
    return dict(X=human.features.loc[cells[:300]], y=human.labels.loc[cells[:300]].to_numpy(),
                X_test=human.features.loc[cells[300:]], y_test=human.labels.loc[cells[300:]].to_numpy(),
                X_source=mouse_visp.features.loc[mouse_cells],
                y_source=mouse_visp.labels.loc[mouse_cells].to_numpy())


def _fit(model, s):
    return model.fit(s["X"], s["y"], X_source=s["X_source"], y_source=s["y_source"])


def test_species_inputs_cover_every_feature_once():
    human_cols, human_tokens, mouse_cols, mouse_tokens = species_inputs("adapters")
    assert human_cols == HUMAN_IPFX_SCHEMA.columns
    assert list(human_tokens) == list(mouse_tokens) == HUMAN_IPFX_SCHEMA.family_names
    flat_mouse = [c for cols in mouse_tokens.values() for c in cols]
    assert sorted(flat_mouse) == sorted(mouse_cols) == sorted(MOUSE_VISP_SCHEMA.columns)
    h_cols, h_tokens, m_cols, m_tokens = species_inputs("harmonised")
    assert sorted(h_cols) == sorted(HARMONISED_FEATURES) and h_tokens == m_tokens


@pytest.mark.parametrize("params", [dict(design="harmonised"), dict(design="adapters"),
                                    dict(design="adapters", alignment="mmd")],
                         ids=["a_harmonised", "b_adapters", "c_mmd"])
def test_neural_designs_fit_predict_explain_embed(sample, params):
    model = _fit(MouseHumanTransferClassifier(random_state=0, **params, **TINY), sample)
    proba = model.predict_proba(sample["X_test"])
    assert proba.shape == (100, 4) and np.allclose(proba.sum(axis=1), 1)
    assert list(model.classes_) == list(CLASSES)
    assert set(model.predict(sample["X_test"])) <= set(CLASSES)
    attention = model.explain(sample["X_test"])
    assert list(attention.columns) == list(model.families_)
    np.testing.assert_allclose(attention.sum(axis=1), 1, rtol=1e-6)
    assert model.embed(sample["X_test"]).shape == (100, 4)
    assert model.embed(sample["X_source"].iloc[:7], species="mouse").shape == (7, 4)
    assert model.history_["finetune"] is not None


def test_neural_design_is_deterministic_for_a_seed(sample):
    first = _fit(MouseHumanTransferClassifier(random_state=3, **TINY), sample)
    again = _fit(MouseHumanTransferClassifier(random_state=3, **TINY), sample)
    other = _fit(MouseHumanTransferClassifier(random_state=4, **TINY), sample)
    p = first.predict_proba(sample["X_test"])
    np.testing.assert_array_equal(p, again.predict_proba(sample["X_test"]))
    assert not np.allclose(p, other.predict_proba(sample["X_test"]))


def test_human_scaling_is_fitted_on_inner_training_rows_only(sample):
    model = _fit(MouseHumanTransferClassifier(random_state=0, **TINY), sample)
    rows = sample["X"][model.human_columns_].to_numpy()[model.inner_train_indices_]
    fill = np.nanmedian(rows, axis=0)
    filled = np.where(np.isnan(rows), fill, rows)
    np.testing.assert_allclose(model.human_scaling_[0], fill, equal_nan=True)
    np.testing.assert_allclose(model.human_scaling_[1], filled.mean(axis=0))
    assert not set(model.inner_train_indices_) & set(model.inner_validation_indices_)


def test_human_only_twin_ignores_the_mouse_cells(sample):
    """``source_weight=0`` is the same architecture trained on human cells only."""
    twin = MouseHumanTransferClassifier(random_state=0, source_weight=0.0, **TINY)
    shuffled = dict(sample, y_source=np.random.default_rng(0).permutation(sample["y_source"]))
    p1 = _fit(twin, sample).predict_proba(sample["X_test"])
    p2 = _fit(MouseHumanTransferClassifier(random_state=0, source_weight=0.0, **TINY),
              shuffled).predict_proba(sample["X_test"])
    np.testing.assert_array_equal(p1, p2)
    assert twin.history_["finetune"] is None


def test_transfer_models_registry_names():
    models = transfer_models(0)
    assert set(models) == {"transfer_a", "transfer_b", "transfer_c", "transfer_d",
                           "transfer_a_human", "transfer_b_human"}
    assert models["transfer_c"].alignment == "mmd"
    assert models["transfer_a_human"].source_weight == 0


@pytest.mark.parametrize("model", [MouseHumanTransferClassifier(**TINY), MousePriorClassifier()],
                         ids=["neural", "mouse_view"])
def test_mouse_cells_are_required(sample, model):
    with pytest.raises(InputError, match="needs mouse cells"):
        model.fit(sample["X"], sample["y"])


@pytest.mark.parametrize("params, match", [
    (dict(design="other"), "design must be"), (dict(alignment="cmd"), "alignment must be")])
def test_bad_neural_params(sample, params, match):
    with pytest.raises(InputError, match=match):
        _fit(MouseHumanTransferClassifier(**params, **TINY), sample)


def test_human_table_must_have_named_columns(sample):
    with pytest.raises(InputError, match="lacks column"):
        _fit(MouseHumanTransferClassifier(**TINY), dict(sample, X=sample["X"].iloc[:, 3:]))
    with pytest.raises(InputError, match="DataFrame"):
        _fit(MousePriorClassifier(), dict(sample, X=sample["X"].to_numpy()))


def test_mouse_prior_takes_its_inner_models_as_estimators(sample):
    """As StackingClassifier: unfitted estimators as constructor parameters, cloned in fit."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    base, mouse = DecisionTreeClassifier(max_depth=3, random_state=0), LogisticRegression(C=0.5, max_iter=2000)
    model = _fit(MousePriorClassifier(base=base, source_model=mouse, random_state=0), sample)
    assert isinstance(model.base_model_, DecisionTreeClassifier) and model.base_model_ is not base
    assert model.source_model_.C == 0.5 and not hasattr(mouse, "coef_") and not hasattr(base, "tree_")
    assert model.predict_proba(sample["X_test"]).shape == (100, 4)
    with pytest.raises(InputError, match="max_iter applies to base='hgb'"):
        _fit(MousePriorClassifier(base=base, max_iter=10), sample)
    with pytest.raises(InputError, match="base must be"):
        _fit(MousePriorClassifier(base="svm"), sample)


def test_mouse_prior_on_unnamed_arrays_matches_the_named_tables(sample):
    """shared_features by position on arrays gives the same model as the harmonised names."""
    from ephys2tx.features.harmonise import convert_mouse

    named = _fit(MousePriorClassifier(random_state=2), sample)
    cols = list(sample["X"].columns)
    positions = [cols.index(c) for c in HARMONISED_FEATURES]
    mouse = convert_mouse(sample["X_source"])[list(HARMONISED_FEATURES)].to_numpy()
    arrays = MousePriorClassifier(random_state=2, shared_features=positions).fit(
        sample["X"].to_numpy(), sample["y"], X_source=mouse, y_source=sample["y_source"])
    np.testing.assert_array_equal(arrays.predict_proba(sample["X_test"].to_numpy()),
                                  named.predict_proba(sample["X_test"]))
    np.testing.assert_array_equal(named.shared_positions_, positions)
    # a DataFrame in another column order is read by name
    shuffled = sample["X_test"][cols[::-1]]
    np.testing.assert_array_equal(named.predict_proba(shuffled), named.predict_proba(sample["X_test"]))


# ----------------------------------------------------------------------------- losses


def test_arcface_without_margin_is_scaled_cosine_cross_entropy():
    torch.manual_seed(0)
    cos = torch.rand(6, 4) * 2 - 1
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    plain = torch.nn.functional.cross_entropy(8 * cos, y)
    from ephys2tx.models.transfer import arcface_loss

    assert torch.allclose(arcface_loss(8 * cos, y, 8.0, 0.0), plain, atol=1e-5)
    assert arcface_loss(8 * cos, y, 8.0, 0.3) > plain  # the margin makes the true class harder


def test_class_conditional_mmd_is_zero_for_the_same_cells_and_grows_with_shift():
    torch.manual_seed(0)
    emb = torch.randn(40, 5)
    y = torch.arange(40) % 2
    from ephys2tx.models.transfer import class_conditional_mmd

    same = class_conditional_mmd(emb, y, emb, y, 2)
    shifted = class_conditional_mmd(emb, y, emb + torch.tensor([2.0, 0, 0, 0, 0]), y, 2)
    assert abs(float(same)) < 1e-6 and float(shifted) > 0.05


# ----------------------------------------------------------------------------- design (d)


def test_coral_map_gives_source_the_target_moments():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(4000, 3)) @ np.array([[2.0, 0, 0], [0.5, 1, 0], [0, 0, 0.2]])
    target = rng.normal(loc=5, size=(4000, 3)) @ np.array([[1.0, 0.3, 0], [0, 3, 0], [0, 1, 1]])
    mu_s, a, mu_t = _coral_map(source, target)
    mapped = (source - mu_s) @ a + mu_t
    np.testing.assert_allclose(mapped.mean(axis=0), target.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(np.cov(mapped.T), np.cov(target.T), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("alignment", ["zscore", "quantile", "coral"])
def test_mouse_view_design_learns_and_reads_the_mouse_model(sample, alignment):
    model = _fit(MousePriorClassifier(alignment=alignment, random_state=0), sample)
    view = model.mouse_view(sample["X_test"])
    assert list(view.columns) == [f"mouse_view_{c}" for c in CLASSES]
    np.testing.assert_allclose(np.exp(view).sum(axis=1), 1 + 4e-3, atol=1e-3)
    assert model.score(sample["X_test"], sample["y_test"]) > 0.6  # chance is ~0.25-0.5
    proba = model.predict_proba(sample["X_test"])
    assert proba.shape == (100, 4) and np.allclose(proba.sum(axis=1), 1)


def test_mouse_view_alignment_is_fitted_on_training_rows_only(sample):
    """Test cells never shape the alignment: predictions of a cell do not depend on its batch."""
    model = _fit(MousePriorClassifier(random_state=0), sample)
    rows = sample["X"][list(HARMONISED_FEATURES)].to_numpy()
    np.testing.assert_allclose(model.target_imputer_.statistics_, np.nanmedian(rows, axis=0))
    one_by_one = np.vstack([model.predict_proba(sample["X_test"].iloc[[i]]) for i in range(5)])
    np.testing.assert_allclose(one_by_one, model.predict_proba(sample["X_test"].iloc[:5]))


def test_mouse_view_is_deterministic(sample):
    a = _fit(MousePriorClassifier(base="rf", random_state=1), sample).predict_proba(sample["X_test"])
    b = _fit(MousePriorClassifier(base="rf", random_state=1), sample).predict_proba(sample["X_test"])
    np.testing.assert_array_equal(a, b)


def test_mouse_labels_sharing_no_class_and_a_class_of_one_cell_are_named():
    """Mouse labels with no human class left no mouse cell (scikit-learn: 'Found array with 0
    sample(s) ... SimpleImputer'); a human class of 1 cell failed in the stratified split."""
    rng = np.random.RandomState(0)
    X, Xs = rng.normal(size=(60, 4)), rng.normal(size=(80, 4))
    y, ys = np.resize(np.array(CLASSES), 60), np.resize(np.array(CLASSES), 80)
    net = MouseHumanTransferClassifier(max_epochs=1, token_dim=2, hidden_size=2, embedding_dim=2,
                                       random_state=0)
    with pytest.raises(InputError, match=r"no mouse cell has a class of the human labels \(Lamp5, "
                                         r"Pvalb, Sst, Vip\); y_source holds Meis2, Sncg"):
        net.fit(X, y, X_source=Xs, y_source=np.resize(np.array(["Sncg", "Meis2"]), 80))
    with pytest.raises(InputError, match=r"class 'Lamp5' has 1 human cell; .*at least 2 per class"):
        net.fit(X[:7], ["Pvalb", "Sst", "Vip"] * 2 + ["Lamp5"], X_source=Xs, y_source=ys)


def test_stacking_refuses_mouse_labels_sharing_no_human_class(sample):
    """Design (d) fitted its mouse view on labels none of which is a human class (PVALB vs
    Pvalb) without a word: columns that tell the human model nothing. Now fit names both."""
    upper = np.char.upper(np.asarray(sample["y_source"], dtype=str))
    with pytest.raises(InputError, match=r"no mouse cell has a class of the human labels \(Lamp5, "
                                         r"Pvalb, Sst, Vip\); y_source holds LAMP5, PVALB, SST, VIP"):
        MousePriorClassifier(base="rf", random_state=0).fit(
            sample["X"], sample["y"], X_source=sample["X_source"], y_source=upper)


def test_stacking_names_an_infinite_mouse_feature(sample):
    """An inf among the mouse cells was scikit-learn's 'Input X contains infinity' (no column)."""
    mouse = sample["X_source"].copy()
    mouse.iloc[0, 0] = np.inf
    with pytest.raises(InputError, match=r"feature column .* has the value inf"):
        MousePriorClassifier(base="rf", source_model="logreg", random_state=0).fit(
            sample["X"], sample["y"], X_source=mouse, y_source=sample["y_source"])
