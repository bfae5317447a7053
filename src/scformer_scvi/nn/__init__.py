"""Neural-network layers of scFormer."""

from ._embedding import GeneTokenEmbedding
from ._heads import GeneQueryHead, TokenValueHead
from ._transformer import EncoderLayer, SelfAttention, TransformerEncoder

__all__ = [
    "EncoderLayer",
    "GeneQueryHead",
    "GeneTokenEmbedding",
    "SelfAttention",
    "TokenValueHead",
    "TransformerEncoder",
]
