"""Training plans."""

from ._callbacks import AverageBuffers, RecordSeenCells, ResumeState
from ._plan import PerturbationTrainingPlan, SCFormerTrainingPlan, warmup_cosine

__all__ = [
    "AverageBuffers",
    "PerturbationTrainingPlan",
    "RecordSeenCells",
    "ResumeState",
    "SCFormerTrainingPlan",
    "warmup_cosine",
]
