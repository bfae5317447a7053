"""scformer."""
