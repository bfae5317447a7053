"""Capabilities composed into the model classes, one per module."""

from ._bank import BankMixin
from ._embedding import EmbeddingMixin
from ._expression import ExpressionMixin
from ._save_load import SafeSaveLoadMixin

__all__ = ["BankMixin", "EmbeddingMixin", "ExpressionMixin", "SafeSaveLoadMixin"]
