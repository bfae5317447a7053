"""Capabilities composed into the model classes, one per module."""

from ._bank import BankMixin
from ._embedding import EmbeddingMixin
from ._expression import ExpressionMixin
from ._network import NetworkMixin
from ._perturbation import PerturbationMixin
from ._save_load import SafeSaveLoadMixin
from ._scgpt import ScGPTMixin
from ._transfer import TransferMixin

__all__ = [
    "BankMixin",
    "EmbeddingMixin",
    "ExpressionMixin",
    "NetworkMixin",
    "PerturbationMixin",
    "SafeSaveLoadMixin",
    "ScGPTMixin",
    "TransferMixin",
]
