"""Cell embeddings from a trained model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from anndata import AnnData

import scbank


class EmbeddingMixin:
    """``get_latent_representation`` for a deterministic token model."""

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | scbank.DataBank | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        bank_table: str | None = None,
    ) -> np.ndarray:
        """Cell embeddings (the ``<cls>`` token's final hidden state).

        Deterministic: dropout is off and each cell's tokens depend on that cell alone, so the
        result does not depend on ``batch_size`` or on which other cells are embedded with it.

        Parameters
        ----------
        adata
            Cells to embed; set up with the model's saved arguments if it is new. Genes are
            matched to the model's vocabulary by name. ``None`` uses the model's AnnData. A
            :class:`scbank.DataBank` is streamed (never loaded whole); rows follow ``bank.obs``.
        indices
            Rows of ``adata`` to embed; ``None`` for all (not supported for a bank).
        batch_size
            Cells per forward pass; ``None`` uses ``scvi.settings.batch_size``.
        bank_table
            With a bank: also store the embeddings in it as the dense table ``bank_table``,
            readable as ``bank.obsm[bank_table]`` (a new bank generation; an older table of
            that name stays readable in earlier generations).

        Returns
        -------
        ``(n_cells, n_latent)`` array. By convention store it as
        ``adata.obsm["X_scFormer"] = model.get_latent_representation()``.
        """
        self._check_if_trained(warn=False)
        if isinstance(adata, scbank.DataBank):
            if indices is not None:
                raise ValueError("indices= is not supported for a bank; embed it whole.")
            return self._embed_bank(adata, batch_size, bank_table)
        if bank_table is not None:
            raise ValueError("bank_table= needs a scbank.DataBank as input.")
        adata = self._validate_anndata(adata)
        loader = self._tokenized_loader(adata, indices=indices, batch_size=batch_size)
        self.module.eval()
        embeddings = [
            self.module.inference(**self.module._get_inference_input(tensors))["z"].float().cpu()
            for tensors in loader
        ]
        return torch.cat(embeddings).numpy()
