"""Trainer settings shared by every way of training a model."""

from __future__ import annotations

from typing import Any

from ._precision import resolve_precision


def with_trainer_defaults(trainer_kwargs: dict[str, Any], accelerator: str) -> dict[str, Any]:
    """``trainer_kwargs`` with gradient clipping at 1 unless set and ``precision`` resolved.

    Used by :meth:`~scformer_scvi.SCFormer.train` and ``train_perturbation`` so that both
    clip gradients the same way and accept ``precision="auto"``
    (:func:`resolve_precision`). The caller's dictionary is not modified.
    """
    resolved = {"gradient_clip_val": 1.0, **trainer_kwargs}
    if "precision" in resolved:
        resolved["precision"] = resolve_precision(resolved["precision"], accelerator)
    return resolved
