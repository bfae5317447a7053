"""Label transfer accuracy of an embedding across batches."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.neighbors import KNeighborsClassifier


def cross_batch_knn_accuracy(
    embedding: np.ndarray, labels: np.ndarray, batches: np.ndarray, k: int = 15
) -> dict[str, float]:
    """How well each batch's labels are predicted from its neighbours in the other batches.

    For every batch in turn, a ``k``-nearest-neighbour classifier (exact Euclidean search,
    majority vote) is fitted on the cells of all other batches and predicts the held-out batch.
    High scores need both biology (labels cluster) and integration (batches overlap).

    Parameters
    ----------
    embedding
        ``(n_cells, n_dims)``.
    labels, batches
        ``(n_cells,)`` cell labels and batch of each cell.
    k
        Neighbours per vote.

    Returns
    -------
    ``accuracy`` and ``macro_f1`` over all cells (each predicted while its batch was held out).
    """
    embedding = np.asarray(embedding)
    labels = np.asarray(labels).astype(str)
    batches = np.asarray(batches).astype(str)
    if not (embedding.shape[0] == labels.shape[0] == batches.shape[0]):
        raise ValueError(
            f"embedding ({embedding.shape[0]} rows), labels ({labels.shape[0]}) and batches "
            f"({batches.shape[0]}) must describe the same cells."
        )
    if np.unique(batches).size < 2:
        raise ValueError("Cross-batch kNN accuracy needs at least two batches.")
    predicted = np.empty_like(labels)
    for batch in np.unique(batches):
        held_out = batches == batch
        classifier = KNeighborsClassifier(n_neighbors=min(k, int((~held_out).sum())))
        classifier.fit(embedding[~held_out], labels[~held_out])
        predicted[held_out] = classifier.predict(embedding[held_out])
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro")),
    }
