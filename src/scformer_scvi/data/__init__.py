"""Tokenization and data loading: genes -> vocabulary ids, values -> bins, cells -> sequences."""

from ._binning import quantile_bins
from ._gene_init import GENE_INITS, expression_gene_embeddings
from ._loader import (
    LengthBucketSampler,
    TokenizeCollate,
    TokenizedDataLoader,
    TokenizedDataSplitter,
)
from ._tokenizer import TokenizedCells, Tokenizer, mask_tokens
from ._validation import validate_counts
from ._vocab import CLS_TOKEN, MASK_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, GeneVocab, gene_names

__all__ = [
    "CLS_TOKEN",
    "GENE_INITS",
    "MASK_TOKEN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "GeneVocab",
    "LengthBucketSampler",
    "TokenizeCollate",
    "TokenizedCells",
    "TokenizedDataLoader",
    "TokenizedDataSplitter",
    "Tokenizer",
    "expression_gene_embeddings",
    "gene_names",
    "mask_tokens",
    "quantile_bins",
    "validate_counts",
]
