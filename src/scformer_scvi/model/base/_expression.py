"""Gene-level outputs of a trained model: gene embeddings and predicted expression."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from scformer_scvi.data import gene_names
from scformer_scvi.module._scformer import observed_context

_GENE_BLOCK = 512  # genes decoded at once: bounds the (cells, genes, d_model) working memory


class ExpressionMixin:
    """``get_gene_embeddings`` and ``get_normalized_expression`` (imputation)."""

    def get_gene_embeddings(self, genes: Sequence[str] | None = None) -> pd.DataFrame:
        """Context-free gene embeddings (the token embedding table).

        Parameters
        ----------
        genes
            Genes to return; ``None`` for the whole vocabulary.

        Returns
        -------
        One row per gene (index ``gene``), one column per embedding dimension.
        """
        genes = list(self.vocab_.genes if genes is None else genes)
        ids = self._gene_ids(genes)
        weight = self.module.embedding.gene.weight.detach().float().cpu().numpy()
        columns = [f"dim_{i}" for i in range(weight.shape[1])]
        return pd.DataFrame(weight[ids], index=pd.Index(genes, name="gene"), columns=columns)

    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        gene_list: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Predicted expression of cells x genes, on the ``log1p(cp10k)`` scale (imputation).

        Each cell is encoded with all its tokens visible, and the expression of every requested
        gene, measured in the cell or not, is predicted from the cell embedding by the MVC head
        (see :class:`~scformer_scvi.module.SCFormerModule`); the head's expected value is
        reported as ``log1p`` of counts per 10,000.

        Parameters
        ----------
        adata
            Cells; ``None`` uses the model's AnnData.
        indices
            Rows of ``adata``; ``None`` for all.
        gene_list
            Genes to predict (must be in the vocabulary); ``None`` for the genes of ``adata``
            that are in the vocabulary.
        batch_size
            Cells per forward pass.

        Returns
        -------
        One row per cell (``obs_names``), one column per gene.
        """
        if not self.module.weights["mvc"]:
            raise ValueError(
                "Predicting expression needs the MVC objective (cell embedding -> gene values); "
                "this model was built with mvc_weight=0."
            )
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        if gene_list is None:
            data_genes = gene_names(adata, self.registry_["setup_args"]["gene_key"])
            gene_list = [g for g in data_genes if g in self.vocab_]
        genes = list(gene_list)
        ids = torch.as_tensor(self._gene_ids(genes))
        module = self.module
        module.eval()
        rows = []
        for tensors in self._tokenized_loader(adata, indices=indices, batch_size=batch_size):
            encoded = module.inference(**module._get_inference_input(tensors))
            context = observed_context(tensors, None)
            n_cells = encoded["z"].shape[0]
            blocks = []
            for start in range(0, len(genes), _GENE_BLOCK):
                query = ids[start : start + _GENE_BLOCK].to(encoded["z"].device)
                params = module.gene_query(
                    encoded["z"], encoded["batch_index"], query.expand(n_cells, -1)
                )
                blocks.append(module.mvc_head.predict(params, context).float().cpu())
            rows.append(torch.cat(blocks, dim=1))
        cell_names = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        return pd.DataFrame(torch.cat(rows).numpy(), index=cell_names, columns=genes)

    def _gene_ids(self, genes: Sequence[str]) -> np.ndarray:
        ids = self.vocab_.lookup(genes)
        if (ids < 0).any():
            unknown = [g for g, i in zip(genes, ids, strict=True) if i < 0]
            raise KeyError(
                f"{len(unknown)} genes are not in the model's vocabulary, e.g. {unknown[:5]}."
            )
        return ids
