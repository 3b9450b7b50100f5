"""Auxiliary losses: class-conditional maximum mean discrepancy between two species."""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["class_conditional_mmd"]


def class_conditional_mmd(emb_a: torch.Tensor, y_a: torch.Tensor, emb_b: torch.Tensor,
                          y_b: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean over shared classes of the RBF-kernel MMD² between the two species' embeddings."""
    a = F.normalize(emb_a, dim=1)
    b = F.normalize(emb_b, dim=1)
    total, count = a.new_zeros(()), 0
    for c in range(n_classes):
        xa, xb = a[y_a == c], b[y_b == c]
        if len(xa) < 2 or len(xb) < 2:
            continue
        both = torch.cat([xa, xb])
        d2 = torch.cdist(both, both).pow(2)
        k = sum(torch.exp(-d2 / (2 * bw ** 2)) for bw in (0.25, 0.5, 1.0))
        na = len(xa)
        total = total + k[:na, :na].mean() + k[na:, na:].mean() - 2 * k[:na, na:].mean()
        count += 1
    return total / max(count, 1)
