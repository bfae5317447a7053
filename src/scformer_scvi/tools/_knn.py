"""Label transfer from reference to query cells by nearest neighbours in an embedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pynndescent import NNDescent

# Exact search below this many reference x query distances: cheap, and it spares pynndescent's
# just-in-time compilation, which costs tens of seconds per process.
_EXACT_MAX_PAIRS = 10**8
_BLOCK = 2048


def knn_label_transfer(
    ref_latent: np.ndarray,
    ref_labels: Sequence[str] | np.ndarray | pd.Series,
    query_latent: np.ndarray,
    k: int = 15,
    method: Literal["auto", "exact", "pynndescent"] = "auto",
    metric: str = "euclidean",
    query_index: Sequence[str] | pd.Index | None = None,
    random_state: int = 0,
    soft: bool = False,
) -> pd.DataFrame:
    """Predict query labels by a distance-weighted vote of their nearest reference cells.

    Neighbours come from a :class:`pynndescent.NNDescent` index of the reference (approximate
    nearest-neighbour search, scales to millions of cells), or, for small inputs, from an exact
    search (``method="auto"``: exact up to 10^8 reference x query pairs). Each of a query
    cell's ``k`` neighbours votes with weight ``exp(-(d / d_k)^2)``, where ``d_k`` is the
    distance to the ``k``-th neighbour, so near neighbours count more and the vote does not
    depend on the scale of the embedding.

    Parameters
    ----------
    ref_latent
        ``(n_ref, n_dims)`` reference embedding, e.g. ``model.get_latent_representation()``.
    ref_labels
        ``(n_ref,)`` labels of the reference cells.
    query_latent
        ``(n_query, n_dims)`` query embedding in the same space.
    k
        Neighbours per vote (at most the number of reference cells).
    method
        ``"auto"``, ``"exact"`` (Euclidean only) or ``"pynndescent"``.
    metric
        Any metric :class:`pynndescent.NNDescent` supports (``"auto"`` is exact only for
        ``"euclidean"``).
    query_index
        Row names of the result (e.g. ``query.obs_names``); ``None`` numbers them.
    random_state
        Seed of the index construction.
    soft
        Return every label's weighted vote share instead of the winner.

    Returns
    -------
    One row per query cell: ``label`` (the winning label) and ``uncertainty``
    (1 - its weighted vote share: 0 when all neighbours agree); with ``soft=True`` one column
    per reference label (sorted) holding its vote share (rows sum to 1).

    Examples
    --------
    >>> result = knn_label_transfer(ref_z, ref.obs["cell_type"], query_z, k=15)
    >>> query.obs[["predicted", "uncertainty"]] = result.to_numpy()
    """
    ref_latent = np.ascontiguousarray(ref_latent, dtype=np.float32)
    query_latent = np.ascontiguousarray(query_latent, dtype=np.float32)
    labels = np.asarray(ref_labels).astype(str)
    if ref_latent.ndim != 2 or query_latent.ndim != 2:
        raise ValueError("ref_latent and query_latent must be 2-d arrays (cells x dimensions).")
    if ref_latent.shape[0] != labels.shape[0]:
        raise ValueError(
            f"ref_latent has {ref_latent.shape[0]} rows but ref_labels has {labels.shape[0]}."
        )
    if ref_latent.shape[1] != query_latent.shape[1]:
        raise ValueError(
            f"ref_latent ({ref_latent.shape[1]} dims) and query_latent "
            f"({query_latent.shape[1]} dims) are not in the same space."
        )
    if not 1 <= k <= ref_latent.shape[0]:
        raise ValueError(f"k must be between 1 and the {ref_latent.shape[0]} reference cells.")
    if query_index is not None and len(query_index) != query_latent.shape[0]:
        raise ValueError("query_index must have one name per query cell.")

    if method not in ("auto", "exact", "pynndescent"):
        raise ValueError(f"method must be 'auto', 'exact' or 'pynndescent', got {method!r}.")
    small = ref_latent.shape[0] * query_latent.shape[0] <= _EXACT_MAX_PAIRS
    if method == "exact" or (method == "auto" and small and metric == "euclidean"):
        if metric != "euclidean":
            raise ValueError("method='exact' supports metric='euclidean' only.")
        neighbours, distances = _exact_neighbours(ref_latent, query_latent, k)
    else:
        index = NNDescent(
            ref_latent,
            metric=metric,
            n_neighbors=max(k, min(30, ref_latent.shape[0] - 1)),
            random_state=random_state,
        )
        neighbours, distances = index.query(query_latent, k=k)
    scale = np.maximum(distances[:, -1:], 1e-12)
    weights = np.exp(-((distances / scale) ** 2))
    categories, codes = np.unique(labels, return_inverse=True)
    votes = np.zeros((query_latent.shape[0], categories.size))
    rows = np.repeat(np.arange(query_latent.shape[0]), k)
    np.add.at(votes, (rows, codes[neighbours].ravel()), weights.ravel())
    share = votes / votes.sum(axis=1, keepdims=True)
    index = pd.Index(query_index) if query_index is not None else None
    if soft:
        return pd.DataFrame(share, index=index, columns=pd.Index(categories))
    best = share.argmax(axis=1)
    return pd.DataFrame(
        {"label": categories[best], "uncertainty": 1.0 - share[np.arange(best.size), best]},
        index=index,
    )


def _exact_neighbours(ref: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest reference rows of each query row (Euclidean), nearest first."""
    ref_norms = (ref.astype(np.float64) ** 2).sum(axis=1)
    neighbours = np.empty((query.shape[0], k), dtype=np.int64)
    distances = np.empty((query.shape[0], k))
    for start in range(0, query.shape[0], _BLOCK):
        block = query[start : start + _BLOCK].astype(np.float64)
        squared = (block**2).sum(axis=1)[:, None] - 2 * block @ ref.T.astype(np.float64)
        squared += ref_norms[None, :]
        nearest = (
            np.argpartition(squared, k - 1, axis=1)[:, :k]
            if k < ref.shape[0]
            else (np.tile(np.arange(ref.shape[0]), (block.shape[0], 1)))
        )
        part = np.take_along_axis(squared, nearest, axis=1)
        order = np.argsort(part, axis=1, kind="stable")
        neighbours[start : start + _BLOCK] = np.take_along_axis(nearest, order, axis=1)
        distances[start : start + _BLOCK] = np.sqrt(
            np.maximum(np.take_along_axis(part, order, axis=1), 0.0)
        )
    return neighbours, distances
