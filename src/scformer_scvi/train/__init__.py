"""Training plans."""

from ._callbacks import AverageBuffers, RecordSeenCells, ResumeState
from ._plan import PerturbationTrainingPlan, SCFormerTrainingPlan, warmup_cosine
from ._precision import native_bf16, resolve_precision
from ._trainer_defaults import with_trainer_defaults

__all__ = [
    "AverageBuffers",
    "PerturbationTrainingPlan",
    "RecordSeenCells",
    "ResumeState",
    "SCFormerTrainingPlan",
    "native_bf16",
    "resolve_precision",
    "warmup_cosine",
    "with_trainer_defaults",
]
