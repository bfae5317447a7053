"""Training plans."""

from ._plan import SCFormerTrainingPlan, warmup_cosine

__all__ = ["SCFormerTrainingPlan", "warmup_cosine"]
