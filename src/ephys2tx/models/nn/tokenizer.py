"""Feature families -> tokens: one linear adapter per family, a learned token for an absent one."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FamilyTokenizer"]


class FamilyTokenizer(nn.Module):
    """Project each feature family's columns to a token of width ``token_dim`` (then GELU).

    Parameters
    ----------
    token_positions : sequence of sequence of int
        Input column positions of each family, in token order. An empty family
        (a family this input does not measure, e.g. mouse chirp features) gets a
        learned token, the same for every cell.
    token_dim : int
        Token width.
    fused : bool, default=True
        Compute the projections of the families with columns as one
        block-diagonal matmul (faster) instead of one matmul per family. Both
        give the same tokens up to float rounding; the rounding differs, and
        with it a trained network, so each estimator keeps the form its
        published results were made with (BiLSTM: fused; transfer: per family).

    Attributes
    ----------
    adapters : ModuleList
        ``Linear(len(family), token_dim)`` per family (``Identity`` for an empty one).
    missing : Parameter, shape (n_empty_families, token_dim)
        The learned tokens of the empty families (only when there are some).
    """

    def __init__(self, token_positions: Sequence[Sequence[int]], token_dim: int, *, fused: bool = True):
        super().__init__()
        self.token_positions = [[int(i) for i in p] for p in token_positions]
        self.token_dim = int(token_dim)
        self.fused = bool(fused)
        self.adapters = nn.ModuleList(
            nn.Linear(len(p), self.token_dim) if p else nn.Identity() for p in self.token_positions)
        n_missing = sum(1 for p in self.token_positions if not p)
        if n_missing:
            self.missing = nn.Parameter(torch.zeros(n_missing, self.token_dim))
        # Columns gathered family by family (fused form), or one index per family.
        self.register_buffer("_gather_index",
                             torch.tensor([i for p in self.token_positions for i in p], dtype=torch.long),
                             persistent=False)
        for k, p in enumerate(self.token_positions):
            if p:
                self.register_buffer(f"_idx{k}", torch.tensor(p, dtype=torch.long), persistent=False)

    @property
    def n_tokens(self) -> int:
        """Number of tokens (families)."""
        return len(self.token_positions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens, shape (n_cells, n_families, token_dim)."""
        if self.fused and not hasattr(self, "missing"):
            # Same as stacking gelu(adapter_k(x[:, family_k])), in one matmul.
            weight = torch.block_diag(*[a.weight for a in self.adapters])
            bias = torch.cat([a.bias for a in self.adapters])
            flat = F.linear(x.index_select(1, self._gather_index), weight, bias)
            return F.gelu(flat.view(x.shape[0], self.n_tokens, self.token_dim))
        tokens, m = [], 0
        for k, (positions, adapter) in enumerate(zip(self.token_positions, self.adapters)):
            if positions:
                tokens.append(F.gelu(adapter(x.index_select(1, getattr(self, f"_idx{k}")))))
            else:
                tokens.append(self.missing[m].expand(x.shape[0], -1))
                m += 1
        return torch.stack(tokens, dim=1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Models saved before ephys2tx.models.nn kept a one-row zero placeholder ``missing``
        # even when no family was empty; it was never used.
        if not hasattr(self, "missing"):
            state_dict.pop(f"{prefix}missing", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
