"""A pre-norm transformer encoder on ``torch.nn.functional.scaled_dot_product_attention``."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

Attention = Literal["sdpa", "linear"]


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key-padding mask.

    ``attention="sdpa"`` uses :func:`torch.nn.functional.scaled_dot_product_attention`, which
    picks a fused kernel (flash / memory-efficient) on GPU and runs everywhere, CPU included; no
    flash-attn package. ``attention="linear"`` is Hydra attention (Bolya et al. 2022): as many
    heads as channels and a cosine-similarity kernel, so cost grows linearly with the number of
    tokens. ``return_weights=True`` takes an explicit softmax path (SDPA only) that also
    returns the attention weights, for gene-network analysis.

    Parameters
    ----------
    d_model
        Token width.
    n_heads
        Number of heads; must divide ``d_model`` (ignored by linear attention).
    attention
        ``"sdpa"`` or ``"linear"``.
    """

    def __init__(self, d_model: int, n_heads: int, attention: Attention = "sdpa") -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}.")
        if attention not in ("sdpa", "linear"):
            raise ValueError(f"attention must be 'sdpa' or 'linear', got {attention!r}.")
        self.n_heads = n_heads
        self.attention = attention
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend over the non-padding tokens.

        Parameters
        ----------
        x
            ``(batch, seq_len, d_model)``.
        padding_mask
            ``(batch, seq_len)``, ``True`` at padding (those keys get no attention).
        return_weights
            Also return the ``(batch, n_heads, seq_len, seq_len)`` attention weights.
        """
        n, length, width = x.shape
        if self.attention == "linear":
            if return_weights:
                raise ValueError("Linear attention has no attention matrix; use attention='sdpa'.")
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            keep = (~padding_mask).unsqueeze(-1).to(x.dtype)
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1) * keep
            return self.out(q * (k * v * keep).sum(dim=1, keepdim=True))
        qkv = self.qkv(x).view(n, length, 3, self.n_heads, width // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        keep = ~padding_mask[:, None, None, :]
        if return_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            weights = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
            y = weights @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        y = self.out(y.transpose(1, 2).reshape(n, length, width))
        return (y, weights) if return_weights else y


class EncoderLayer(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + ffn(norm(x))``.

    Pre-norm trains stably without learning-rate warm-up tricks at small and large depth.
    Dropout applies to the residual branches, not to attention weights: attention dropout
    draws a random mask over every (query, key) pair, which dominated CPU training time and
    forces SDPA off its fused kernels.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        attention: Attention = "sdpa",
    ) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, attention)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Apply the block; ``padding_mask`` is ``True`` at padding."""
        attended = self.attn(self.norm_attn(x), padding_mask, return_weights)
        if return_weights:
            attended, weights = attended
        x = x + self.dropout(attended)
        x = x + self.dropout(self.ffn(self.norm_ffn(x)))
        return (x, weights) if return_weights else x


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
    attention
        ``"sdpa"`` (exact) or ``"linear"`` (Hydra attention, linear in sequence length).
    gradient_checkpointing
        In training, keep only each block's input and recompute its activations in the
        backward pass: activation memory per block drops from O(tokens x d_ff) to
        O(tokens x d_model), for about one extra forward pass of compute. A training-time
        setting (an attribute, not saved with a model): set
        ``model.module.encoder.gradient_checkpointing = True`` for long inputs.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_layers: int,
        d_ff: int,
        dropout: float = 0.1,
        attention: Attention = "sdpa",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout, attention) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.gradient_checkpointing = gradient_checkpointing

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode ``(batch, seq_len, d_model)`` tokens; ``padding_mask`` is ``True`` at padding.

        With ``return_attention``, also return each layer's attention weights.
        """
        weights = []
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute and not return_attention:
                # Non-reentrant checkpointing replays the saved RNG state, so dropout masks in
                # the recomputation match the forward pass and gradients are unchanged.
                x = checkpoint(layer, x, padding_mask, use_reentrant=False)
                continue
            x = layer(x, padding_mask, return_attention)
            if return_attention:
                x, layer_weights = x
                weights.append(layer_weights)
        x = self.norm(x)
        return (x, weights) if return_attention else x
