"""The networks of the estimators: tokenizer(s) -> encoder -> head(s).

* :class:`FamilyTokenBiLSTM` (:class:`~ephys2tx.models.bilstm.AttentionBiLSTMClassifier`),
* :class:`FlatMLP` (its flat-features ablation),
* :class:`TwoSpeciesNet` (:class:`~ephys2tx.models.transfer.MouseHumanTransferClassifier`).

Each keeps the order in which its parameters are created (and so drawn from
torch's RNG) of the earlier, separate implementations, and loads the state
dicts those saved (their parameter names are mapped on load).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ephys2tx.models.nn.encoder import AttentionBiLSTMEncoder, FlatMLPEncoder
from ephys2tx.models.nn.heads import ArcFaceHead, make_head
from ephys2tx.models.nn.tokenizer import FamilyTokenizer

__all__ = ["FamilyTokenBiLSTM", "FlatMLP", "TwoSpeciesNet"]


def _renamed(state_dict: Mapping[str, torch.Tensor], renames: Sequence[tuple[str, str]],
             own_keys) -> dict:
    """``state_dict`` with each key that is not one of ``own_keys`` renamed by the first matching prefix."""
    out = {}
    for key, value in state_dict.items():
        if key not in own_keys:
            for old, new in renames:
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
        out[key] = value
    return out


class _LegacyNames(nn.Module):
    """Loads state dicts whose parameter names predate :mod:`ephys2tx.models.nn`."""

    #: (old prefix, new prefix), first match wins.
    _LEGACY_PREFIXES: tuple[tuple[str, str], ...] = ()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = set(self.state_dict())
        return super().load_state_dict(_renamed(state_dict, self._LEGACY_PREFIXES, own),
                                       strict=strict, assign=assign)


class FamilyTokenBiLSTM(_LegacyNames):
    """Family tokens -> BiLSTM -> attention (or mean) pooling -> embedding -> head.

    Parameters
    ----------
    family_indices : sequence of sequence of int
        Input column indices of each family, in token order (none empty).
    n_classes : int
        Number of classes.
    token_dim, hidden_size, embedding_dim : int
        Token width, LSTM hidden size per direction, embedding width.
    dropout : float
        Dropout before and inside the embedding projection.
    pooling : {"attention", "mean"}
        Additive attention pooling over the family tokens, or their mean.
    head : {"arcface", "softmax"}
        Cosine head for ArcFace training, or an affine softmax head.
    arcface_scale, arcface_margin : float
        Scale ``s`` of the cosine logits and angular margin (ArcFace head only).
    """

    _LEGACY_PREFIXES = (("token_projections.", "tokenizer.adapters."), ("lstm.", "encoder.lstm."),
                        ("attention_", "encoder.attention_"), ("embedding.", "encoder.embedding."))

    def __init__(self, family_indices: Sequence[Sequence[int]], n_classes: int, *,
                 token_dim: int = 16, hidden_size: int = 32, embedding_dim: int = 32,
                 dropout: float = 0.1, pooling: str = "attention", head: str = "arcface",
                 arcface_scale: float = 8.0, arcface_margin: float = 0.2):
        super().__init__()
        if any(len(fam) == 0 for fam in family_indices):
            raise ValueError("every family needs at least one column.")
        self.tokenizer = FamilyTokenizer(family_indices, token_dim, fused=True)
        self.encoder = AttentionBiLSTMEncoder(token_dim, hidden_size, embedding_dim, dropout, pooling)
        self.head = make_head(head, embedding_dim, n_classes, scale=arcface_scale, margin=arcface_margin)

    @property
    def family_indices(self) -> list[list[int]]:
        """Input column indices of each family."""
        return self.tokenizer.token_positions

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Family tokens, shape (n_cells, n_families, token_dim)."""
        return self.tokenizer(x)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (n_cells, embedding_dim) and attention (n_cells, n_families)."""
        return self.encoder(self.tokenizer(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (n_cells, n_classes) and attention weights (n_cells, n_families)."""
        embedding, attention = self.embed(x)
        return self.head(embedding), attention


class FlatMLP(_LegacyNames):
    """MLP on the flat feature vector, with the same heads as :class:`FamilyTokenBiLSTM`."""

    _LEGACY_PREFIXES = (("embedding.", "encoder.embedding."),)

    def __init__(self, n_features: int, n_classes: int, *, hidden_size: int = 64,
                 embedding_dim: int = 32, dropout: float = 0.1, head: str = "arcface",
                 arcface_scale: float = 8.0, arcface_margin: float = 0.2):
        super().__init__()
        self.encoder = FlatMLPEncoder(n_features, hidden_size, embedding_dim, dropout)
        self.head = make_head(head, embedding_dim, n_classes, scale=arcface_scale, margin=arcface_margin)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Embeddings (n_cells, embedding_dim) and no attention."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Logits (n_cells, n_classes) and no attention."""
        embedding, _ = self.encoder(x)
        return self.head(embedding), None


class TwoSpeciesNet(_LegacyNames):
    """Per-species tokenizers (one shared tokenizer in design a), one encoder, one ArcFace head per species.

    Parameters
    ----------
    human_positions, mouse_positions : list of list of int
        Each species' input positions per shared token (empty: a learned token).
    n_classes : int
    shared_tokenizer : bool
        Both species enter through the human tokenizer (same columns).
    token_dim, hidden_size, embedding_dim, dropout : model sizes.
    scale, margin : float
        ArcFace scale and margin of both heads ("clamped" margin form).
    """

    _LEGACY_PREFIXES = (("heads.human", "heads.human.weight"), ("heads.mouse", "heads.mouse.weight"))

    def __init__(self, human_positions, mouse_positions, n_classes: int, *, shared_tokenizer: bool,
                 token_dim: int, hidden_size: int, embedding_dim: int, dropout: float,
                 scale: float, margin: float = 0.2):
        super().__init__()
        # per-family projections (not fused): the form the published transfer results were made with
        human_tok = FamilyTokenizer(human_positions, token_dim, fused=False)
        self.tokenizers = nn.ModuleDict({
            "human": human_tok,
            "mouse": human_tok if shared_tokenizer else FamilyTokenizer(mouse_positions, token_dim,
                                                                         fused=False),
        })
        self.encoder = AttentionBiLSTMEncoder(token_dim, hidden_size, embedding_dim, dropout)
        self.heads = nn.ModuleDict({
            sp: ArcFaceHead(embedding_dim, n_classes, scale=scale, margin=margin, form="clamped")
            for sp in ("human", "mouse")})

    def embed(self, x: torch.Tensor, species: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and attention of cells of ``species`` ("human" or "mouse")."""
        return self.encoder(self.tokenizers[species](x))

    def logits(self, embedding: torch.Tensor, species: str) -> torch.Tensor:
        """Cosine logits of ``species``' head."""
        return self.heads[species](embedding)
