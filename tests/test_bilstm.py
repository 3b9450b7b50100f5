"""Tests of the attention BiLSTM and the flat MLP ablation (mechanics, synthetic data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ephys2tx.errors import InputError
from ephys2tx.models import bilstm as bilstm_mod
from ephys2tx.models.bilstm import (
    AttentionBiLSTMClassifier,
    FlatMLPClassifier,
    bilstm_ablation_models,
    resolve_families,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _import_torch():
    """torch, imported when a test runs: collecting the tests imports no torch."""
    global torch
    import torch


FAST = dict(max_epochs=15, patience=5, batch_size=64, token_dim=8, hidden_size=8, embedding_dim=8)


def make_blobs_table(n_per_class=(60, 40, 25, 15), n_features=10, shift=2.5, seed=0):
    """Imbalanced, separable Gaussian classes as a DataFrame with a few NaNs."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, shift, size=(len(n_per_class), n_features))
    X = np.vstack([rng.normal(c, 1.0, size=(n, n_features)) for c, n in zip(centres, n_per_class)])
    y = np.repeat(np.array(["Lamp5", "Pvalb", "Sst", "Vip"])[: len(n_per_class)], n_per_class)
    X[rng.random(X.shape) < 0.02] = np.nan
    cols = [f"feat_{i}" for i in range(n_features)]
    order = rng.permutation(len(y))
    return pd.DataFrame(X[order], columns=cols), pd.Series(y[order], name="subclass")


FAMILIES = {"spike": ["feat_0", "feat_1", "feat_2"], "passive": ["feat_3", "feat_4"],
            "train": ["feat_5", "feat_6", "feat_7", "feat_8", "feat_9"]}


# ----------------------------------------------------------------------------- module


def test_module_shapes_and_attention_rows_sum_to_one():
    torch.manual_seed(0)
    module = bilstm_mod.FamilyTokenBiLSTM([[0, 1], [2], [3, 4, 5]], n_classes=4, token_dim=4,
                               hidden_size=5, embedding_dim=6).eval()
    logits, attention = module(torch.randn(7, 6))
    assert logits.shape == (7, 4)
    assert attention.shape == (7, 3)
    assert torch.allclose(attention.sum(1), torch.ones(7))
    mean_module = bilstm_mod.FamilyTokenBiLSTM([[0, 1], [2], [3, 4, 5]], 4, pooling="mean", head="softmax")
    _, attention = mean_module(torch.randn(2, 6))
    assert torch.allclose(attention, torch.full((2, 3), 1 / 3))


def test_block_diagonal_tokens_equal_per_family_projections():
    torch.manual_seed(1)
    families = [[0, 5], [1, 2, 3], [4], [6, 7]]
    module = bilstm_mod.FamilyTokenBiLSTM(families, 3, token_dim=4)
    x = torch.randn(5, 8)
    expected = torch.stack([torch.nn.functional.gelu(p(x[:, f]))
                            for p, f in zip(module.tokenizer.adapters, families)], dim=1)
    assert torch.allclose(module.tokens(x), expected, atol=1e-6)


# ----------------------------------------------------------------------------- families


def test_families_by_name_by_index_and_none():
    X, y = make_blobs_table()
    by_name = AttentionBiLSTMClassifier(FAMILIES, random_state=0, **FAST).fit(X, y)
    assert list(by_name.families_) == ["spike", "passive", "train"]
    assert by_name.families_["passive"] == [3, 4]
    assert list(by_name.feature_names_in_) == list(X.columns)
    by_index = AttentionBiLSTMClassifier({"a": [0, 1], "b": [2, 3, 4], "c": [5, 6, 7, 8, 9]},
                                         random_state=0, **FAST)
    by_index.fit(X.to_numpy(), y)
    assert by_index.families_ == {"a": [0, 1], "b": [2, 3, 4], "c": [5, 6, 7, 8, 9]}
    default = AttentionBiLSTMClassifier(random_state=0, **FAST).fit(X, y)
    assert len(default.families_) == 10  # min(12, n_features) chunks
    assert sorted(i for f in default.families_.values() for i in f) == list(range(10))
    assert resolve_families(None, 30).keys().__len__() == 12
    explained = by_name.explain(X.iloc[:5])
    assert list(explained.columns) == ["spike", "passive", "train"]
    assert explained.shape == (5, 3)
    np.testing.assert_allclose(explained.sum(axis=1), 1.0, rtol=1e-5)
    assert by_name.embed(X.iloc[:5]).shape == (5, FAST["embedding_dim"])


