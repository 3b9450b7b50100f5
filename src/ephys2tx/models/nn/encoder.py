"""Encoders: family tokens -> embedding (attention BiLSTM), or flat features -> embedding (MLP)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AttentionBiLSTMEncoder", "FlatMLPEncoder", "POOLINGS"]

POOLINGS = ("attention", "mean")


def _projection(in_dim: int, embedding_dim: int, dropout: float) -> nn.Sequential:
    """Dropout -> Linear -> GELU -> Dropout -> Linear: the embedding projection."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, embedding_dim), nn.GELU(),
                         nn.Dropout(dropout), nn.Linear(embedding_dim, embedding_dim))


class AttentionBiLSTMEncoder(nn.Module):
    """Tokens -> one-layer BiLSTM -> additive attention (or mean) pooling -> embedding.

    Parameters
    ----------
    token_dim : int
        Token width (input of the LSTM).
    hidden_size : int
        LSTM hidden size per direction.
    embedding_dim : int
        Embedding width.
    dropout : float
        Dropout before and inside the embedding projection.
    pooling : {"attention", "mean"}
        Additive attention over the tokens (Bahdanau), or their plain mean.
    """

    def __init__(self, token_dim: int, hidden_size: int, embedding_dim: int, dropout: float,
                 pooling: str = "attention"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        self.pooling = pooling
        self.lstm = nn.LSTM(token_dim, hidden_size, num_layers=1, batch_first=True, bidirectional=True)
        if pooling == "attention":
            self.attention_hidden = nn.Linear(2 * hidden_size, hidden_size)
            self.attention_score = nn.Linear(hidden_size, 1, bias=False)
        self.embedding = _projection(2 * hidden_size, embedding_dim, dropout)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (n_cells, embedding_dim) and attention weights (n_cells, n_tokens)."""
        states, _ = self.lstm(tokens)
        if self.pooling == "attention":
            scores = self.attention_score(torch.tanh(self.attention_hidden(states))).squeeze(-1)
            attention = torch.softmax(scores, dim=1)
        else:
            attention = torch.full(states.shape[:2], 1.0 / states.shape[1],
                                   dtype=states.dtype, device=states.device)
        pooled = torch.einsum("nf,nfh->nh", attention, states)
        return self.embedding(pooled), attention


class FlatMLPEncoder(nn.Module):
    """Linear -> GELU -> Dropout, then the embedding projection, on the flat feature vector.

    The "no families, no attention" ablation; it has no attention weights (None).
    """

    def __init__(self, n_features: int, hidden_size: int, embedding_dim: int, dropout: float):
        super().__init__()
        self.embedding = nn.Sequential(
            nn.Linear(n_features, hidden_size), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden_size, embedding_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(embedding_dim, embedding_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Embeddings (n_cells, embedding_dim) and no attention."""
        return self.embedding(x), None
