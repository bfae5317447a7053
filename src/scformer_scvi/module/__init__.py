"""Torch modules of scFormer, their likelihoods and objectives."""

from ._likelihoods import (
    LIKELIHOODS,
    BinnedHead,
    HurdleHead,
    MSEHead,
    ZINBHead,
    hurdle_log_prob,
    soft_ordinal_targets,
    zinb_log_prob,
)
from ._objectives import contrastive_loss, elastic_similarity_loss
from ._scformer import SCFormerModule

__all__ = [
    "LIKELIHOODS",
    "BinnedHead",
    "HurdleHead",
    "MSEHead",
    "SCFormerModule",
    "ZINBHead",
    "contrastive_loss",
    "elastic_similarity_loss",
    "hurdle_log_prob",
    "soft_ordinal_targets",
    "zinb_log_prob",
]