@pytest.mark.parametrize("families, message", [
    ({"a": ["feat_0", "feat_1"], "b": ["feat_1"]}, "two feature families"),
    ({"a": ["feat_0", "no_such_column"]}, "not in the training table"),
    ({"a": [0, 99]}, "column index 99"),
    ({"a": []}, "non-empty"),
])
def test_bad_families_raise(families, message):
    X, y = make_blobs_table()
    with pytest.raises(InputError, match=message):
        AttentionBiLSTMClassifier(families, **FAST).fit(X, y)


def test_names_need_a_dataframe():
    X, y = make_blobs_table()
    with pytest.raises(InputError, match="no column names"):
        AttentionBiLSTMClassifier(FAMILIES, **FAST).fit(X.to_numpy(), y)


# ----------------------------------------------------------------------------- fitting


def test_same_seed_same_probabilities_and_other_seed_differs():
    X, y = make_blobs_table()
    p1 = AttentionBiLSTMClassifier(FAMILIES, random_state=3, **FAST).fit(X, y).predict_proba(X)
    p2 = AttentionBiLSTMClassifier(FAMILIES, random_state=3, **FAST).fit(X, y).predict_proba(X)
    p3 = AttentionBiLSTMClassifier(FAMILIES, random_state=4, **FAST).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(p1, p3)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, rtol=1e-9)


def test_fit_does_not_change_global_torch_rng():
    X, y = make_blobs_table()
    torch.manual_seed(123)
    before = torch.get_rng_state().clone()
    AttentionBiLSTMClassifier(FAMILIES, random_state=0, **FAST).fit(X, y)
    assert torch.equal(before, torch.get_rng_state())


def test_smote_sees_inner_train_rows_only(monkeypatch):
    """Synthetic rows are made from inner-train rows and never reach the validation data."""
    from imblearn.over_sampling import SMOTE

    X, y = make_blobs_table()
    calls = []
    original = SMOTE.fit_resample

    def spy(self, X_in, y_in):
        X_out, y_out = original(self, X_in, y_in)
        calls.append((np.asarray(X_in).copy(), np.asarray(X_out).copy()))
        return X_out, y_out

    monkeypatch.setattr(SMOTE, "fit_resample", spy)
    seen_validation = []
    original_train = bilstm_mod._TorchClassifierBase._train

    def train_spy(self, module, X_tr, y_tr, X_va, y_va, seed, device):
        seen_validation.append((X_tr.copy(), X_va.copy()))
        return original_train(self, module, X_tr, y_tr, X_va, y_va, seed, device)

    monkeypatch.setattr(bilstm_mod._TorchClassifierBase, "_train", train_spy)
    model = AttentionBiLSTMClassifier(FAMILIES, random_state=0, **FAST).fit(X, y)
    assert len(calls) == 1
    X_in, X_out = calls[0]
    train_idx, val_idx = model.inner_train_indices_, model.inner_validation_indices_
    assert len(np.intersect1d(train_idx, val_idx)) == 0
    assert len(train_idx) + len(val_idx) == len(X)
    Z = model._preprocess(X.to_numpy(dtype=float))
    # SMOTE's input is exactly the inner-train rows.
    np.testing.assert_array_equal(X_in, Z[train_idx])
    # The validation data handed to training is exactly the original validation rows...
    X_tr_seen, X_va_seen = seen_validation[0]
    np.testing.assert_array_equal(X_va_seen, Z[val_idx])
    # ...and none of SMOTE's output rows (real or synthetic) is a validation row.
    val_rows = {row.tobytes() for row in Z[val_idx]}
    assert not any(row.astype(np.float32).tobytes() in val_rows for row in X_out)
    assert len(X_out) > len(X_in)  # SMOTE did add rows
    np.testing.assert_array_equal(X_tr_seen, X_out.astype(np.float32))
    # Validation keeps every class (stratified).
    assert set(y.iloc[val_idx]) == set(y)


