"""Evaluation metrics for embeddings and predictions."""

from ._expression import expression_correlation, rowwise_pearson
from ._integration import integration
from ._knn import cross_batch_knn_accuracy
from ._perturbation import (
    baseline_additive,
    baseline_linear,
    baseline_mean_perturbation,
    baseline_no_change,
    interaction_scores,
    perturbation_metrics,
    top_de_genes,
)

__all__ = [
    "baseline_additive",
    "baseline_linear",
    "baseline_mean_perturbation",
    "baseline_no_change",
    "cross_batch_knn_accuracy",
    "expression_correlation",
    "integration",
    "interaction_scores",
    "perturbation_metrics",
    "rowwise_pearson",
    "top_de_genes",
]
