"""Neural-network layers of scFormer."""

from ._domain_norm import DomainBatchNorm
from ._embedding import VALUE_ENCODINGS, TokenEmbedding, count_classes, log_cp10k
from ._grad_reverse import grad_reverse
from ._transformer import EncoderLayer, SelfAttention, TransformerEncoder

__all__ = [
    "VALUE_ENCODINGS",
    "DomainBatchNorm",
    "EncoderLayer",
    "SelfAttention",
    "TokenEmbedding",
    "TransformerEncoder",
    "count_classes",
    "grad_reverse",
    "log_cp10k",
]
