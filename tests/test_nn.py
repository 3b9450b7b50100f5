"""Tests of the torch building blocks in ephys2tx.models.nn (mechanics, on synthetic tensors)."""

from __future__ import annotations

import math

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _import_torch():
    """torch and the nn modules, imported when a test runs: collecting the tests imports no torch."""
    global torch, F, AttentionBiLSTMEncoder, ArcFaceHead, SoftmaxHead, make_head, FamilyTokenBiLSTM
    global FlatMLP, TwoSpeciesNet, FamilyTokenizer, EarlyStopping, TemperatureScaling, smote_step
    global train_epochs
    import torch
    from torch.nn import functional as F

    from ephys2tx.models.nn.encoder import AttentionBiLSTMEncoder
    from ephys2tx.models.nn.heads import ArcFaceHead, SoftmaxHead, make_head
    from ephys2tx.models.nn.networks import FamilyTokenBiLSTM, FlatMLP, TwoSpeciesNet
    from ephys2tx.models.nn.tokenizer import FamilyTokenizer
    from ephys2tx.models.nn.training import EarlyStopping, TemperatureScaling, smote_step, train_epochs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- tokenizer


def test_fused_and_per_family_tokens_agree():
    torch.manual_seed(0)
    positions = [[0, 5], [1, 2, 3], [4], [6, 7]]
    fused = FamilyTokenizer(positions, 4, fused=True)
    per_family = FamilyTokenizer(positions, 4, fused=False)
    per_family.load_state_dict(fused.state_dict())
    x = torch.randn(9, 8)
    assert fused(x).shape == (9, 4, 4)
    assert torch.allclose(fused(x), per_family(x), atol=1e-6)


def test_empty_family_gets_a_learned_token_shared_by_all_cells():
    torch.manual_seed(0)
    tok = FamilyTokenizer([[0, 1], [], [2]], 3)
    assert tok.missing.shape == (1, 3)
    with torch.no_grad():
        tok.missing[0] = torch.tensor([1.0, 2.0, 3.0])
    tokens = tok(torch.randn(5, 3))
    assert tokens.shape == (5, 3, 3)
    assert torch.equal(tokens[:, 1], torch.tensor([[1.0, 2.0, 3.0]]).expand(5, 3))
    assert not hasattr(FamilyTokenizer([[0], [1]], 3), "missing")


# ----------------------------------------------------------------------------- encoder and heads


def test_encoder_pooling_and_bad_pooling():
    torch.manual_seed(0)
    tokens = torch.randn(6, 5, 4)
    emb, att = AttentionBiLSTMEncoder(4, 3, 7, 0.0).eval()(tokens)
    assert emb.shape == (6, 7) and torch.allclose(att.sum(1), torch.ones(6))
    _, mean_att = AttentionBiLSTMEncoder(4, 3, 7, 0.0, pooling="mean")(tokens)
    assert torch.allclose(mean_att, torch.full((6, 5), 0.2))
    with pytest.raises(ValueError, match="pooling"):
        AttentionBiLSTMEncoder(4, 3, 7, 0.0, pooling="max")


def test_arcface_logits_are_scaled_cosines():
    torch.manual_seed(0)
    head = ArcFaceHead(5, 3, scale=8.0)
    emb = torch.randn(4, 5)
    logits = head(emb)
    assert logits.shape == (4, 3)
    assert logits.abs().max() <= 8.0 + 1e-5
    assert torch.allclose(head(3.0 * emb), logits, atol=1e-5)  # only the angle counts


@pytest.mark.parametrize("form", ["pml", "clamped"])
def test_arcface_margin_raises_the_loss_and_zero_margin_is_cross_entropy(form):
    torch.manual_seed(0)
    emb, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    no_margin = ArcFaceHead(5, 3, scale=8.0, margin=0.0, form=form)
    with_margin = ArcFaceHead(5, 3, scale=8.0, margin=0.3, form=form)
    with_margin.load_state_dict(no_margin.state_dict())
    plain = F.cross_entropy(no_margin(emb), y)
    assert torch.allclose(no_margin.loss_function()(emb, y), plain, atol=1e-5)
    assert with_margin.loss_function()(emb, y) > plain


