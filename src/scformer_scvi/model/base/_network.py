"""Gene embeddings in context and gene-gene networks (embedding similarity, attention)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from scformer_scvi.data import gene_names

_MAX_NETWORK_GENES = 5000  # a dense genes x genes matrix per group must fit in memory


class NetworkMixin:
    """``get_contextual_gene_embeddings`` and ``get_gene_network``."""

    @torch.inference_mode()
    def get_contextual_gene_embeddings(
        self,
        adata: AnnData | None = None,
        groupby: str | None = None,
        genes: Sequence[str] | None = None,
        indices: Sequence[int] | None = None,
        expressed_only: bool = True,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Mean final token state of each gene, over the cells of each group.

        A gene's token state after the transformer depends on the other genes of its cell;
        averaged over a group of cells it describes the gene in that context (cell type,
        perturbation, ...), unlike :meth:`get_gene_embeddings` (the context-free table).

        Parameters
        ----------
        adata
            Cells; ``None`` uses the model's AnnData.
        groupby
            obs column defining the groups; ``None``: one group of all cells.
        genes
            Genes to report (in the vocabulary); ``None``: the genes of ``adata`` the model
            knows.
        indices
            Rows of ``adata``; ``None`` for all.
        expressed_only
            Average only tokens of expressed genes (count > 0). ``False`` also includes the
            non-expressed genes sampled as tokens (``n_zero_genes``).
        batch_size
            Cells per forward pass.

        Returns
        -------
        One row per (group, gene) seen in at least one cell of the group (index ``gene``, or
        ``(group, gene)`` with ``groupby``), one column per embedding dimension.
        """
        adata, genes, groups, names = self._network_inputs(adata, groupby, genes, indices)
        n_genes, width = len(genes), self.module.d_model
        sums = torch.zeros(len(names) * n_genes, width, dtype=torch.float64)
        counts = torch.zeros(len(names) * n_genes, dtype=torch.float64)
        for tensors, columns, group in self._gene_batches(
            adata, genes, groups, indices, batch_size
        ):
            hidden = self.module.inference(**self.module._get_inference_input(tensors))["hidden"]
            keep = columns >= 0
            if expressed_only:
                keep &= tensors["values"] > 0
            slots = (group[:, None] * n_genes + columns)[keep]
            sums.index_add_(0, slots, hidden[keep].double().cpu())
            counts.index_add_(0, slots, torch.ones(len(slots), dtype=torch.float64))
        seen = counts > 0
        mean = (sums[seen] / counts[seen, None]).float().numpy()
        index = pd.MultiIndex.from_product([names, genes], names=["group", "gene"])[seen.numpy()]
        frame = pd.DataFrame(mean, index=index, columns=[f"dim_{i}" for i in range(width)])
        return frame.droplevel("group") if groupby is None else frame

    def get_gene_network(
        self,
        method: Literal["embedding", "attention"] = "embedding",
        adata: AnnData | None = None,
        groupby: str | None = None,
        genes: Sequence[str] | None = None,
        top_k: int | None = 20,
        layer: int | Literal["all"] = -1,
        symmetric: bool | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """A weighted gene-gene network as an edge table.

        ``method="embedding"``: cosine similarity of gene embeddings, symmetric. Without
        ``adata`` and ``groupby`` these are the context-free embeddings
        (:meth:`get_gene_embeddings`); with either, the mean contextual embeddings of each
        group (:meth:`get_contextual_gene_embeddings`).

        ``method="attention"``: how much genes attend to each other, from the attention
        weights of the transformer (scGPT's attention-based GRN recipe). Per cell, per head
        and per layer, each query token's attention over the cell's gene tokens (``<cls>``,
        batch/condition tokens and padding excluded) is replaced by its rank, scaled to
        ``(0, 1]`` (1 = the gene it attends to most); ranks remove the dependence of raw
        weights on how many genes a cell has. Ranks are averaged over heads, over the chosen
        layer(s) (``layer``: an index, default the last, or ``"all"``), then over the cells of
        each group in which both genes are tokens. The result is directed (``source`` attends
        to ``target``) unless ``symmetric=True``, which averages both directions. Needs
        ``attention="sdpa"``.

        Parameters
        ----------
        method
            ``"embedding"`` or ``"attention"``.
        adata
            Cells; ``None`` uses the model's AnnData (``"attention"``, or with ``groupby``).
        groupby
            obs column: one network per group (column ``group``).
        genes
            Genes of the network (in the vocabulary); ``None``: the genes of ``adata`` (or of
            the model's AnnData) the model knows, at most 5000.
        top_k
            Keep each source gene's ``top_k`` strongest edges (symmetric networks keep an
            edge if either gene has the other in its top ``k``, in both directions);
            ``None`` keeps all pairs.
        layer
            Attention layer(s), see above.
        symmetric
            Average the two directions; ``None``: ``True`` for ``"embedding"`` (already
            symmetric), ``False`` for ``"attention"``.
        indices
            Rows of ``adata``; ``None`` for all.
        batch_size
            Cells per forward pass (``"attention"`` holds cells x heads x tokens^2 weights).

        Returns
        -------
        Columns ``source``, ``target``, ``weight`` (and ``group`` with ``groupby``), strongest
        edges of each source first. Self-edges are left out; weights are finite.
        """
        if method not in ("embedding", "attention"):
            raise ValueError(f"method must be 'embedding' or 'attention', got {method!r}.")
        symmetric = method == "embedding" if symmetric is None else symmetric
        if method == "embedding" and adata is None and groupby is None and indices is None:
            genes = self._network_genes(self.adata, genes)
            embeddings = self.get_gene_embeddings(genes).to_numpy()
            matrices = {None: _cosine(embeddings)}
        elif method == "embedding":
            table = self.get_contextual_gene_embeddings(
                adata, groupby, genes, indices, batch_size=batch_size
            )
            if groupby is None:
                table = pd.concat({None: table}, names=["group"])
            genes = list(dict.fromkeys(table.index.get_level_values("gene")))
            matrices = {}
            for group, frame in table.groupby(level="group", sort=False):
                frame = frame.droplevel("group").reindex(genes)  # unseen genes: NaN rows
                matrices[group] = _cosine(frame.to_numpy())
        else:
            matrices, genes = self._attention_matrices(
                adata, groupby, genes, indices, layer, batch_size
            )
        edges = []
        for group, matrix in matrices.items():
            if symmetric:
                matrix = (matrix + matrix.T) / 2
            table = _edges(matrix, genes, top_k, symmetric)
            if groupby is not None:
                table.insert(0, "group", group)
            edges.append(table)
        return pd.concat(edges, ignore_index=True)

    # ------------------------------------------------------------------------- internals
    @torch.inference_mode()
    def _attention_matrices(
        self,
        adata: AnnData | None,
        groupby: str | None,
        genes: Sequence[str] | None,
        indices: Sequence[int] | None,
        layer: int | Literal["all"],
        batch_size: int | None,
    ) -> tuple[dict, list[str]]:
        """Mean rank-normalised attention, genes x genes, per group."""
        adata, genes, groups, names = self._network_inputs(adata, groupby, genes, indices)
        n_genes = len(genes)
        sums = torch.zeros(len(names) * n_genes * n_genes, dtype=torch.float64)
        counts = torch.zeros_like(sums)
        module = self.module
        n_context = sum(
            getattr(module, name, None) is not None
            for name in ("batch_embedding", "condition_embedding")
        )
        for tensors, columns, group in self._gene_batches(
            adata, genes, groups, indices, batch_size or 32
        ):
            outputs = module.inference(
                **module._get_inference_input(tensors), return_attention=True
            )
            layers = outputs["attention"] if layer == "all" else [outputs["attention"][layer]]
            keys = ~tensors["padding_mask"]
            keys[:, 0] = False  # <cls>
            ranks = torch.stack(
                [_rank_normalise(_drop_context(w, n_context), keys) for w in layers]
            ).mean(dim=0)
            ranks = ranks.float().cpu()
            pair = (columns[:, :, None] >= 0) & (columns[:, None, :] >= 0)
            pair &= ~torch.eye(columns.shape[1], dtype=torch.bool)  # no self-attention
            slots = (
                group[:, None, None] * n_genes * n_genes
                + columns[:, :, None] * n_genes
                + columns[:, None, :]
            )[pair]
            sums.index_add_(0, slots, ranks[pair].double())
            counts.index_add_(0, slots, torch.ones(len(slots), dtype=torch.float64))
        mean = (sums / counts.clamp(min=1)).view(len(names), n_genes, n_genes).numpy()
        mean[(counts == 0).view(len(names), n_genes, n_genes).numpy()] = np.nan
        return dict(zip(names, mean, strict=True)), genes

    def _network_inputs(
        self,
        adata: AnnData | None,
        groupby: str | None,
        genes: Sequence[str] | None,
        indices: Sequence[int] | None,
    ) -> tuple[AnnData, list[str], np.ndarray, list]:
        """Validated cells, genes, each selected cell's group code, and the group names."""
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        genes = self._network_genes(adata, genes)
        rows = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        if groupby is None:
            return adata, genes, np.zeros(rows.size, dtype=np.int64), [None]
        if groupby not in adata.obs:
            raise KeyError(
                f"groupby={groupby!r} is not a column of adata.obs (columns: "
                f"{list(adata.obs.columns)})."
            )
        values = adata.obs[groupby].iloc[rows].astype(str).to_numpy()
        names, codes = np.unique(values, return_inverse=True)
        return adata, genes, codes.astype(np.int64), list(names)

    def _network_genes(self, adata: AnnData | None, genes: Sequence[str] | None) -> list[str]:
        if genes is None:
            if adata is None:
                genes = self.vocab_.genes
            else:
                names = gene_names(adata, self.registry_["setup_args"]["gene_key"])
                genes = [g for g, i in zip(names, self.vocab_.lookup(names), strict=True) if i >= 0]
            if len(genes) > _MAX_NETWORK_GENES:
                raise ValueError(
                    f"{len(genes)} genes make too large a network; pass genes= (at most "
                    f"{_MAX_NETWORK_GENES}), e.g. highly variable genes."
                )
        genes = list(dict.fromkeys(genes))
        self._gene_ids(genes)  # raises for genes not in the vocabulary
        return genes

    def _gene_batches(
        self,
        adata: AnnData,
        genes: list[str],
        groups: np.ndarray,
        indices: Sequence[int] | None,
        batch_size: int | None,
    ) -> Iterator[tuple[dict, torch.Tensor, torch.Tensor]]:
        """Minibatches of tokens, each token's column in ``genes`` (-1: other) and cell groups."""
        lookup = torch.full((len(self.vocab_),), -1, dtype=torch.long)
        lookup[torch.as_tensor(self._gene_ids(genes))] = torch.arange(len(genes))
        groups = torch.as_tensor(groups)
        self.module.eval()
        start = 0
        for tensors in self._tokenized_loader(adata, indices=indices, batch_size=batch_size):
            columns = lookup[tensors["gene_ids"]].masked_fill(tensors["padding_mask"], -1)
            n_cells = columns.shape[0]
            yield tensors, columns, groups[start : start + n_cells]
            start += n_cells


def _drop_context(weights: torch.Tensor, n_context: int) -> torch.Tensor:
    """Attention ``(cells, heads, seq, seq)`` without the batch/condition tokens after ``<cls>``."""
    if not n_context:
        return weights
    keep = [0, *range(1 + n_context, weights.shape[-1])]
    return weights[:, :, keep][:, :, :, keep]


def _rank_normalise(weights: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Per query row: attention ranks over the valid keys, scaled to (0, 1], mean over heads."""
    valid = keys[:, None, None, :]
    scores = weights.masked_fill(~valid, -1.0)  # weights are >= 0: invalid keys rank lowest
    ranks = scores.argsort(dim=-1, stable=True).argsort(dim=-1).to(weights.dtype)  # 0 = smallest
    n_valid = valid.sum(dim=-1, keepdim=True).to(weights.dtype)
    n_invalid = weights.shape[-1] - n_valid
    return ((ranks - n_invalid + 1) / n_valid.clamp(min=1)).mean(dim=1)


def _cosine(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.where(norms > 0, norms, 1.0)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, np.nan)
    return similarity


def _edges(
    matrix: np.ndarray, genes: list[str], top_k: int | None, symmetric: bool
) -> pd.DataFrame:
    """Edge table of a genes x genes matrix (NaN: no edge), strongest per source first."""
    scores = np.where(np.isnan(matrix), -np.inf, matrix)
    keep = np.isfinite(scores)
    if top_k is not None and top_k < len(genes):
        top = np.argpartition(-scores, top_k - 1, axis=1)[:, :top_k]
        selected = np.zeros_like(keep)
        np.put_along_axis(selected, top, True, axis=1)
        if symmetric:
            selected |= selected.T
        keep &= selected
    source, target = np.nonzero(keep)
    genes = np.asarray(genes, dtype=object)
    table = pd.DataFrame(
        {"source": genes[source], "target": genes[target], "weight": matrix[source, target]}
    )
    order = np.lexsort((-table["weight"].to_numpy(), source))
    return table.iloc[order].reset_index(drop=True)
