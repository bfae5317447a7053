"""What ``scformer pretrain``, ``scformer embed`` and ``scformer finetune`` do."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import scvi
from lightning.pytorch.callbacks import Callback
from scvi.model.base import UnsupervisedTrainingMixin

import scbank
from scformer_scvi.model import SCFormer

from ._config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    ObjectivesConfig,
    OptimizerConfig,
    TaskConfig,
    TrainerConfig,
    check_data,
    check_trainer,
    has_validation,
)
from ._data import bank_datamodule, is_bank, read_h5ads
from ._pretrained import model_from_pretrained, report_frame
from ._trainer import (
    CONFIG_FILE,
    SaveAtEnd,
    history_frame,
    is_rank_zero,
    prepare_output_dir,
    resolve_resume,
    trainer_kwargs,
    weights_from_checkpoint,
    write_json,
)

logger = logging.getLogger(__name__)

_WEIGHTS = (
    "gep_weight",
    "mvc_weight",
    "cce_weight",
    "ecs_weight",
    "classification_weight",
    "dar_weight",
    "ecs_threshold",
    "cce_temperature",
)


def plan_kwargs(optimizer: OptimizerConfig, dar_warmup_ratio: float = 0.1) -> dict[str, Any]:
    """Options of :class:`~scformer_scvi.train.SCFormerTrainingPlan`."""
    return {
        "lr": optimizer.lr,
        "weight_decay": optimizer.weight_decay,
        "betas": tuple(optimizer.betas),
        "warmup_ratio": optimizer.warmup_ratio,
        "min_lr_ratio": optimizer.min_lr_ratio,
        "dar_warmup_ratio": dar_warmup_ratio,
    }


def _start(
    output_dir: str, resume: str | None, overwrite: bool, config_yaml: str | None, seed: int
) -> tuple[Path, str | None]:
    """Prepare the output directory, find the checkpoint to resume from, record the config."""
    out = prepare_output_dir(output_dir, resume, overwrite)
    ckpt_path = resolve_resume(resume, out)
    if config_yaml is not None and is_rank_zero():
        (out / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
    scvi.settings.seed = seed
    return out, ckpt_path


def _train_anndata(
    model: SCFormer,
    data: DataConfig,
    trainer: TrainerConfig,
    masking: ObjectivesConfig | TaskConfig,
    plan: dict[str, Any],
    ckpt_path: str | None,
    kwargs: dict[str, Any],
) -> None:
    """``model.train`` on its AnnData (masked value prediction plus the module's objectives)."""
    bucketing = data.length_bucketing
    if bucketing and "ddp" in trainer.strategy:
        logger.warning(
            "data.length_bucketing is off under DDP with AnnData (the distributed sampler "
            "shards random minibatches); train from a scBank to shard cells instead."
        )
        bucketing = False
    model.train(
        max_epochs=trainer.max_epochs,
        mask_ratio=masking.mask_ratio,
        batch_size=data.batch_size,
        length_bucketing=bucketing,
        mvc_zero_fraction=masking.mvc_zero_fraction,
        train_size=data.train_size,
        plan_kwargs=plan,
        datasplitter_kwargs={"num_workers": data.num_workers},
        ckpt_path=ckpt_path,
        **kwargs,
    )


def pretrain(
    *,
    output_dir: str,
    data: DataConfig,
    model: ModelConfig,
    objectives: ObjectivesConfig,
    optimizer: OptimizerConfig,
    trainer: TrainerConfig,
    seed: int = 0,
    resume: str | None = None,
    overwrite: bool = False,
    config_yaml: str | None = None,
    extra_callbacks: Sequence[Callback] = (),
) -> SCFormer:
    """Pretrain a new model as configured and write the run to ``output_dir``.

    Parameters
    ----------
    output_dir
        Run directory: ``config.yaml``, ``checkpoints/``, ``logs/``, ``model/``,
        ``history.csv`` and ``run.json``.
    data, model, objectives, optimizer, trainer
        The configuration sections.
    seed
        Seed of weights, data split, masking and shuffling (``scvi.settings.seed``).
    resume
        ``"last"`` (this run's last end-of-epoch checkpoint), ``"latest"`` (its newest
        checkpoint) or a checkpoint path.
    overwrite
        Replace an earlier run in ``output_dir``.
    config_yaml
        The resolved configuration, written as ``config.yaml``.
    extra_callbacks
        More Lightning callbacks (used by tests).

    Returns
    -------
    The trained model (on every process; only global rank 0 writes files).
    """
    check_data(data)
    check_trainer(trainer, data)
    out, ckpt_path = _start(output_dir, resume, overwrite, config_yaml, seed)
    start = time.perf_counter()

    model_kwargs = {**asdict(model), **{k: getattr(objectives, k) for k in _WEIGHTS}}
    validation = has_validation(data)
    kwargs = trainer_kwargs(trainer, out, validation)
    kwargs["callbacks"] += list(extra_callbacks)
    plan = plan_kwargs(optimizer, objectives.dar_warmup_ratio)
    if data.bank:
        bank = scbank.DataBank.open(data.bank)
        scformer = SCFormer.from_bank(bank, data.batch_key, data.labels_key, **model_kwargs)
        n_cells, n_genes = bank.n_obs, len(bank.var_names)
    else:
        adata = read_h5ads(data)
        SCFormer.setup_anndata(
            adata,
            layer=data.layer,
            batch_key=data.batch_key,
            labels_key=data.labels_key,
            gene_key=data.gene_key,
        )
        scformer = SCFormer(adata, **model_kwargs)
        n_cells, n_genes = adata.n_obs, adata.n_vars
    scformer.module.encoder.gradient_checkpointing = trainer.gradient_checkpointing
    logger.info("%s", scformer._model_summary_string)

    final = out / "checkpoints" / "final.ckpt"
    if "fsdp" in trainer.strategy:
        kwargs["callbacks"].append(SaveAtEnd(final))
    if data.bank:
        datamodule = bank_datamodule(
            scformer, bank, data, objectives.mask_ratio, objectives.mvc_zero_fraction
        )
        # SCFormer.train(bank=...) has no validation bank; the same scvi-tools entry point
        # with this data module (training + validation) instead.
        UnsupervisedTrainingMixin.train(
            scformer,
            max_epochs=trainer.max_epochs,
            plan_kwargs=plan,
            datamodule=datamodule,
            ckpt_path=ckpt_path,
            **kwargs,
        )
    else:
        _train_anndata(scformer, data, trainer, objectives, plan, ckpt_path, kwargs)
    if not scformer.trainer.is_global_zero:
        return scformer
    if "fsdp" in trainer.strategy:
        # The trained module holds weight shards; a fresh model gets the gathered weights.
        sharded = scformer
        scformer = SCFormer.from_bank(bank, data.batch_key, data.labels_key, **model_kwargs)
        scformer.module.load_state_dict(weights_from_checkpoint(final))
        scformer.module.eval()
        scformer.history_, scformer.trainer = sharded.history_, sharded.trainer
        scformer.is_trained_ = True
    _write_run(scformer, out, start, resume, n_cells=n_cells, n_genes=n_genes)
    return scformer


def _write_run(model: SCFormer, out: Path, start: float, resume: str | None, **info) -> None:
    """Final model, history table and a run summary (global rank 0 only)."""
    model.save(out / "model", overwrite=True)
    history = history_frame(model.history)
    history.to_csv(out / "history.csv")
    trainer = model.trainer
    last = history.iloc[-1].dropna().to_dict() if len(history) else {}
    write_json(
        out / "run.json",
        {
            **info,
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
            "resumed_from": resume,
            "seconds": round(time.perf_counter() - start, 1),
            "final_metrics": last,
            "model": str(out / "model"),
        },
    )


def embed(
    *,
    model: str,
    input: str,
    output: str | None = None,
    bank_table: str | None = None,
    obsm_key: str = "X_scFormer",
    batch_size: int = 256,
    accelerator: str = "auto",
    device: int | str = "auto",
) -> np.ndarray:
    """Embed the cells of an ``.h5ad`` file or a scBank with a saved model.

    Parameters
    ----------
    model
        A model directory (``SCFormer.save``; ``<output_dir>/model`` of a run).
    input
        An ``.h5ad`` file of raw counts or a scBank directory.
    output
        ``.h5ad`` to write: the input AnnData with ``obsm[obsm_key]``, or for a bank its
        ``obs`` with the embeddings.
    bank_table
        For a bank: also write the embeddings into it as a dense table of this name
        (``bank.obsm[bank_table]``, a new bank generation).
    obsm_key
        Key of the embeddings in ``obsm``.
    batch_size
        Cells per forward pass.
    accelerator, device
        Where to run the model.

    Returns
    -------
    The ``(n_cells, d_model)`` embeddings.
    """
    if not Path(model, "model.json").is_file():
        raise ConfigError(
            f"--model {model} is not a model directory (no model.json). Pass "
            "<output_dir>/model of a pretraining run, or a directory written by SCFormer.save."
        )
    if is_bank(input):
        if output is None and bank_table is None:
            raise ConfigError("Embedding a bank: give --output X.h5ad and/or --bank_table NAME.")
    elif str(input).endswith(".h5ad") and Path(input).is_file():
        if output is None:
            raise ConfigError("Give --output Y.h5ad for the embedded AnnData.")
        if bank_table is not None:
            raise ConfigError("--bank_table needs a scBank as --input.")
    else:
        raise ConfigError(
            f"--input {input} is neither an existing .h5ad file nor a scBank directory "
            "(with manifest.json). Fix the path."
        )
    scformer = SCFormer.load(model, accelerator=accelerator, device=device)
    if is_bank(input):
        bank = scbank.DataBank.open(input)
        embeddings = scformer.get_latent_representation(
            bank, batch_size=batch_size, bank_table=bank_table
        )
        cells = ad.AnnData(obs=bank.obs.copy(), obsm={obsm_key: embeddings})
    else:
        cells = ad.read_h5ad(input)
        embeddings = scformer.get_latent_representation(cells, batch_size=batch_size)
        cells.obsm[obsm_key] = embeddings
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        cells.write_h5ad(output)
    return embeddings


def finetune(
    *,
    pretrained: str,
    output_dir: str,
    task: TaskConfig,
    data: DataConfig,
    optimizer: OptimizerConfig,
    trainer: TrainerConfig,
    seed: int = 0,
    resume: str | None = None,
    overwrite: bool = False,
    config_yaml: str | None = None,
    extra_callbacks: Sequence[Callback] = (),
) -> SCFormer:
    """Fine-tune a pretrained model for integration, annotation or perturbation prediction.

    See :func:`model_from_pretrained` for how the task model starts from the pretrained
    weights. Writes the run like :func:`pretrain`, plus ``init_report.csv`` (how every tensor
    was initialised) and the task's results: ``embeddings.h5ad`` (integration, the cells with
    ``obsm["X_scFormer"]``) or ``predictions.csv`` (annotation, with the validation accuracy
    in ``run.json``).
    """
    check_data(data, allow_bank=False)
    check_trainer(trainer, data)
    if not Path(pretrained, "model.json").is_file():
        raise ConfigError(
            f"pretrained={pretrained} is not a model directory (no model.json); pass "
            "<output_dir>/model of a pretraining run."
        )
    needs = {"integration": "batch_key", "annotation": "labels_key"}.get(task.name)
    if needs and getattr(data, needs) is None:
        raise ConfigError(f"task {task.name} needs data.{needs}: the obs column to use.")
    if task.name == "perturbation" and not (task.perturbation_key or task.condition_key):
        raise ConfigError(
            "task perturbation needs task.perturbation_key and/or task.condition_key."
        )
    out, ckpt_path = _start(output_dir, resume, overwrite, config_yaml, seed)
    start = time.perf_counter()

    adata = read_h5ads(data)
    setup = {
        "layer": data.layer,
        "batch_key": data.batch_key,
        "labels_key": data.labels_key,
        "gene_key": data.gene_key,
    }
    overrides: dict[str, Any] = {}
    if task.name == "integration":
        overrides["dar_weight"] = task.dar_weight
    elif task.name == "annotation":
        overrides["classification_weight"] = task.classification_weight
    else:
        setup.update(
            perturbation_key=task.perturbation_key,
            condition_key=task.condition_key,
            control_label=task.control_label,
            perturbation_sep=task.perturbation_sep,
        )
    reference = SCFormer.load(pretrained, accelerator="cpu")
    model, report = model_from_pretrained(reference, adata, setup, **overrides)
    model.module.encoder.gradient_checkpointing = trainer.gradient_checkpointing
    kwargs = trainer_kwargs(trainer, out, has_validation(data))
    kwargs["callbacks"] += list(extra_callbacks)
    if task.name == "perturbation":
        kwargs.pop("check_val_every_n_epoch")  # train_perturbation validates when it can
        model.train_perturbation(
            max_epochs=trainer.max_epochs,
            batch_size=data.batch_size,
            lr=optimizer.lr,
            train_size=data.train_size,
            pair_on_labels=task.pair_on_labels,
            distribution_loss=task.distribution_loss,
            distribution_weight=task.distribution_weight,
            de_weight=task.de_weight,
            ckpt_path=ckpt_path,
            **kwargs,
        )
    else:
        _train_anndata(model, data, trainer, task, plan_kwargs(optimizer), ckpt_path, kwargs)
    if not model.trainer.is_global_zero:
        return model
    report_frame(report).to_csv(out / "init_report.csv", index=False)
    info: dict[str, Any] = {"task": task.name, "pretrained": pretrained, "n_cells": adata.n_obs}
    if task.name == "integration":
        cells = ad.AnnData(obs=adata.obs.copy())
        cells.obsm["X_scFormer"] = model.get_latent_representation(adata)
        cells.write_h5ad(out / "embeddings.h5ad")
    elif task.name == "annotation":
        info.update(_write_predictions(model, adata, data.labels_key, out))
    _write_run(model, out, start, resume, **info)
    return model


def _write_predictions(model: SCFormer, adata: ad.AnnData, labels_key: str, out: Path) -> dict:
    predicted = model.predict(adata)
    split = np.full(adata.n_obs, "train", dtype=object)
    validation = model.validation_indices
    if validation is not None and len(validation):
        split[np.asarray(validation)] = "validation"
    frame = adata.obs[[labels_key]].astype(str).assign(prediction=predicted, split=split)
    frame.to_csv(out / "predictions.csv")
    correct = frame[labels_key] == frame["prediction"]
    return {
        f"{name}_accuracy": round(float(correct[frame["split"] == name].mean()), 4)
        for name in ("train", "validation")
        if (frame["split"] == name).any()
    }
