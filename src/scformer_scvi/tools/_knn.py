"""Label transfer from reference to query cells by nearest neighbours in an embedding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from pynndescent import NNDescent


def knn_label_transfer(
    ref_latent: np.ndarray,
    ref_labels: Sequence[str] | np.ndarray | pd.Series,
    query_latent: np.ndarray,
    k: int = 15,
    metric: str = "euclidean",
    query_index: Sequence[str] | pd.Index | None = None,
    random_state: int = 0,
) -> pd.DataFrame:
    """Predict query labels by a distance-weighted vote of their nearest reference cells.

    Neighbours come from a :class:`pynndescent.NNDescent` index of the reference (approximate
    nearest-neighbour search, exact in practice at these sizes). Each of a query cell's ``k``
    neighbours votes with weight ``exp(-(d / d_k)^2)``, where ``d_k`` is the distance to the
    ``k``-th neighbour, so near neighbours count more and the vote does not depend on the scale
    of the embedding.

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
    metric
        Any metric :class:`pynndescent.NNDescent` supports.
    query_index
        Row names of the result (e.g. ``query.obs_names``); ``None`` numbers them.
    random_state
        Seed of the index construction.

    Returns
    -------
    One row per query cell: ``label`` (the winning label) and ``uncertainty``
    (1 - its weighted vote share: 0 when all neighbours agree).

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
    best = share.argmax(axis=1)
    return pd.DataFrame(
        {"label": categories[best], "uncertainty": 1.0 - share[np.arange(best.size), best]},
        index=pd.Index(query_index) if query_index is not None else None,
    )
