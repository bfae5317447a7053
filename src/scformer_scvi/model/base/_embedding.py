"""Cell embeddings from a trained model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from anndata import AnnData


class EmbeddingMixin:
    """``get_latent_representation`` for a deterministic token model."""

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Cell embeddings (the ``<cls>`` token's final hidden state).

        Deterministic: dropout is off and each cell's tokens depend on that cell alone, so the
        result does not depend on ``batch_size`` or on which other cells are embedded with it.

        Parameters
        ----------
        adata
            Cells to embed; set up with the model's saved arguments if it is new. Genes are
            matched to the model's vocabulary by name. ``None`` uses the model's AnnData.
        indices
            Rows of ``adata`` to embed; ``None`` for all.
        batch_size
            Cells per forward pass; ``None`` uses ``scvi.settings.batch_size``.

        Returns
        -------
        ``(n_cells, n_latent)`` array. By convention store it as
        ``adata.obsm["X_scFormer"] = model.get_latent_representation()``.
        """
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        loader = self._tokenized_loader(adata, indices=indices, batch_size=batch_size)
        self.module.eval()
        embeddings = [
            self.module.inference(**self.module._get_inference_input(tensors))["z"].float().cpu()
            for tensors in loader
        ]
        return torch.cat(embeddings).numpy()
