"""Gene embeddings initialised from the data: each gene's place on the cells' principal axes."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, svds

GeneInit = Literal["random", "pca"]
GENE_INITS: tuple[str, ...] = ("random", "pca")


def expression_gene_embeddings(
    counts: sp.spmatrix | np.ndarray,
    n_dims: int,
    batch: np.ndarray | None = None,
    max_cells: int = 50_000,
    seed: int = 0,
) -> np.ndarray:
    """Coordinates of every gene on the principal axes of log-normalised expression.

    The cells' ``log1p(cp10k)`` values are centred per gene **within each batch** (so that
    differences between batches do not become axes), scaled to unit variance per gene, and
    decomposed by a truncated SVD. A gene's coordinate on an axis is its loading times the
    axis' standard deviation, so genes that vary together point the same way and the main
    axes weigh most; the rows are then rescaled to a mean norm of ``sqrt(n_dims)``, the norm of
    a standard-normal embedding. The SVD runs on a linear operator, never densifying the
    matrix, so memory stays that of the sparse counts.

    Parameters
    ----------
    counts
        Cells x genes, non-negative (raw counts).
    n_dims
        Embedding width. Axes beyond ``min(n_cells, n_genes) - 1`` are zero.
    batch
        Batch of each cell; ``None``: one batch.
    max_cells
        At most this many cells, drawn at random (``seed``), enter the decomposition.
    seed
        Seed of the cell draw and of the SVD's start vector: the result is a function of the
        data and these arguments only.

    Returns
    -------
    Genes x ``n_dims`` array (float32). Genes that never vary within a batch get zeros.
    """
    rng = np.random.default_rng(seed)
    counts = sp.csr_matrix(counts, dtype=np.float64)
    batch = np.zeros(counts.shape[0], dtype=int) if batch is None else np.asarray(batch)
    if counts.shape[0] > max_cells:
        rows = np.sort(rng.choice(counts.shape[0], max_cells, replace=False))
        counts, batch = counts[rows], batch[rows]
    n_cells, n_genes = counts.shape
    totals = np.asarray(counts.sum(axis=1)).ravel()
    x = sp.csr_matrix(sp.diags(1e4 / np.maximum(totals, 1e-12)) @ counts)
    x.data = np.log1p(x.data)
    _, codes = np.unique(batch, return_inverse=True)
    onehot = sp.csr_matrix((np.ones(n_cells), (np.arange(n_cells), codes)))
    sizes = np.asarray(onehot.sum(axis=0)).ravel()
    means = (onehot.T @ x).toarray() / sizes[:, None]  # batches x genes
    sum_sq = np.asarray(x.multiply(x).sum(axis=0)).ravel()
    variance = (sum_sq - (sizes[:, None] * means**2).sum(axis=0)) / max(n_cells - 1, 1)
    inverse_sd = np.where(variance > 1e-12, 1.0 / np.sqrt(np.maximum(variance, 1e-12)), 0.0)

    def matvec(v: np.ndarray) -> np.ndarray:
        scaled = inverse_sd[:, None] * v.reshape(n_genes, -1)
        return x @ scaled - onehot @ (means @ scaled)

    def rmatvec(u: np.ndarray) -> np.ndarray:
        u = u.reshape(n_cells, -1)
        return inverse_sd[:, None] * (x.T @ u - means.T @ (onehot.T @ u))

    operator = LinearOperator(
        (n_cells, n_genes), matvec=matvec, rmatvec=rmatvec, matmat=matvec, rmatmat=rmatvec,
        dtype=np.float64,
    )  # fmt: skip
    embedding = np.zeros((n_genes, n_dims))
    k = min(n_dims, min(n_cells, n_genes) - 1)
    if k < 1:
        return embedding.astype(np.float32)
    start = rng.standard_normal(min(n_cells, n_genes))
    _, singular, vt = svds(operator, k=k, v0=start)
    order = np.argsort(singular)[::-1]
    loadings = vt[order].T
    # A singular vector's sign is arbitrary: make each axis' largest loading positive.
    loadings *= np.sign(loadings[np.abs(loadings).argmax(axis=0), np.arange(k)])
    embedding[:, :k] = loadings * singular[order] / np.sqrt(max(n_cells - 1, 1))
    mean_norm = np.linalg.norm(embedding, axis=1).mean()
    if mean_norm > 0:
        embedding *= np.sqrt(n_dims) / mean_norm
    return embedding.astype(np.float32)
