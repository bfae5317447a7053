"""Evaluation metrics for embeddings and predictions."""

from ._integration import integration_scores
from ._knn import cross_batch_knn_accuracy

__all__ = ["cross_batch_knn_accuracy", "integration_scores"]
