"""Capabilities composed into the model classes, one per module."""

from ._embedding import EmbeddingMixin
from ._save_load import SafeSaveLoadMixin

__all__ = ["EmbeddingMixin", "SafeSaveLoadMixin"]
