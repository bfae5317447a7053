"""Gradient reversal, for adversarial removal of batch information."""

from __future__ import annotations

import torch


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-scale`` in the backward pass.

    A classifier placed after it learns to predict its target while the layers before it learn
    to defeat that classifier (DANN, Ganin & Lempitsky 2015), in one ordinary optimisation step.
    """
    return _GradReverse.apply(x, scale)
