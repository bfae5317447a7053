"""Torch modules of scFormer."""

from ._scformer import SCFormerModule

__all__ = ["SCFormerModule"]
