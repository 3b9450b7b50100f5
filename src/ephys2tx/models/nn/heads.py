"""Classification heads: ArcFace (cosine logits, additive angular margin) and plain softmax."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ARCFACE_FORMS", "ArcFaceHead", "SoftmaxHead", "arcface_loss", "make_head"]

#: The two margin formulas, see :meth:`ArcFaceHead.loss_function`.
ARCFACE_FORMS = ("pml", "clamped")


def arcface_loss(cosine_logits: torch.Tensor, y: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """ArcFace, "clamped" form: cross-entropy of ``s cos(theta + m)`` for the true class, ``s cos(theta)`` otherwise.

    Cosines are clamped to ``±(1 - 1e-6)`` before ``acos``; there is no special
    case for ``theta + m > pi``.
    """
    cos = (cosine_logits / scale).clamp(-1 + 1e-6, 1 - 1e-6)
    theta = torch.acos(cos.gather(1, y[:, None]))
    target = torch.cos(theta + margin)
    adjusted = cos.scatter(1, y[:, None], target)
    return F.cross_entropy(scale * adjusted, y)


class ArcFaceHead(nn.Module):
    """Cosine head: ``scale * cos(angle(embedding, class weight))``; ArcFace margin in training.

    Parameters
    ----------
    embedding_dim, n_classes : int
    scale : float
        Scale ``s`` of the cosine logits.
    margin : float
        Additive angular margin ``m`` in radians (training loss only).
    form : {"pml", "clamped"}
        Margin formula of the training loss (:meth:`loss_function`).

    Attributes
    ----------
    weight : Parameter, shape (embedding_dim, n_classes)
        Class weights (the layout of pytorch-metric-learning's ``ArcFaceLoss.W``),
        initialised N(0, 1).
    """

    def __init__(self, embedding_dim: int, n_classes: int, *, scale: float, margin: float = 0.2,
                 form: str = "pml"):
        super().__init__()
        if form not in ARCFACE_FORMS:
            raise ValueError(f"form must be one of {ARCFACE_FORMS}, got {form!r}.")
        self.scale = float(scale)
        self.margin = float(margin)
        self.form = form
        self.weight = nn.Parameter(torch.empty(embedding_dim, n_classes))
        nn.init.normal_(self.weight)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Inference logits ``scale * cos(theta)`` (no margin), shape (n_cells, n_classes)."""
        return self.scale * F.normalize(embedding, dim=1) @ F.normalize(self.weight, dim=0)

    def loss_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The training loss ``(embedding, y) -> loss``, built once before the training loop.

        ``"pml"``: :class:`pytorch_metric_learning.losses.ArcFaceLoss` over this head's
        weights (with its fallback ``cos(theta) - m sin(m)`` beyond ``theta = pi - m``).
        Building it draws its own initial weights from torch's global RNG before they are
        replaced by this head's: the draw is kept so that the dropout masks that follow,
        and so the trained network, stay those of earlier versions.
        ``"clamped"``: :func:`arcface_loss` on this head's logits.

        The two forms give the same loss up to float rounding away from the edge cases,
        but a network trained with one is not the network trained with the other; each
        estimator keeps the form its published results were made with.
        """
        if self.form == "clamped":
            def clamped(embedding, y):
                return arcface_loss(self(embedding), y, self.scale, self.margin)
            return clamped
        from pytorch_metric_learning.losses import ArcFaceLoss

        loss = ArcFaceLoss(num_classes=self.weight.shape[1], embedding_size=self.weight.shape[0],
                           margin=math.degrees(self.margin), scale=self.scale)
        loss.W = self.weight  # share the class weights: the head owns them
        return loss


class SoftmaxHead(nn.Module):
    """Affine logits; trained with plain cross-entropy."""

    def __init__(self, embedding_dim: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(embedding_dim, n_classes)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits, shape (n_cells, n_classes)."""
        return self.linear(embedding)

    def loss_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The training loss ``(embedding, y) -> cross_entropy(logits, y)``."""
        def cross_entropy(embedding, y):
            return F.cross_entropy(self(embedding), y)
        return cross_entropy


def make_head(kind: str, embedding_dim: int, n_classes: int, *, scale: float, margin: float = 0.2,
              form: str = "pml") -> nn.Module:
    """``"arcface"`` -> :class:`ArcFaceHead`, ``"softmax"`` -> :class:`SoftmaxHead`."""
    if kind == "arcface":
        return ArcFaceHead(embedding_dim, n_classes, scale=scale, margin=margin, form=form)
    if kind == "softmax":
        return SoftmaxHead(embedding_dim, n_classes)
    raise ValueError(f"head must be 'arcface' or 'softmax', got {kind!r}.")
