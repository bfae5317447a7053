"""The scFormer torch module: gene-token transformer trained by masked value prediction."""

from __future__ import annotations

from typing import Literal

import torch
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from scformer_scvi.nn import GeneQueryHead, GeneTokenEmbedding, TokenValueHead, TransformerEncoder

from ._losses import masked_mse

MLM_MASK_KEY = "mlm_mask"
CellEmbedding = Literal["cls", "mean"]


class SCFormerModule(BaseModuleClass):
    """Gene embedding + binned value embedding -> pre-norm transformer -> heads.

    Two masked value prediction objectives train the model. For every token whose value was
    hidden, its bin scaled to ``[0, 1]`` (``bin / (n_bins - 1)``) is predicted

    - from the token's own contextual state (GEP, weight 1), and
    - from the cell embedding and the gene's identity alone (GEPC / "MVC", ``mvc_weight``),
      which forces the cell embedding to summarise the cell,

    each by mean squared error.

    Parameters
    ----------
    n_tokens
        Vocabulary size (special tokens included).
    pad_id
        Id of ``<pad>``.
    n_bins
        Number of value bins (zero bin included).
    d_model
        Token and cell-embedding width.
    n_heads
        Attention heads.
    n_layers
        Transformer blocks.
    d_ff
        Feed-forward width; ``None`` means ``4 * d_model``.
    dropout
        Dropout rate.
    cell_embedding
        ``"mean"``: mean of the gene tokens' final states (``<cls>`` and padding excluded);
        ``"cls"``: final state of the ``<cls>`` token.
    mvc_weight
        Weight of the cell-embedding objective (0 disables it).
    """

    def __init__(
        self,
        n_tokens: int,
        pad_id: int,
        n_bins: int = 51,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 4,
        d_ff: int | None = None,
        dropout: float = 0.1,
        cell_embedding: CellEmbedding = "mean",
        mvc_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if cell_embedding not in ("cls", "mean"):
            raise ValueError(f"cell_embedding must be 'cls' or 'mean', got {cell_embedding!r}.")
        self.n_bins = n_bins
        self.n_latent = d_model
        self.cell_embedding = cell_embedding
        self.mvc_weight = mvc_weight
        self.embedding = GeneTokenEmbedding(n_tokens, n_bins, d_model, pad_id)
        self.embedding_dropout = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(d_model, n_heads, n_layers, d_ff or 4 * d_model, dropout)
        self.value_head = TokenValueHead(d_model)
        self.mvc_head = GeneQueryHead(d_model)

    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict:
        return {
            "gene_ids": tensors["gene_ids"],
            "bins": tensors["bins"],
            "padding_mask": tensors["padding_mask"],
            "value_mask": tensors.get(MLM_MASK_KEY),
        }

    @auto_move_data
    def inference(
        self,
        gene_ids: torch.Tensor,
        bins: torch.Tensor,
        padding_mask: torch.Tensor,
        value_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode token sequences; returns the cell embedding ``z`` and all hidden states."""
        tokens = self.embedding_dropout(self.embedding(gene_ids, bins, value_mask))
        hidden = self.encoder(tokens, padding_mask)
        return {"z": self._pool(hidden, padding_mask), "hidden": hidden}

    def _pool(self, hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        if self.cell_embedding == "cls":
            return hidden[:, 0]
        weight = (~padding_mask).to(hidden.dtype)
        weight[:, 0] = 0.0  # <cls>
        total = (hidden * weight.unsqueeze(-1)).sum(dim=1)
        return total / weight.sum(dim=1, keepdim=True).clamp(min=1.0)

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict, **kwargs
    ) -> dict:
        return {
            "hidden": inference_outputs["hidden"],
            "z": inference_outputs["z"],
            "gene_ids": tensors["gene_ids"],
        }

    @auto_move_data
    def generative(
        self, hidden: torch.Tensor, z: torch.Tensor, gene_ids: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Predict every token's scaled value bin from its state and from the cell embedding."""
        outputs = {"value": self.value_head(hidden)}
        if self.mvc_weight:
            outputs["mvc_value"] = self.mvc_head(z, self.embedding.gene(gene_ids))
        return outputs

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
    ) -> LossOutput:
        """Weighted sum of the masked value losses; each is also logged on its own."""
        mask = tensors[MLM_MASK_KEY]
        target = tensors["bins"].to(generative_outputs["value"].dtype) / (self.n_bins - 1)
        loss, per_cell = masked_mse(generative_outputs["value"], target, mask)
        metrics = {"gep_mse": loss.detach()}
        if self.mvc_weight:
            mvc_loss, mvc_per_cell = masked_mse(generative_outputs["mvc_value"], target, mask)
            loss = loss + self.mvc_weight * mvc_loss
            per_cell = per_cell + self.mvc_weight * mvc_per_cell
            metrics["mvc_mse"] = mvc_loss.detach()
        return LossOutput(loss=loss, reconstruction_loss=per_cell, extra_metrics=metrics)

    def sample(self, *args, **kwargs):
        """Not defined: scFormer is not a generative latent-variable model."""
        raise NotImplementedError("SCFormerModule does not define a sampling distribution.")
