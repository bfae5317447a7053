"""scib-metrics integration scores for any set of embeddings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData


def integration(
    adata: AnnData,
    embeddings: Sequence[str] | Mapping[str, np.ndarray],
    batch_key: str,
    label_key: str,
    pre_integrated_key: str = "X_pca",
    n_jobs: int = 1,
    table_png: str | Path | None = None,
) -> pd.DataFrame:
    """Bio-conservation and batch-correction scores (scib-metrics ``Benchmarker``).

    Parameters
    ----------
    adata
        Cells with ``obs[batch_key]``, ``obs[label_key]`` and ``obsm[pre_integrated_key]``
        (the unintegrated baseline, e.g. PCA, used by the PCR-comparison metric).
    embeddings
        ``obsm`` keys to score, or a mapping from a name to an ``(n_cells, n_dims)`` array.
    batch_key, label_key
        ``obs`` columns with the batch and the cell label.
    pre_integrated_key
        ``obsm`` key of the unintegrated embedding.
    n_jobs
        Parallel jobs for the neighbour-based metrics.
    table_png
        If given, the scib results table is saved there as PNG.

    Returns
    -------
    One row per embedding; one column per metric plus ``Batch correction``,
    ``Bio conservation`` and ``Total`` (scib's 0.4 / 0.6 weighting). ``attrs["metric_type"]``
    maps each column to its group.
    """
    from scib_metrics.benchmark import Benchmarker

    for key in (batch_key, label_key):
        if key not in adata.obs.columns:
            raise KeyError(f"{key!r} is not a column of adata.obs ({list(adata.obs.columns)}).")
    if pre_integrated_key not in adata.obsm:
        raise KeyError(
            f"obsm[{pre_integrated_key!r}] is missing; compute the unintegrated embedding first "
            "(e.g. sc.pp.pca) or pass pre_integrated_key=."
        )
    arrays = (
        {name: np.asarray(value) for name, value in embeddings.items()}
        if isinstance(embeddings, Mapping)
        else {key: _obsm(adata, key) for key in embeddings}
    )
    for name, value in arrays.items():
        if value.ndim != 2 or value.shape[0] != adata.n_obs:
            raise ValueError(
                f"Embedding {name!r} has shape {value.shape}; expected ({adata.n_obs}, n_dims), "
                "one row per cell of adata in the same order."
            )
        if not np.isfinite(value).all():
            raise ValueError(f"Embedding {name!r} contains NaN or infinite values.")
    scored = AnnData(obs=adata.obs[[batch_key, label_key]].copy())
    scored.obsm[pre_integrated_key] = np.asarray(adata.obsm[pre_integrated_key])
    for name, value in arrays.items():
        scored.obsm[name] = value.astype(np.float32)

    benchmarker = Benchmarker(
        scored,
        batch_key=batch_key,
        label_key=label_key,
        embedding_obsm_keys=list(arrays),
        pre_integrated_embedding_obsm_key=pre_integrated_key,
        n_jobs=n_jobs,
        progress_bar=False,
    )
    benchmarker.benchmark()
    results = benchmarker.get_results(min_max_scale=False)
    metric_type = results.loc["Metric Type"].to_dict()
    results = results.drop(index="Metric Type").astype(float)
    results.attrs["metric_type"] = metric_type
    if table_png is not None:
        table = benchmarker.plot_results_table(min_max_scale=False, show=False)
        table.ax.figure.savefig(table_png, dpi=150, bbox_inches="tight")
    return results


def _obsm(adata: AnnData, key: str) -> np.ndarray:
    if key not in adata.obsm:
        raise KeyError(f"obsm[{key!r}] is missing (obsm keys: {list(adata.obsm)}).")
    return np.asarray(adata.obsm[key])
