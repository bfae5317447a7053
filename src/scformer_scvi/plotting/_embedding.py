"""Figures of cell embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import scanpy as sc
from anndata import AnnData

from ._utils import finish


def umap(
    adata: AnnData,
    color: Sequence[str],
    basis: str = "X_umap",
    title: str | None = None,
    path: str | Path | None = None,
) -> plt.Figure:
    """Side-by-side UMAP panels, one per ``obs`` column in ``color``.

    Parameters
    ----------
    adata
        Cells with ``obsm[basis]`` (e.g. from ``sc.tl.umap``).
    color
        ``obs`` columns, one panel each.
    basis
        ``obsm`` key with 2-D coordinates.
    title
        Figure title.
    path
        If given, the figure is saved there (format from the suffix).
    """
    if basis not in adata.obsm:
        raise KeyError(f"obsm[{basis!r}] is missing; run sc.pp.neighbors and sc.tl.umap first.")
    fig, axes = plt.subplots(1, len(color), figsize=(6.5 * len(color), 5), squeeze=False)
    for ax, key in zip(axes[0], color, strict=True):
        sc.pl.embedding(adata, basis=basis, color=key, ax=ax, show=False, frameon=False, size=12)
    return finish(fig, title, path)