def test_arcface_forms_agree_away_from_the_edge_cases():
    torch.manual_seed(1)
    pml = ArcFaceHead(6, 4, scale=16.0, margin=0.2, form="pml")
    clamped = ArcFaceHead(6, 4, scale=16.0, margin=0.2, form="clamped")
    clamped.load_state_dict(pml.state_dict())
    emb, y = torch.randn(64, 6), torch.randint(0, 4, (64,))
    theta = torch.acos((pml(emb) / 16.0).gather(1, y[:, None]))
    assert (theta < math.pi - 0.2).all()  # no fallback of the pml form involved
    assert torch.allclose(pml.loss_function()(emb, y), clamped.loss_function()(emb, y), atol=1e-5)


def test_softmax_head_and_make_head():
    assert isinstance(make_head("softmax", 4, 3, scale=1.0), SoftmaxHead)
    assert isinstance(make_head("arcface", 4, 3, scale=1.0), ArcFaceHead)
    with pytest.raises(ValueError, match="head"):
        make_head("cosface", 4, 3, scale=1.0)
    with pytest.raises(ValueError, match="form"):
        ArcFaceHead(4, 3, scale=1.0, form="other")


# ----------------------------------------------------------------------------- networks


def _legacy_bilstm_state(module: FamilyTokenBiLSTM) -> dict:
    """The state dict under the parameter names used before ephys2tx.models.nn."""
    renames = (("tokenizer.adapters.", "token_projections."), ("encoder.", ""))
    out = {}
    for key, value in module.state_dict().items():
        for new, old in renames:
            if key.startswith(new):
                key = old + key[len(new):]
                break
        out[key] = value.clone()
    return out


def test_networks_load_state_dicts_saved_under_the_old_names():
    torch.manual_seed(0)
    src = FamilyTokenBiLSTM([[0, 1], [2], [3, 4]], 3, token_dim=4, hidden_size=3, embedding_dim=5).eval()
    legacy = _legacy_bilstm_state(src)
    assert "token_projections.0.weight" in legacy and "lstm.weight_ih_l0" in legacy
    dst = FamilyTokenBiLSTM([[0, 1], [2], [3, 4]], 3, token_dim=4, hidden_size=3, embedding_dim=5).eval()
    dst.load_state_dict(legacy)
    x = torch.randn(4, 5)
    assert torch.equal(src(x)[0], dst(x)[0])

    mlp = FlatMLP(5, 3, hidden_size=6, embedding_dim=4).eval()
    old = {k.replace("encoder.", ""): v.clone() for k, v in mlp.state_dict().items()}
    other = FlatMLP(5, 3, hidden_size=6, embedding_dim=4).eval()
    other.load_state_dict(old)
    assert torch.equal(mlp(x)[0], other(x)[0])

    kw = dict(shared_tokenizer=False, token_dim=4, hidden_size=3, embedding_dim=5, dropout=0.0, scale=8.0)
    net = TwoSpeciesNet([[0], [1, 2]], [[0, 1], []], 3, **kw).eval()
    old = {k.replace(".weight", "") if k.startswith("heads.") else k: v.clone()
           for k, v in net.state_dict().items()}
    old["tokenizers.human.missing"] = torch.zeros(1, 4)  # the old unused placeholder
    again = TwoSpeciesNet([[0], [1, 2]], [[0, 1], []], 3, **kw).eval()
    again.load_state_dict(old)
    emb, _ = net.embed(x[:, :3], "mouse")
    emb2, _ = again.embed(x[:, :3], "mouse")
    assert torch.equal(net.logits(emb, "mouse"), again.logits(emb2, "mouse"))
    with pytest.raises(RuntimeError):
        again.load_state_dict({**old, "heads.extra": torch.zeros(5, 3)})


