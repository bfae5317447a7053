"""Analysis tools on scFormer outputs: label transfer and gene-network comparison."""

from ._knn import knn_label_transfer
from ._network import compare_gene_networks

__all__ = ["compare_gene_networks", "knn_label_transfer"]
