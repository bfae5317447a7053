"""Plotting functions."""

from ._embedding import umap
from ._expression import correlation_plot, distribution_plot

__all__ = ["correlation_plot", "distribution_plot", "umap"]
