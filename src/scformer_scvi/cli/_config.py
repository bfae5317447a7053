"""Configuration sections of the ``scformer`` command line (parsed by jsonargparse).

Each section is a dataclass: its fields are the keys of that section of a YAML config and the
``--section.key`` flags; the docstrings are the ``--help`` text. Unknown keys and values of
the wrong type are rejected by the parser, and :func:`check_data` / :func:`check_trainer`
reject combinations that cannot work, naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.callbacks import Callback


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the key and the fix."""


@dataclass
class DataConfig:
    """Training data: AnnData files or a scBank, and how minibatches are drawn.

    Parameters
    ----------
    h5ad
        One or more ``.h5ad`` files of raw counts. Several files are concatenated (outer join
        of genes, missing genes read as zero) and ``obs["dataset"]`` names each cell's file,
        so ``batch_key: dataset`` treats files as batches. Loaded into memory.
    bank
        A scBank directory, streamed with bounded memory and sharded across processes.
        Give either ``h5ad`` or ``bank``.
    validation_bank
        A second scBank (e.g. held-out studies) for validation losses when training from a
        bank; its categories of ``batch_key``/``labels_key`` must be known to the first.
    layer
        AnnData layer holding the counts (``null``: ``X``).
    batch_key
        obs column of batches (donors, studies); used by batch tokens, domain norm and DAR.
    labels_key
        obs column of cell types, for the classification objective.
    gene_key
        var column of gene names (``null``: ``var_names``).
    n_top_genes
        AnnData only: keep this many highly variable genes (seurat_v3 on the counts).
    train_size
        AnnData only: share of cells used for training; the rest give validation losses.
    batch_size
        Cells per minibatch (per process).
    num_workers
        Dataloader worker processes.
    length_bucketing
        AnnData only: group cells of similar length into minibatches (less padding). Turned
        off, with a warning, under DDP, whose sampler shards minibatches itself.
    """

    h5ad: list[str] = field(default_factory=list)
    bank: str | None = None
    validation_bank: str | None = None
    layer: str | None = None
    batch_key: str | None = None
    labels_key: str | None = None
    gene_key: str | None = None
    n_top_genes: int | None = None
    train_size: float = 0.9
    batch_size: int = 64
    num_workers: int = 0
    length_bucketing: bool = True


@dataclass
class ModelConfig:
    """Architecture of a new model (see :class:`scformer_scvi.SCFormer`).

    Parameters
    ----------
    d_model
        Token and cell-embedding width.
    n_heads
        Attention heads.
    n_layers
        Transformer blocks.
    d_ff
        Feed-forward width (``null``: ``4 * d_model``).
    dropout
        Dropout on residual branches and embeddings.
    n_latent
        Width of the cell embedding (``null``: ``d_model``; smaller adds a bottleneck).
    n_bins
        Value bins per cell (zero bin included).
    max_seq_len
        Tokens per cell, ``<cls>`` included; longer cells keep a subset of their genes.
    n_zero_genes
        Non-expressed genes added to each cell's tokens.
    gene_init
        ``random`` or ``pca`` (gene embeddings start on the principal axes of the data's
        expression; h5ad input only).
    gene_init_weight
        With ``gene_init: pca``, the share of the expression start in (0, 1]; the rest is
        the random start.
    value_encoding
        How expression enters a token.
    likelihood
        Masked-value head.
    head_kwargs
        Options of the head, e.g. ``{positive: lognormal}`` for ``hurdle``.
    cell_embedding
        Pooling of token states into the cell embedding.
    attention
        ``sdpa`` (exact; fused kernels on GPU) or ``linear`` (Hydra attention, linear in
        length).
    batch_token
        Add a learned token for the cell's batch.
    domain_norm
        Standardise the cell embedding with its own batch's statistics.
    """

    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    d_ff: int | None = None
    dropout: float = 0.1
    n_latent: int | None = None
    n_bins: int = 51
    max_seq_len: int = 512
    n_zero_genes: int = 0
    gene_init: Literal["random", "pca"] = "random"
    gene_init_weight: float = 1.0
    value_encoding: Literal["binned", "continuous", "count_classes", "scaling"] = "binned"
    likelihood: Literal["mse", "binned", "zinb", "hurdle"] = "mse"
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    cell_embedding: Literal["mean", "cls", "weighted"] = "mean"
    attention: Literal["sdpa", "linear"] = "sdpa"
    batch_token: bool = False
    domain_norm: bool = False


