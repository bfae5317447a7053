"""scFormer: a transformer foundation model for single-cell RNA-seq, as an scvi-tools plugin."""

from importlib.metadata import version

from . import data, datasets, metrics, plotting, tools
from .data import GeneVocab
from .model import SCFormer

__version__ = version("scformer-scvi")

#: Conventional ``adata.obsm`` key for scFormer cell embeddings.
LATENT_KEY = "X_scFormer"

__all__ = [
    "LATENT_KEY",
    "GeneVocab",
    "SCFormer",
    "data",
    "datasets",
    "metrics",
    "plotting",
    "tools",
]
