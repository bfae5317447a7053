"""Standard figures comparing predicted with observed expression."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from scformer_scvi.metrics import expression_correlation

from ._utils import finish


def correlation_plot(
    observed: pd.DataFrame,
    predicted: pd.DataFrame,
    title: str | None = None,
    path: str | Path | None = None,
) -> plt.Figure:
    """Predicted vs observed expression: all entries, and Pearson r per gene and per cell.

    Parameters
    ----------
    observed, predicted
        Cells x genes on the same scale (e.g. ``log1p(cp10k)``); DataFrames with equal
        index and columns, or arrays of equal shape.
    title
        Figure title.
    path
        Save the figure there if given.
    """
    scores = expression_correlation(observed, predicted)
    obs, pred = np.asarray(observed, float).ravel(), np.asarray(predicted, float).ravel()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].hexbin(obs, pred, gridsize=60, bins="log", cmap="viridis", mincnt=1)
    limit = [min(obs.min(), pred.min()), max(obs.max(), pred.max())]
    axes[0].plot(limit, limit, color="grey", lw=1, ls="--")
    axes[0].set(
        xlabel="observed", ylabel="predicted", title=f"all entries, r = {scores['overall']:.3f}"
    )
    for ax, key, name in ((axes[1], "per_gene", "genes"), (axes[2], "per_cell", "cells")):
        values = scores[key][np.isfinite(scores[key])]
        ax.hist(values, bins=40, color="tab:blue", alpha=0.8)
        ax.axvline(np.median(values), color="black", lw=1)
        ax.set(
            xlabel="Pearson r",
            ylabel=f"number of {name}",
            title=f"per {name[:-1]}: median r = {np.median(values):.3f}",
        )
    return finish(fig, title, path)


def distribution_plot(
    observed: pd.DataFrame,
    predicted: pd.DataFrame,
    genes: Sequence[str] | None = None,
    n_genes: int = 6,
    title: str | None = None,
    path: str | Path | None = None,
) -> plt.Figure:
    """Distributions of predicted and observed expression: overall, per cell, per gene.

    Parameters
    ----------
    observed, predicted
        Cells x genes DataFrames with the same index and columns, same scale.
    genes
        Genes to show one by one; ``None`` picks the ``n_genes`` most variable observed genes.
    n_genes
        Number of genes when ``genes`` is not given.
    title
        Figure title.
    path
        Save the figure there if given.
    """
    if list(observed.columns) != list(predicted.columns):
        raise ValueError("observed and predicted must have the same genes (columns) in order.")
    if genes is None:
        genes = list(observed.var().sort_values(ascending=False).index[:n_genes])
    panels = 2 + len(genes)
    n_cols = min(4, panels)
    n_rows = int(np.ceil(panels / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4 * n_cols, 3.3 * n_rows), squeeze=False)
    axes = axes.ravel()
    series = [
        ("all entries", observed.to_numpy().ravel(), predicted.to_numpy().ravel()),
        ("mean per cell", observed.mean(axis=1), predicted.mean(axis=1)),
    ] + [(gene, observed[gene], predicted[gene]) for gene in genes]
    for ax, (name, obs, pred) in zip(axes, series, strict=False):
        bins = np.histogram_bin_edges(np.concatenate([np.asarray(obs), np.asarray(pred)]), 40)
        ax.hist(obs, bins=bins, alpha=0.55, label="observed", density=True)
        ax.hist(pred, bins=bins, alpha=0.55, label="predicted", density=True)
        ax.set_title(name)
    for ax in axes[len(series) :]:
        ax.axis("off")
    axes[0].legend()
    return finish(fig, title, path)