def test_smote_with_tiny_class_and_skipped_when_impossible():
    X, y = make_blobs_table(n_per_class=(40, 30, 3), n_features=6)
    model = AttentionBiLSTMClassifier(random_state=0, smote_k_neighbors=5, **FAST).fit(X, y)
    assert model.predict(X).shape == (len(y),)
    X, y = make_blobs_table(n_per_class=(40, 30, 2), n_features=6)
    model = AttentionBiLSTMClassifier(random_state=0, **FAST).fit(X, y)  # 1 tiny-class row in train
    assert set(model.classes_) == {"Lamp5", "Pvalb", "Sst"}


@pytest.mark.parametrize("head", ["arcface", "softmax"])
def test_heads_learn_an_easy_problem(head):
    X, y = make_blobs_table(n_per_class=(80, 80, 80, 80), shift=1.5, seed=1)
    X_test, y_test = make_blobs_table(n_per_class=(50, 50, 50, 50), shift=1.5, seed=1)
    X_test = X_test + np.random.default_rng(5).normal(0, 0.01, X_test.shape)  # not the same rows
    model = AttentionBiLSTMClassifier(FAMILIES, head=head, random_state=0, max_epochs=40, patience=10)
    model.fit(X, y)
    assert model.score(X_test, y_test) > 0.6  # chance is 0.25
    assert model.temperature_ > 0


def test_flat_mlp_and_ablation_set():
    X, y = make_blobs_table()
    mlp = FlatMLPClassifier(random_state=0, max_epochs=10).fit(X, y)
    assert mlp.predict_proba(X).shape == (len(y), 4)
    models = bilstm_ablation_models(FAMILIES, random_state=0)
    assert list(models) == ["bilstm", "bilstm_nosmote", "bilstm_softmax", "bilstm_meanpool", "mlp"]
    assert models["bilstm"].get_params()["smote"] and models["bilstm"].head == "arcface"
    assert not models["bilstm_nosmote"].smote
    assert models["bilstm_softmax"].head == "softmax"
    assert models["bilstm_meanpool"].pooling == "mean"
    assert isinstance(models["mlp"], FlatMLPClassifier)


def test_bad_params_raise():
    X, y = make_blobs_table()
    with pytest.raises(InputError, match="pooling"):
        AttentionBiLSTMClassifier(pooling="max", **FAST).fit(X, y)
    with pytest.raises(InputError, match="head"):
        AttentionBiLSTMClassifier(head="cosface", **FAST).fit(X, y)


# ----------------------------------------------------------------------------- real data smoke


def test_real_mouse_smoke(mouse_visp):
    """On 600 real mouse cells with the dataset's 12 families: well above chance."""
    cells = mouse_visp.features.sample(600, random_state=0).index
    X, y = mouse_visp.features.loc[cells], mouse_visp.labels.loc[cells]
    model = AttentionBiLSTMClassifier(families=mouse_visp.families, random_state=0, max_epochs=20)
    model.fit(X.iloc[:450], y.iloc[:450])
    assert model.score(X.iloc[450:], y.iloc[450:]) > 0.5
    assert list(model.explain(X.iloc[450:]).columns) == list(mouse_visp.families)


def test_values_too_large_to_standardise_are_refused_by_name():
    """A column of values near 1e300 overflowed the scaler: SMOTE then refused 'NaN' values the
    table never had. Now the error names the column."""
    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.normal(size=(40, 4)), columns=["a", "b", "c", "d"])
    X["c"] *= 1e300
    y = np.resize(np.array(["Pvalb", "Sst", "Vip", "Lamp5"]), 40)
    with pytest.raises(InputError, match=r"feature column 'c' has values too large to standardise"):
        FlatMLPClassifier(max_epochs=1, hidden_size=4, embedding_dim=4, random_state=0).fit(X, y)


def test_infinity_is_refused_by_name():
    """scikit-learn's 'Input X contains infinity' named no column, in fit and in predict."""
    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.normal(size=(40, 4)), columns=["a", "b", "c", "d"])
    y = np.resize(np.array(["Pvalb", "Sst", "Vip", "Lamp5"]), 40)
    bad = X.copy()
    bad.loc[2, "d"] = -np.inf
    make = lambda: FlatMLPClassifier(max_epochs=1, hidden_size=4, embedding_dim=4, random_state=0)  # noqa: E731
    with pytest.raises(InputError, match=r"feature column 'd' has the value -inf \(row 2"):
        make().fit(bad, y)
    with pytest.raises(InputError, match=r"feature column 'd' has the value -inf \(row 2"):
        make().fit(X, y).predict(bad)
