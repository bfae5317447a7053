"""A pre-norm transformer encoder on ``torch.nn.functional.scaled_dot_product_attention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key-padding mask.

    Uses :func:`torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel
    (flash / memory-efficient) on GPU and runs everywhere, CPU included; no flash-attn package.

    Parameters
    ----------
    d_model
        Token width.
    n_heads
        Number of heads; must divide ``d_model``.
    dropout
        Dropout on attention weights during training.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}.")
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Attend over the non-padding tokens.

        Parameters
        ----------
        x
            ``(batch, seq_len, d_model)``.
        padding_mask
            ``(batch, seq_len)``, ``True`` at padding (those keys get no attention).
        """
        n, length, width = x.shape
        q, k, v = (
            self.qkv(x)
            .view(n, length, 3, self.n_heads, width // self.n_heads)
            .permute(2, 0, 3, 1, 4)
        )
        keep = ~padding_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(n, length, width))


class EncoderLayer(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + ffn(norm(x))``.

    Pre-norm trains stably without learning-rate warm-up tricks at small and large depth.
    Dropout applies to the residual branches, not to attention weights: attention dropout
    draws a random mask over every (query, key) pair, which dominated CPU training time and
    forces SDPA off its fused kernels.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Apply the block; ``padding_mask`` is ``True`` at padding."""
        x = x + self.dropout(self.attn(self.norm_attn(x), padding_mask))
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class TransformerEncoder(nn.Module):
    """A stack of :class:`EncoderLayer` followed by a final layer norm.

    Parameters
    ----------
    d_model
        Token width.
    n_heads
        Attention heads per layer.
    n_layers
        Number of blocks.
    d_ff
        Hidden width of the feed-forward sub-layer.
    dropout
        Dropout rate.
    """

    def __init__(
        self, d_model: int, n_heads: int, n_layers: int, d_ff: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Encode ``(batch, seq_len, d_model)`` tokens; ``padding_mask`` is ``True`` at padding."""
        for layer in self.layers:
            x = layer(x, padding_mask)
        return self.norm(x)
