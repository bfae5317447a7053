"""Training plans."""

from ._plan import PerturbationTrainingPlan, SCFormerTrainingPlan, warmup_cosine

__all__ = ["PerturbationTrainingPlan", "SCFormerTrainingPlan", "warmup_cosine"]
