"""Real datasets shipped with the package."""

from ._baron import baron_pancreas

__all__ = ["baron_pancreas"]
