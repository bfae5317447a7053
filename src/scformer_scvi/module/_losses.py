"""Losses of scFormer's objectives, one function each."""

from __future__ import annotations

import torch


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error over the masked tokens.

    Parameters
    ----------
    prediction, target
        ``(batch, seq_len)``.
    mask
        ``(batch, seq_len)`` boolean, ``True`` where the error counts.

    Returns
    -------
    The mean over all masked tokens of the minibatch, and the mean per cell (0 for a cell with
    no masked token).
    """
    weight = mask.to(prediction.dtype)
    squared = (prediction - target) ** 2 * weight
    per_cell = squared.sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)
    return squared.sum() / weight.sum().clamp(min=1.0), per_cell
