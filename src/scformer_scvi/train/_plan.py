"""Training plan: scvi-tools' TrainingPlan with AdamW and a per-step warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch
from scvi.module.base import BaseModuleClass, LossOutput
from scvi.train import TrainingPlan


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class SCFormerTrainingPlan(TrainingPlan):
    """Training plan for :class:`~scformer_scvi.SCFormer`.

    Differs from :class:`scvi.train.TrainingPlan` only where a transformer needs it: AdamW with
    transformer defaults (weight decay on matrices only), a learning rate that warms up linearly
    and then follows a cosine per optimizer step, and logging of the module's own losses instead
    of ELBO/KL terms, which a deterministic model does not have. Automatic optimisation is kept,
    so Lightning's gradient clipping, accumulation and mixed precision all apply.

    Parameters
    ----------
    module
        The torch module.
    lr
        Peak learning rate.
    weight_decay
        AdamW weight decay, applied to weight matrices (not to biases and norms).
    betas
        AdamW betas.
    warmup_ratio
        Fraction of all optimizer steps spent warming up.
    min_lr_ratio
        Final learning rate as a fraction of ``lr``.
    dar_warmup_ratio
        Fraction of all optimizer steps over which the gradient reversal of adversarial batch
        removal ramps linearly from 0 to full strength (the discriminator first learns to
        predict batches, then the encoder is pushed to hide them).
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan` (unknown keys reach ``module.loss``).
    """

    def __init__(
        self,
        module: BaseModuleClass,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_ratio: float = 0.05,
        min_lr_ratio: float = 0.01,
        dar_warmup_ratio: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(module, optimizer="AdamW", lr=lr, weight_decay=weight_decay, **kwargs)
        self.betas = tuple(betas)
        self.warmup_ratio = warmup_ratio
        self.min_lr_ratio = min_lr_ratio
        self.dar_warmup_ratio = dar_warmup_ratio

    @property
    def dar_scale(self) -> float:
        """Current gradient-reversal strength: a linear ramp over the warm-up, then 1."""
        warmup = self.dar_warmup_ratio * max(1, int(self.trainer.estimated_stepping_batches))
        return 1.0 if warmup < 1 else min(1.0, self.global_step / warmup)

    def training_step(self, batch, batch_idx):
        """Training step with the current gradient-reversal strength."""
        self.loss_kwargs["dar_scale"] = self.dar_scale
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        """Validation step at full gradient-reversal strength (it only scales gradients)."""
        self.loss_kwargs["dar_scale"] = 1.0
        return super().validation_step(batch, batch_idx)

    def configure_optimizers(self):
        """AdamW over trainable parameters with a per-step warm-up + cosine schedule."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, eps=1e-8)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, round(self.warmup_ratio * total))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total, self.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def compute_and_log_metrics(self, loss_output: LossOutput, metrics: dict, mode: str) -> None:
        """Log each of the module's extra metrics as ``<name>_<train|validation>``."""
        for key, value in loss_output.extra_metrics.items():
            self.log(
                f"{key}_{mode}",
                value.detach() if isinstance(value, torch.Tensor) else value,
                on_step=self.on_step,
                on_epoch=self.on_epoch,
                batch_size=loss_output.n_obs_minibatch,
                sync_dist=self.use_sync_dist,
            )


class PerturbationTrainingPlan(SCFormerTrainingPlan):
    """Training plan for perturbation prediction (control cell -> perturbed profile).

    Same optimiser and schedule as :class:`SCFormerTrainingPlan`; each step runs the module's
    :meth:`~scformer_scvi.module.SCFormerModule.perturbation_step` instead of pretraining.

    Parameters
    ----------
    module
        The torch module (built with ``perturbation=True`` or conditions).
    distribution_loss
        ``"energy"`` or ``"mmd"`` to also match the distribution of predicted perturbed cells
        to the observed ones per perturbation; ``None`` for none.
    distribution_weight
        Weight of that term.
    **kwargs
        Passed to :class:`SCFormerTrainingPlan`.
    """

    def __init__(
        self,
        module: BaseModuleClass,
        *,
        distribution_loss: str | None = None,
        distribution_weight: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(module, **kwargs)
        self.loss_kwargs.update(
            {"distribution_loss": distribution_loss, "distribution_weight": distribution_weight}
        )

    def forward(self, tensors, loss_kwargs: dict | None = None, **kwargs):
        """Run the perturbation step of the module."""
        return self.module.perturbation_step(tensors, **(loss_kwargs or {}))
