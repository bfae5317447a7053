"""Evaluation metrics for embeddings and predictions."""

from ._expression import expression_correlation, rowwise_pearson
from ._integration import integration
from ._knn import cross_batch_knn_accuracy

__all__ = [
    "cross_batch_knn_accuracy",
    "expression_correlation",
    "integration",
    "rowwise_pearson",
]
