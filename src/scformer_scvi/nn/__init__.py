"""Neural-network layers of scFormer."""

from ._embedding import VALUE_ENCODINGS, TokenEmbedding, count_classes, log_cp10k
from ._transformer import EncoderLayer, SelfAttention, TransformerEncoder

__all__ = [
    "VALUE_ENCODINGS",
    "EncoderLayer",
    "SelfAttention",
    "TokenEmbedding",
    "TransformerEncoder",
    "count_classes",
    "log_cp10k",
]
