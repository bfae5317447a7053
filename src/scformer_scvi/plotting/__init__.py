"""Plotting functions."""

from ._embedding import umap

__all__ = ["umap"]
