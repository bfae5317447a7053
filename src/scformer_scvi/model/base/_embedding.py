"""Cell embeddings from a trained model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

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
        scale: Literal["unit", "pooled"] = "unit",
    ) -> np.ndarray:
        """Cell embeddings: the pooled final token states, standardised.

        The pooling is the model's ``cell_embedding`` (mean of the gene tokens by default);
        the standardisation uses running statistics learned in training (per batch with
        ``domain_norm``).

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
        scale
            ``"unit"``: every dimension has unit variance (within each batch with
            ``domain_norm``), the embedding the model's heads read. ``"pooled"``: then each
            dimension is multiplied by its standard deviation before standardisation, pooled
            over the batches (root of their mean variance), so that distances weigh the
            dimensions by how much the encoder spreads the cells along them; batches stay
            aligned as with ``"unit"``, since every batch gets the same factor.

        Returns
        -------
        ``(n_cells, n_latent)`` array. By convention store it as
        ``adata.obsm["X_scFormer"] = model.get_latent_representation()``.
        """
        self._check_if_trained(warn=False)
        factor = self._embedding_scale(scale)
        if isinstance(adata, scbank.DataBank):
            if indices is not None:
                raise ValueError("indices= is not supported for a bank; embed it whole.")
            return self._embed_bank(adata, batch_size, bank_table, factor)
        if bank_table is not None:
            raise ValueError("bank_table= needs a scbank.DataBank as input.")
        adata = self._validate_anndata(adata)
        loader = self._tokenized_loader(adata, indices=indices, batch_size=batch_size)
        self.module.eval()
        embeddings = [
            self.module.inference(**self.module._get_inference_input(tensors))["z"].float().cpu()
            for tensors in loader
        ]
        return torch.cat(embeddings).numpy() * factor

    def _embedding_scale(self, scale: Literal["unit", "pooled"]) -> np.ndarray | float:
        """The factor ``get_latent_representation`` multiplies each dimension by."""
        if scale == "unit":
            return 1.0
        if scale != "pooled":
            raise ValueError(f"scale must be 'unit' or 'pooled', got {scale!r}.")
        norm = self.module.cell_norm
        if getattr(self.module, "domain_norm", False):
            return norm.pooled_std().float().cpu().numpy()
        return torch.sqrt(norm.running_var + norm.eps).float().cpu().numpy()

    @torch.inference_mode()
    def update_batch_statistics(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        estimate_from: Literal["cells", "other_batches"] = "cells",
    ) -> list[str]:
        """Re-estimate the embedding statistics of ``adata``'s batches (or take the others').

        With ``domain_norm``, a cell's embedding is standardised with its batch's mean and
        variance. A batch without cells in the last training run (e.g. a donor held out while
        fine-tuning on the others) keeps statistics computed by an earlier state of the
        encoder, which no longer match its embeddings. This recomputes them exactly, with the
        current encoder, over all given cells of each batch: no labels and no gradient step
        are involved, and the result does not depend on ``batch_size``.

        Parameters
        ----------
        adata
            Cells of the batches to update (registered batches only); ``None`` uses the
            model's AnnData.
        indices
            Rows of ``adata`` to use; ``None`` for all.
        batch_size
            Cells per forward pass.
        estimate_from
            ``"cells"``: the mean and variance of each batch's own cells. ``"other_batches"``:
            the mean of the statistics of the registered batches not in ``adata`` (what a batch
            never seen in training gets), whatever the cells. A batch's own mean also carries
            its cell-type composition (Baron's human4: 71 ductal cells, one acinar cell), so
            standardising by it shifts all its cells when the composition differs from the
            training batches'. ``"other_batches"`` avoids that, at the price of not
            correcting the batch's own technical shift.

        Returns
        -------
        The batches whose statistics were replaced.
        """
        norm = self.module.cell_norm
        if not getattr(self.module, "domain_norm", False):
            raise ValueError(
                "update_batch_statistics needs a model built with domain_norm=True: without "
                "it, all cells share one set of statistics and there is nothing per batch."
            )
        if estimate_from not in ("cells", "other_batches"):
            raise ValueError(
                f"estimate_from must be 'cells' or 'other_batches', got {estimate_from!r}."
            )
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        manager = self.get_anndata_manager(adata, required=True)
        state = manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)
        names = np.asarray(state["categorical_mapping"]).astype(str)
        codes = np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
        present = np.unique(codes if indices is None else codes[np.asarray(indices)]).tolist()
        unusable = [
            names[b] for b in present if not norm.n_frozen <= b < norm.running_mean.shape[0]
        ]
        if unusable:
            raise ValueError(
                f"Batches {unusable} have no trainable statistics in this model (never seen "
                "in training, or frozen reference batches of a query model). Map new batches "
                "with SCFormer.load_query_data first."
            )
        if estimate_from == "other_batches":
            others = [b for b in range(norm.running_mean.shape[0]) if b not in present]
            if not others:
                raise ValueError(
                    "estimate_from='other_batches' averages the batches not in adata, but "
                    "adata holds cells of every batch. Pass the cells of the batches to reset."
                )
            mean, var = norm.running_mean[others].mean(0), norm.running_var[others].mean(0)
            for b in present:
                norm.set_statistics(b, mean, var)
            return [str(names[b]) for b in present]
        self.module.eval()
        pooled, batches = [], []
        for tensors in self._tokenized_loader(adata, indices=indices, batch_size=batch_size):
            outputs = self.module.inference(**self.module._get_inference_input(tensors))
            pooled.append(outputs["pooled"].double().cpu())
            batches.append(outputs["batch_index"].cpu())
        pooled, batches = torch.cat(pooled), torch.cat(batches)
        for b in present:
            cells = pooled[batches == b]
            if cells.shape[0] < 2:
                raise ValueError(f"Batch {names[b]!r} has one cell: statistics need two.")
            norm.set_statistics(b, cells.mean(dim=0), cells.var(dim=0))
        return [str(names[b]) for b in present]

    def _refit_trained_batch_statistics(self) -> None:
        """Exact statistics for every batch of the model's AnnData that training updates.

        Frozen (reference) batches and batches of one cell keep their running statistics.
        """
        norm = self.module.cell_norm
        n_batch = norm.running_mean.shape[0]
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
        n_cells = np.bincount(codes, minlength=n_batch)
        refit = (np.arange(n_batch) >= norm.n_frozen) & (n_cells >= 2)
        cells = np.flatnonzero(refit[codes])
        if cells.size:
            self.update_batch_statistics(indices=cells)