@dataclass
class ObjectivesConfig:
    """Pretraining objectives and their weights (0 turns one off).

    Parameters
    ----------
    mask_ratio
        Share of each cell's gene tokens whose value is hidden and predicted.
    mvc_zero_fraction
        Share of non-expressed genes among the genes MVC predicts from the cell embedding.
    gep_weight
        Masked value prediction from token states.
    mvc_weight
        Masked value prediction from the cell embedding (MVC / GEPC).
    cce_weight
        Contrastive loss between two dropout views.
    ecs_weight
        Elastic cell similarity.
    classification_weight
        Cell-type classification (needs ``data.labels_key``).
    dar_weight
        Adversarial batch removal (needs ``data.batch_key`` with two or more batches).
    dar_warmup_ratio
        Share of the steps over which the DAR gradient reversal ramps up.
    ecs_threshold
        ECS similarity threshold.
    cce_temperature
        CCE softmax temperature.
    """

    mask_ratio: float = 0.4
    mvc_zero_fraction: float = 0.0
    gep_weight: float = 1.0
    mvc_weight: float = 1.0
    cce_weight: float = 0.0
    ecs_weight: float = 0.0
    classification_weight: float = 1.0
    dar_weight: float = 0.0
    dar_warmup_ratio: float = 0.1
    ecs_threshold: float = 0.6
    cce_temperature: float = 0.5


