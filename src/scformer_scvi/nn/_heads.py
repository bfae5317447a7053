"""Output heads: predictions made from token states or from the cell embedding."""

from __future__ import annotations

import torch
from torch import nn


class TokenValueHead(nn.Module):
    """Predict one value per token from its contextual hidden state (an MLP)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(batch, seq_len, d_model)`` -> ``(batch, seq_len)``."""
        return self.mlp(hidden).squeeze(-1)


class GeneQueryHead(nn.Module):
    """Predict a gene's value from the cell embedding alone (scGPT's "MVC" / GEPC head).

    ``value(cell, gene) = <W z, sigmoid(Q e_gene)>``: the gene's context-free embedding
    ``e_gene`` is turned into a query, and the cell embedding ``z`` must carry enough about the
    cell's state to answer it. This is the objective that makes ``z`` informative.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, d_model)
        self.cell = nn.Linear(d_model, d_model)

    def forward(self, cell_embedding: torch.Tensor, gene_embedding: torch.Tensor) -> torch.Tensor:
        """``(batch, d_model)`` and ``(batch, seq_len, d_model)`` -> ``(batch, seq_len)``."""
        query = torch.sigmoid(self.query(gene_embedding))
        return torch.einsum("bld,bd->bl", query, self.cell(cell_embedding))
