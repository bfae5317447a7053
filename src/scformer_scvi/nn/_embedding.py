"""Token embeddings: which gene a token is, and how much of it the cell expresses."""

from __future__ import annotations

import torch
from torch import nn


class GeneTokenEmbedding(nn.Module):
    """Embed gene tokens and their binned values: ``norm(gene_emb[g] + value_emb[bin])``.

    Genes form an unordered set, so there is no positional encoding. The value embedding has
    one extra row, :attr:`mask_bin`, used for tokens whose value is hidden for masked value
    prediction.

    Value embeddings start small (std 0.05 vs 1 for genes) so that an untrained model sees
    mostly which genes a cell expresses: with sparse UMI counts most values tie at 1, and the
    bin distribution of a cell then mostly reflects its sequencing depth.

    Parameters
    ----------
    n_tokens
        Vocabulary size (special tokens included).
    n_bins
        Number of value bins (zero bin included).
    d_model
        Embedding width.
    pad_id
        Id of ``<pad>``; its gene embedding stays zero.
    """

    def __init__(self, n_tokens: int, n_bins: int, d_model: int, pad_id: int) -> None:
        super().__init__()
        self.gene = nn.Embedding(n_tokens, d_model, padding_idx=pad_id)
        self.value = nn.Embedding(n_bins + 1, d_model)
        nn.init.normal_(self.value.weight, std=0.05)
        self.norm = nn.LayerNorm(d_model)
        self.mask_bin = n_bins

    def forward(
        self, gene_ids: torch.Tensor, bins: torch.Tensor, value_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Embed ``(batch, seq_len)`` tokens; ``value_mask`` marks values to hide."""
        if value_mask is not None:
            bins = bins.masked_fill(value_mask, self.mask_bin)
        return self.norm(self.gene(gene_ids) + self.value(bins))