@dataclass
class OptimizerConfig:
    """AdamW with linear warm-up and cosine decay, stepped per optimizer step.

    Parameters
    ----------
    lr
        Peak learning rate.
    weight_decay
        AdamW weight decay on weight matrices (not biases and norms).
    betas
        AdamW betas.
    warmup_ratio
        Share of all optimizer steps spent warming up.
    min_lr_ratio
        Final learning rate as a share of ``lr``.
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.01


@dataclass
class TrainerConfig:
    """Lightning trainer: devices, precision, checkpoints, validation and logging.

    Parameters
    ----------
    max_epochs
        Passes over the training cells (sets the length of the learning-rate schedule).
    accelerator
        ``cpu``, ``gpu``, ``auto``, ...
    devices
        Devices per node: a number, a list of ids, or ``auto``.
    num_nodes
        Machines (each runs ``devices`` processes; see the docs for SLURM and torchrun).
    strategy
        ``auto``, ``ddp`` (data parallel), ``fsdp`` (sharded weights and optimizer state,
        for models that do not fit one device; scBank data only), or any Lightning strategy.
    precision
        ``32``, ``bf16-mixed``, ``16-mixed`` (GPU), ..., or ``auto``: ``bf16-mixed`` where the
        hardware computes bfloat16 natively (GPUs, CPUs with AVX512-BF16 or AMX), else ``32``.
    accumulate_grad_batches
        Minibatches per optimizer step.
    gradient_clip_val
        Gradient clipping threshold (``null``: no clipping).
    gradient_clip_algorithm
        Clip the global ``norm`` or each ``value``.
    gradient_checkpointing
        Recompute transformer activations in the backward pass (less memory for long
        inputs, about a third more compute). Not saved with the model.
    checkpoint_every_n_steps
        Also write ``checkpoints/step-*.ckpt`` every N optimizer steps (``null``: never).
    keep_step_checkpoints
        How many of the newest step checkpoints to keep (``-1``: all).
    checkpoint_every_n_epochs
        Write ``checkpoints/last.ckpt`` at the end of every N-th epoch; ``--resume last``
        continues from it exactly.
    check_val_every_n_epoch
        Validation losses every N epochs (when there are validation cells).
    early_stopping
        Stop when ``early_stopping_monitor`` stops improving.
    early_stopping_monitor
        A logged metric, e.g. ``validation_loss`` or ``gep_loss_validation``.
    early_stopping_patience
        Validation rounds without improvement before stopping.
    early_stopping_min_delta
        Smallest change that counts as an improvement.
    loggers
        Metric loggers writing under ``<output_dir>/logs``; ``model.history`` is filled in
        any case.
    log_every_n_steps
        Logging interval of step-level metrics.
    enable_progress_bar
        Show a progress bar.
    limit_train_batches
        Use only this many (int) or this share (float) of the training minibatches per epoch.
    callbacks
        Extra Lightning callbacks, as ``{class_path: ..., init_args: {...}}``.
    """

    max_epochs: int = 10
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: int | str = "32"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    gradient_checkpointing: bool = False
    checkpoint_every_n_steps: int | None = None
    keep_step_checkpoints: int = -1
    checkpoint_every_n_epochs: int = 1
    check_val_every_n_epoch: int = 1
    early_stopping: bool = False
    early_stopping_monitor: str = "validation_loss"
    early_stopping_patience: int = 5
    early_stopping_min_delta: float = 0.0
    loggers: list[Literal["csv", "tensorboard"]] = field(default_factory=lambda: ["csv"])
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True
    limit_train_batches: int | float | None = None
    callbacks: list[Callback] = field(default_factory=list)


@dataclass
class TaskConfig:
    """Fine-tuning task and its options.

    Parameters
    ----------
    name
        ``integration`` (masked value prediction plus adversarial batch removal on
        ``data.batch_key``), ``annotation`` (a cell-type head on ``data.labels_key``) or
        ``perturbation`` (predict perturbed cells from control cells).
    dar_weight
        integration: weight of adversarial batch removal.
    classification_weight
        annotation: weight of the classification loss.
    mask_ratio
        integration, annotation: share of gene tokens whose value is hidden and predicted
        (masked value prediction continues alongside the task's objective).
    mvc_zero_fraction
        integration, annotation: share of non-expressed genes among MVC's predicted genes.
    perturbation_key
        perturbation: obs column of genetic perturbations (``STAT1``, ``JAK2+STAT1``).
    condition_key
        perturbation: obs column of a condition perturbation (e.g. ``ctrl`` / ``stim``).
    control_label
        perturbation: label of control cells in those columns.
    perturbation_sep
        perturbation: separator of combined perturbations.
    distribution_loss
        perturbation: ``energy`` or ``mmd`` distribution matching per perturbation.
    distribution_weight
        perturbation: weight of that term.
    de_weight
        perturbation: extra weight on each perturbation's top differentially expressed genes.
    pair_on_labels
        perturbation: pair perturbed and control cells within cell types too.
    """

    name: Literal["integration", "annotation", "perturbation"] = "integration"
    dar_weight: float = 1.0
    classification_weight: float = 1.0
    mask_ratio: float = 0.4
    mvc_zero_fraction: float = 0.0
    perturbation_key: str | None = None
    condition_key: str | None = None
    control_label: str = "control"
    perturbation_sep: str = "+"
    distribution_loss: Literal["energy", "mmd"] | None = None
    distribution_weight: float = 0.1
    de_weight: float = 0.0
    pair_on_labels: bool = True


def check_data(data: DataConfig, allow_bank: bool = True) -> None:
    """Reject data sections that cannot be read, naming the fix."""
    if bool(data.h5ad) == bool(data.bank):
        raise ConfigError(
            "Give exactly one data source: data.h5ad (a list of .h5ad files) or data.bank "
            f"(a scBank directory); got h5ad={data.h5ad!r}, bank={data.bank!r}."
        )
    if data.bank and not allow_bank:
        raise ConfigError("This command reads AnnData only: give data.h5ad instead of data.bank.")
    for path in data.h5ad:
        if not Path(path).is_file():
            raise ConfigError(f"data.h5ad: {path} does not exist. Fix the path in the config.")
        if not str(path).endswith(".h5ad"):
            raise ConfigError(f"data.h5ad: {path} is not an .h5ad file.")
    for key in ("bank", "validation_bank"):
        path = getattr(data, key)
        if path is not None and not (Path(path) / "manifest.json").is_file():
            raise ConfigError(
                f"data.{key}: {path} is not a scBank (no manifest.json). Create one with "
                "`scbank create` / `scbank append`, or fix the path."
            )
    if data.validation_bank and not data.bank:
        raise ConfigError("data.validation_bank needs data.bank; with h5ad use data.train_size.")
    if not 0.0 < data.train_size <= 1.0:
        raise ConfigError(f"data.train_size must be in (0, 1], got {data.train_size}.")
    if data.batch_size < 1:
        raise ConfigError(f"data.batch_size must be positive, got {data.batch_size}.")


def check_trainer(trainer: TrainerConfig, data: DataConfig) -> None:
    """Reject trainer sections that cannot run with this data, naming the fix."""
    if trainer.max_epochs < 1:
        raise ConfigError(f"trainer.max_epochs must be positive, got {trainer.max_epochs}.")
    if "fsdp" in trainer.strategy and not data.bank:
        raise ConfigError(
            "trainer.strategy=fsdp needs data.bank: AnnData minibatches are sharded across "
            "processes only under DDP. Use strategy: ddp, or write the data to a scBank."
        )
    if trainer.early_stopping and "validation" in trainer.early_stopping_monitor:
        if not has_validation(data):
            raise ConfigError(
                f"trainer.early_stopping monitors {trainer.early_stopping_monitor!r} but there "
                "are no validation cells: set data.train_size < 1 (AnnData) or "
                "data.validation_bank (scBank), or monitor a training metric."
            )


def has_validation(data: DataConfig) -> bool:
    """Whether the data section holds out cells for validation."""
    return bool(data.validation_bank) if data.bank else data.train_size < 1.0
