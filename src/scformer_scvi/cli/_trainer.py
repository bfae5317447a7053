"""Output directories, checkpoints, loggers and Lightning options of a command-line run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from scvi.train import SaveCheckpoint
from scvi.train._logger import SimpleLogger

from scformer_scvi.train import AverageBuffers, ResumeState, resolve_precision

from ._config import ConfigError, TrainerConfig

CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
CONFIG_FILE = "config.yaml"
# What a run writes into its output directory (removed by --overwrite, nothing else is).
RUN_OUTPUTS = (CHECKPOINTS, "logs", "model", CONFIG_FILE, "run.json", "history.csv")


def is_rank_zero() -> bool:
    """Whether this process writes the run's outputs (global rank 0).

    Launchers tell a process its rank through the environment: Lightning's own launcher starts
    the other processes of a node with ``LOCAL_RANK > 0`` (they inherit the rest of the
    environment, SLURM's variables included), torchrun sets ``RANK``, ``srun`` sets
    ``SLURM_PROCID``. A process with none of them is alone.
    """
    env = os.environ
    if int(env.get("LOCAL_RANK", 0)) > 0 or int(env.get("NODE_RANK", 0)) > 0:
        return False
    for variable in ("RANK", "SLURM_PROCID"):
        if variable in env:
            return int(env[variable]) == 0
    return True


def prepare_output_dir(output_dir: str, resume: str | None, overwrite: bool) -> Path:
    """Create the output directory; refuse to mix a new run into an earlier one."""
    out = Path(output_dir)
    if not is_rank_zero():
        return out
    earlier = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if earlier and resume is None:
        if not overwrite:
            raise ConfigError(
                f"output_dir {out} already holds a run ({', '.join(earlier)}). Pass --resume "
                "last to continue it, --overwrite true to replace it, or choose another "
                "output_dir."
            )
        for name in earlier:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def resolve_resume(resume: str | None, out: Path) -> str | None:
    """The checkpoint to resume from.

    ``last``: this run's end-of-epoch ``last.ckpt`` (an exact continuation); ``latest``: its
    newest checkpoint, a step checkpoint if one was written after ``last.ckpt`` (the
    interrupted epoch restarts on a new shuffle); or a path.
    """
    if resume is None:
        return None
    path = Path(resume)
    if resume == "last":
        path = out / CHECKPOINTS / LAST_CHECKPOINT
    elif resume == "latest":
        found = sorted((out / CHECKPOINTS).glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        path = found[-1] if found else out / CHECKPOINTS / LAST_CHECKPOINT
    if not path.is_file():
        found = sorted(p.name for p in (out / CHECKPOINTS).glob("*.ckpt"))
        raise ConfigError(
            f"--resume: {path} does not exist (checkpoints in {out / CHECKPOINTS}: "
            f"{found or 'none'}). Pass one of them as --resume PATH, or start a new run."
        )
    return str(path)


class LightningCheckpoint(SaveCheckpoint):
    """Lightning's :class:`~lightning.pytorch.callbacks.ModelCheckpoint`, unchanged.

    scvi-tools' trainer adds its own ``SaveCheckpoint`` (a model directory per checkpoint,
    monitoring ``validation_loss``) whenever checkpointing is on, unless a ``SaveCheckpoint``
    is among the callbacks. This class is one in name only: every method comes from
    ``ModelCheckpoint``, so it writes ordinary Lightning checkpoints that resume a run.
    """

    def __init__(self, **kwargs: Any) -> None:
        ModelCheckpoint.__init__(self, **kwargs)  # not SaveCheckpoint's: it drops save_last
        self.load_best_on_end = False
        self.check_nan_gradients = False
        self.loss_is_nan = False

    on_save_checkpoint = ModelCheckpoint.on_save_checkpoint
    on_train_batch_end = ModelCheckpoint.on_train_batch_end
    on_train_end = ModelCheckpoint.on_train_end
    on_exception = ModelCheckpoint.on_exception
    _remove_checkpoint = ModelCheckpoint._remove_checkpoint
    _update_best_and_save = ModelCheckpoint._update_best_and_save


def trainer_kwargs(
    trainer: TrainerConfig, out: Path, validation: bool, write_logs: bool = True
) -> dict[str, Any]:
    """Keyword arguments for ``model.train`` (scvi-tools' ``Trainer`` and Lightning)."""
    checkpoints = out / CHECKPOINTS
    callbacks = [
        ResumeState(),
        AverageBuffers(),  # before the checkpoints (Lightning runs those last)
        LightningCheckpoint(
            dirpath=checkpoints,
            filename="epoch{epoch}",
            save_top_k=0,  # only last.ckpt: the state to resume from
            save_last=True,
            every_n_epochs=trainer.checkpoint_every_n_epochs,
            save_on_train_epoch_end=True,  # after validation, so resuming does not repeat it
            enable_version_counter=False,
        ),
    ]
    if trainer.checkpoint_every_n_steps:
        callbacks.append(
            LightningCheckpoint(
                dirpath=checkpoints,
                filename="step-{step}",
                every_n_train_steps=trainer.checkpoint_every_n_steps,
                save_top_k=trainer.keep_step_checkpoints,
                monitor="step",
                mode="max",
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
        )
    if trainer.early_stopping:
        callbacks.append(
            EarlyStopping(
                monitor=trainer.early_stopping_monitor,
                patience=trainer.early_stopping_patience,
                min_delta=trainer.early_stopping_min_delta,
                mode="min",
            )
        )
    # SimpleLogger first: scvi-tools fills model.history from the trainer's first logger.
    loggers: list = [SimpleLogger()]
    if write_logs:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
        if "csv" in trainer.loggers:
            loggers.append(CSVLogger(save_dir=out / "logs", name="csv"))
        if "tensorboard" in trainer.loggers:
            loggers.append(TensorBoardLogger(save_dir=out / "logs", name="tensorboard"))
    kwargs = {
        "accelerator": trainer.accelerator,
        "devices": trainer.devices,
        "num_nodes": trainer.num_nodes,
        "strategy": trainer.strategy,
        "precision": resolve_precision(trainer.precision, trainer.accelerator),
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "gradient_clip_algorithm": trainer.gradient_clip_algorithm,
        "check_val_every_n_epoch": trainer.check_val_every_n_epoch if validation else None,
        "log_every_n_steps": trainer.log_every_n_steps,
        "enable_progress_bar": trainer.enable_progress_bar,
        "default_root_dir": str(out),
        "logger": loggers,
        "callbacks": callbacks + list(trainer.callbacks),
        "early_stopping": False,  # Lightning's EarlyStopping above also works under DDP
    }
    if trainer.limit_train_batches is not None:
        kwargs["limit_train_batches"] = trainer.limit_train_batches
    return kwargs


def weights_from_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The module weights in a Lightning checkpoint of a scFormer run.

    Loaded with ``weights_only=True``: a checkpoint holds tensors and plain values only, so
    nothing is unpickled (our callbacks store their state that way too).
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "module."  # the training plan holds the module as .module
    return {
        key[len(prefix) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(prefix)
    }


class SaveAtEnd(Callback):
    """Write a checkpoint when training ends (on every rank: sharded strategies gather).

    Under FSDP a rank holds only a shard of each weight; Lightning's checkpoint gathers the
    full weights, which is how the final model of a sharded run is written.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        """Save the full training state."""
        trainer.save_checkpoint(self.path)


def history_frame(history: dict[str, pd.DataFrame] | None) -> pd.DataFrame:
    """``model.history`` as one table: epoch-level metrics as columns, one row per epoch."""
    frames = [
        frame for frame in (history or {}).values() if frame.index.name == "epoch" and len(frame)
    ]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, axis=1).sort_index()


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON."""
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
