"""User-facing model classes."""

from ._scformer import SCFormer

__all__ = ["SCFormer"]