def test_two_species_net_shares_the_tokenizer_only_in_design_a():
    kw = dict(token_dim=4, hidden_size=3, embedding_dim=5, dropout=0.0, scale=8.0)
    shared = TwoSpeciesNet([[0], [1]], [[0], [1]], 2, shared_tokenizer=True, **kw)
    own = TwoSpeciesNet([[0], [1]], [[0], [1]], 2, shared_tokenizer=False, **kw)
    assert shared.tokenizers["human"] is shared.tokenizers["mouse"]
    assert own.tokenizers["human"] is not own.tokenizers["mouse"]


# ----------------------------------------------------------------------------- training steps


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    module = torch.nn.Linear(1, 1)
    stopper = EarlyStopping(patience=2, lower_is_better=True)
    losses = [1.0, 0.5, 0.7, 0.6]
    stops = []
    for epoch, loss in enumerate(losses):
        with torch.no_grad():
            module.weight.fill_(loss)
        stops.append(stopper.on_epoch_end(module, epoch, loss))
    assert stops == [False, False, False, True]
    stopper.on_train_end(module)
    assert stopper.restored and stopper.best_epoch == 1 and stopper.best_score == -0.5
    assert module.weight.item() == 0.5
    unused = EarlyStopping(patience=1)
    unused.on_train_end(module)
    assert not unused.restored


def test_train_epochs_learns_stops_early_and_restores():
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    y = (x[:, 0] > 0).long()
    module = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    seen = []

    def batch_loss(batch):
        seen.append(len(batch))
        return F.cross_entropy(module(x[batch]), y[batch])

    def validation():
        return F.cross_entropy(module(x), y)

    stopper = EarlyStopping(patience=3, lower_is_better=True)
    history = train_epochs(module, opt, batch_loss, n_rows=201 - 1, batch_size=64, max_epochs=200,
                           generator=torch.Generator().manual_seed(0), validation=validation,
                           callbacks=[stopper])
    assert history["validation"][-1] < history["validation"][0]
    assert len(history["validation"]) < 200  # stopped early
    assert set(seen) == {64, 8}  # 200 rows in batches of 64: the last one is 8
    with torch.no_grad():
        assert math.isclose(float(validation()), -stopper.best_score, rel_tol=1e-6)
    # without validation: no callback epoch hooks, every epoch runs
    h = train_epochs(module, opt, batch_loss, n_rows=200, batch_size=64, max_epochs=3,
                     generator=torch.Generator().manual_seed(0))
    assert len(h["train_loss"]) == 3 and h["validation"] == []


def test_smote_step_balances_and_skips_when_it_cannot_or_need_not():
    rng = np.random.RandomState(0)
    X = rng.randn(40, 3).astype(np.float32)
    y = np.array([0] * 30 + [1] * 10)
    Xr, yr = smote_step(X, y, k_neighbors=5, random_state=0, n_classes=2)
    assert np.bincount(yr).tolist() == [30, 30] and Xr.dtype == np.float32
    np.testing.assert_array_equal(Xr[:40], X)  # the real rows come first, unchanged
    balanced = np.array([0] * 20 + [1] * 20)
    assert smote_step(X, balanced, k_neighbors=5, random_state=0, n_classes=2)[0] is X
    single = np.array([0] * 39 + [1])
    assert smote_step(X, single, k_neighbors=5, random_state=0, n_classes=2)[0] is X


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.RandomState(0)
    logits = rng.randn(4000, 4) * 3.0
    p = TemperatureScaling.probabilities(logits, 2.5)
    y = np.array([rng.choice(4, p=row) for row in p])
    t = TemperatureScaling().fit(logits, y).temperature_
    assert t == pytest.approx(2.5, rel=0.1)
    np.testing.assert_allclose(TemperatureScaling.probabilities(logits, t).sum(axis=1), 1.0)
