"""The user-facing scFormer model."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS, settings
from scvi.data import AnnDataManager
from scvi.data._utils import _check_if_view
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin
from scvi.utils import setup_anndata_dsp

import scbank
from scformer_scvi.data import (
    GENE_INITS,
    GeneVocab,
    TokenizeCollate,
    TokenizedDataLoader,
    TokenizedDataSplitter,
    Tokenizer,
    expression_gene_embeddings,
    gene_names,
    validate_counts,
)
from scformer_scvi.data._gene_init import GeneInit
from scformer_scvi.data._perturbation import (
    CONDITION_KEY,
    PERTURBATION_KEY,
    parse_perturbations,
    validate_perturbation_column,
)
from scformer_scvi.module import SCFormerModule
from scformer_scvi.train import SCFormerTrainingPlan, with_trainer_defaults

from .base import (
    BankMixin,
    EmbeddingMixin,
    ExpressionMixin,
    NetworkMixin,
    PerturbationMixin,
    SafeSaveLoadMixin,
    ScGPTMixin,
    TransferMixin,
)
from .base._transfer import registry_for_panel

logger = logging.getLogger(__name__)

# Default training length: about this many optimizer steps, within [2, 100] epochs.
_TARGET_STEPS = 3000


class SCFormer(
    BankMixin,
    EmbeddingMixin,
    ExpressionMixin,
    PerturbationMixin,
    TransferMixin,
    NetworkMixin,
    ScGPTMixin,
    SafeSaveLoadMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
    """scFormer: a transformer over gene tokens, pretrained by masked value prediction.

    Every cell is a set of tokens, one per expressed gene (plus, optionally, some genes it does
    not express), each carrying the gene's identity and its expression, plus a ``<cls>`` token.
    Training hides a fraction of the values and predicts them back, from each token's context
    and from the cell embedding.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`. ``None`` only together with ``registry``
        (used when loading).
    registry
        A saved registry (used by :meth:`load`).
    vocab
        Gene vocabulary; ``None`` builds one from the genes of ``adata``.
    d_model
        Width of tokens and of the cell embedding.
    n_heads
        Attention heads.
    n_layers
        Transformer blocks.
    n_bins
        Per-cell quantile value bins, zero bin included.
    max_seq_len
        Tokens per cell, ``<cls>`` included. Longer cells keep a random subset of genes in
        training and their highest-expressed genes at inference.
    n_zero_genes
        Non-expressed genes added to each cell's tokens, so the model also learns zeros.
    gene_init
        Initial gene embeddings. ``"random"``: standard normal. ``"pca"``: each gene's
        coordinates on the principal axes of ``adata``'s log-normalised expression, centred
        within each batch (:func:`~scformer_scvi.data.expression_gene_embeddings`), so that
        co-expressed genes start close and batch differences are not among the axes. A
        model trained from scratch on a few thousand cells then keeps more of the cell
        types, and also more of the batches (Baron, 12 epochs: scib bio conservation
        0.661 -> 0.705, batch correction 0.762 -> 0.607). Genes of the vocabulary that
        ``adata`` lacks keep a random start. Used only when a model is built from data, not
        by :meth:`load` or :meth:`load_query_data`, which bring their weights.
    gene_init_weight
        With ``gene_init="pca"``: the share ``w`` of the expression start, in (0, 1]. Each
        gene starts at ``w`` times its expression coordinates plus ``sqrt(1 - w**2)`` times
        its random start (same expected norm). A partial start keeps more of the cell types
        than the random start and lets fewer batch differences through than the full one
        (integration on Baron: ``docs/design.md``, Embedding width).
    **module_kwargs
        Options of :class:`~scformer_scvi.module.SCFormerModule`: ``value_encoding``
        (``"binned"``, ``"continuous"``, ``"count_classes"``, ``"scaling"``), ``likelihood``
        (``"mse"``, ``"binned"``, ``"zinb"``, ``"hurdle"``), ``head_kwargs``,
        ``cell_embedding`` (``"mean"``, ``"cls"``, ``"weighted"``), ``attention`` (``"sdpa"``,
        ``"linear"``), objective weights (``gep_weight``, ``mvc_weight``, ``cce_weight``,
        ``ecs_weight``, ``classification_weight``), ``batch_token``, ``domain_norm``,
        ``d_ff``, ``dropout``, ``n_latent`` (width of the cell embedding; default
        ``d_model``).

    Notes
    -----
    Cells from a batch that was not seen in training (a new category of ``batch_key``) can be
    embedded with :meth:`get_latent_representation`: with ``batch_token`` / ``domain_norm``
    they use the mean of the learned batch parameters, and a warning names the new batches.
    :meth:`load` with such data fails, because it attaches the model's own data.

    Examples
    --------
    >>> import scformer_scvi
    >>> adata = scformer_scvi.datasets.baron_pancreas()
    >>> scformer_scvi.SCFormer.setup_anndata(adata, batch_key="donor")
    >>> model = scformer_scvi.SCFormer(adata, d_model=64, n_layers=2, max_seq_len=256)
    >>> model.train(max_epochs=5)
    >>> adata.obsm["X_scFormer"] = model.get_latent_representation()
    """

    _module_cls = SCFormerModule
    _training_plan_cls = SCFormerTrainingPlan
    _data_splitter_cls = TokenizedDataSplitter
    _data_loader_cls = TokenizedDataLoader

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        vocab: GeneVocab | None = None,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 4,
        n_bins: int = 51,
        max_seq_len: int = 512,
        n_zero_genes: int = 0,
        gene_init: GeneInit = "random",
        gene_init_weight: float = 1.0,
        **module_kwargs,
    ) -> None:
        if gene_init not in GENE_INITS:
            raise ValueError(f"gene_init must be 'random' or 'pca', got {gene_init!r}.")
        if not 0 < gene_init_weight <= 1:
            raise ValueError(f"gene_init_weight must be in (0, 1], got {gene_init_weight!r}.")
        if gene_init == "random" and gene_init_weight != 1:
            raise ValueError(
                "gene_init_weight sets the share of the expression start: pass gene_init='pca' "
                "with it."
            )
        super().__init__(adata, registry)
        if vocab is None:
            if adata is None:
                raise ValueError("Pass vocab= when creating a model without adata.")
            vocab = GeneVocab.from_anndata(adata, self.registry_["setup_args"]["gene_key"])
            # Perturbed genes need tokens even when the panel does not measure them.
            vocab = vocab.extend(self._registered_perturbed_genes())
        self.vocab_ = vocab
        self.n_bins = n_bins
        self.max_seq_len = max_seq_len
        self.n_zero_genes = n_zero_genes
        self.module = self._module_cls(
            n_tokens=len(vocab),
            pad_id=vocab.pad_id,
            n_batch=self.summary_stats.n_batch,
            n_labels=self.summary_stats.n_labels,
            n_bins=n_bins,
            d_model=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            perturbation=self.registry_["setup_args"].get("perturbation_key") is not None,
            n_conditions=self.summary_stats.get("n_condition", 1),
            **module_kwargs,
        )
        module = self.module
        if gene_init == "pca" and registry is None:  # load() brings its trained weights
            self._init_gene_embeddings(gene_init_weight)
        n_params = sum(p.numel() for p in module.parameters())
        objectives = ", ".join(f"{k} x{w:g}" for k, w in module.weights.items() if w)
        self._model_summary_string = (
            f"SCFormer: {n_layers} layers x {n_heads} heads, d_model={d_model}, "
            f"{n_params / 1e6:.2f}M parameters; vocabulary {vocab.n_genes} genes "
            f"(md5 {vocab.md5[:8]}); {module.embedding.value_encoding} values "
            f"({n_bins} bins), {module.likelihood} head, {module.cell_embedding} cell "
            f"embedding, {module.encoder.layers[0].attn.attention} attention; "
            f"max_seq_len={max_seq_len}, n_zero_genes={n_zero_genes}; objectives: {objectives}; "
            f"n_batch={self.summary_stats.n_batch}, n_labels={self.summary_stats.n_labels}"
        )
        self.init_params_ = self._get_init_params(locals())
        # The vocabulary is saved as its own JSON file, not among the init parameters.
        self.init_params_["non_kwargs"].pop("vocab", None)

    def _init_gene_embeddings(self, share: float) -> None:
        """Set the gene embeddings of the data's genes from its expression (``gene_init``).

        ``share`` (``gene_init_weight``) mixes the expression coordinates ``c`` with the random
        start ``r``: ``share * c + sqrt(1 - share**2) * r``, which keeps the embeddings' expected
        norm.
        """
        manager = self.adata_manager
        batch = np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
        weight = self.module.embedding.gene.weight
        coordinates = expression_gene_embeddings(
            manager.get_from_registry(REGISTRY_KEYS.X_KEY), weight.shape[1], batch
        )
        ids = self.vocab_.lookup(gene_names(self.adata, self.registry_["setup_args"]["gene_key"]))
        known = ids >= 0
        rows = torch.as_tensor(ids[known])
        with torch.no_grad():
            start = torch.as_tensor(coordinates[known]).to(weight)
            weight[rows] = share * start + math.sqrt(1 - share**2) * weight[rows]

    def _registered_perturbed_genes(self) -> list[str]:
        """Genes named in the registered perturbation column (empty without one)."""
        args = self.registry_["setup_args"]
        if args.get("perturbation_key") is None:
            return []
        state = self.registry_["field_registries"][PERTURBATION_KEY]["state_registry"]
        labels = np.asarray(state["categorical_mapping"]).astype(str)
        parsed = parse_perturbations(labels, args["control_label"], args["perturbation_sep"])
        return [gene for genes in parsed.values() for gene in genes]

    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        unlabeled_category: str | None = None,
        gene_key: str | None = None,
        allow_non_integer: bool = False,
        perturbation_key: str | None = None,
        control_label: str = "control",
        perturbation_sep: str = "+",
        condition_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register an AnnData of raw counts for scFormer.

        Validates that the counts are usable (non-empty, finite, non-negative, integer unless
        ``allow_non_integer``, no empty cell) and raises an error naming the problem otherwise.

        Parameters
        ----------
        %(param_adata)s
        layer
            Layer with raw counts; ``None`` uses ``adata.X``.
        %(param_batch_key)s
        %(param_labels_key)s
        unlabeled_category
            The value of ``labels_key`` that marks cells without a label (e.g. ``"Unknown"``),
            as in scANVI: such cells train everything but the classification head, and
            :meth:`predict` never returns it.
        gene_key
            Column of ``adata.var`` with the gene names used as tokens; ``None`` uses
            ``var_names``.
        allow_non_integer
            Accept non-integer counts.
        perturbation_key
            obs column of genetic perturbations: ``control_label`` or the perturbed genes
            joined by ``perturbation_sep`` (``"STAT1"``, ``"JAK2+STAT1"``).
        control_label
            Label of control (unperturbed, unstimulated) cells in ``perturbation_key`` and
            ``condition_key``.
        perturbation_sep
            Separator of combined perturbations.
        condition_key
            obs column of a condition perturbation (e.g. ``"ctrl"`` / ``"stim"``).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        validate_counts(adata, layer, allow_non_integer)
        keys = (
            ("batch_key", batch_key),
            ("labels_key", labels_key),
            ("perturbation_key", perturbation_key),
            ("condition_key", condition_key),
        )
        for name, key in keys:
            if key is not None and key not in adata.obs.columns:
                raise KeyError(
                    f"{name}={key!r} is not a column of adata.obs (columns: "
                    f"{list(adata.obs.columns)}). Pass one of those, or {name}=None."
                )
        if unlabeled_category is not None and labels_key is None:
            raise ValueError(
                f"unlabeled_category={unlabeled_category!r} marks cells without a label in "
                "labels_key, but no labels_key was given: pass labels_key= too."
            )
        gene_names(adata, gene_key)  # raises if gene_key is not a var column
        for key in (perturbation_key, condition_key):
            if key is not None and "source_registry" not in kwargs:
                validate_perturbation_column(adata.obs[key], key, control_label, perturbation_sep)
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=not allow_non_integer),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
            CategoricalObsField(PERTURBATION_KEY, perturbation_key),
            CategoricalObsField(CONDITION_KEY, condition_key),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def train(
        self,
        max_epochs: int | None = None,
        mask_ratio: float = 0.4,
        batch_size: int = 64,
        lr: float = 1e-3,
        length_bucketing: bool = True,
        mvc_zero_fraction: float = 0.0,
        train_size: float | None = None,
        validation_size: float | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        plan_kwargs: dict | None = None,
        datasplitter_kwargs: dict | None = None,
        bank: scbank.DataBank | None = None,
        class_weight: Literal["balanced"] | Mapping[str, float] | None = None,
        batch_statistics: Literal["exact", "running"] = "exact",
        **trainer_kwargs,
    ):
        """Train by masked value prediction (plus classification when labels are registered).

        Parameters
        ----------
        max_epochs
            Passes over the training cells. ``None``: about 3000 optimizer steps, between 2 and
            100 epochs.
        mask_ratio
            Fraction of each cell's gene tokens whose value is hidden and predicted.
        batch_size
            Cells per minibatch.
        lr
            Peak learning rate (linear warm-up, then cosine decay per step).
        length_bucketing
            Group training cells of similar length into minibatches, so that little compute
            goes to padding.
        mvc_zero_fraction
            Share of non-expressed genes among the genes the MVC objective predicts from the
            cell embedding (in ``[0, 1)``).
        train_size, validation_size
            Split of the cells (default 90% / 10%); validation losses go to ``model.history``.
        accelerator, devices
            As in Lightning, e.g. ``accelerator="cpu", devices=2, strategy="ddp"``.
        plan_kwargs
            Passed to :class:`~scformer_scvi.train.SCFormerTrainingPlan` (e.g. ``weight_decay``,
            ``warmup_ratio``).
        datasplitter_kwargs
            Passed to the data splitter (e.g. ``num_workers``); with a bank, ``num_workers``
            and ``seed`` are understood.
        bank
            Train on the cells of this :class:`scbank.DataBank` (a model made with
            :meth:`from_bank`), streamed with bounded memory and split across DDP ranks and
            dataloader workers. Every cell is used for training (no validation split).
        class_weight
            Weights of the cell-type classes in the classification loss (models set up with
            ``labels_key``). ``"balanced"`` weighs each class by ``n_cells / (n_classes *
            n_cells_of_class)``, as scikit-learn's ``class_weight="balanced"``, so that a
            rare cell type counts as much as a common one: it raises macro-F1 when types
            are imbalanced. A mapping gives labels their weights (unnamed labels weigh 1;
            0 leaves a label's cells out of the head's training). ``None``: every cell
            weighs the same. Cells of the ``unlabeled_category`` weigh 0 in every case.
        batch_statistics
            With ``domain_norm``, how each batch's embedding statistics are left after
            training. ``"exact"``: recomputed with the final encoder from all the batch's
            cells (:meth:`update_batch_statistics`, one inference pass over ``adata``).
            ``"running"``: the momentum averages gathered during training, which lag behind
            an encoder that kept changing (lower integration scores; see ``docs/design.md``).
            Training from a bank always keeps the running statistics.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` / Lightning, e.g. ``precision="bf16-mixed"``,
            ``gradient_clip_val=1.0``, ``early_stopping=True``. ``precision="auto"`` takes
            bfloat16 autocast where the hardware computes it natively and float32 elsewhere
            (see :func:`~scformer_scvi.train.resolve_precision`).
        """
        if batch_statistics not in ("exact", "running"):
            raise ValueError(
                f"batch_statistics must be 'exact' or 'running', got {batch_statistics!r}."
            )
        n_obs = bank.n_obs if bank is not None else self.adata.n_obs
        if max_epochs is None:
            steps_per_epoch = max(1, math.ceil(0.9 * n_obs / batch_size))
            max_epochs = int(np.clip(round(_TARGET_STEPS / steps_per_epoch), 2, 100))
        plan_kwargs = {"lr": lr, **(plan_kwargs or {})}
        if bank is not None and class_weight is not None:
            raise ValueError("class_weight= is not supported when training from a bank.")
        weights = None if bank is not None else self._class_weights(class_weight)
        if weights is not None:
            plan_kwargs["class_weight"] = weights
        trainer_kwargs = with_trainer_defaults(trainer_kwargs, accelerator)
        if bank is not None:
            options = datasplitter_kwargs or {}
            datamodule = self._bank_datamodule(
                bank,
                batch_size,
                mask_ratio,
                mvc_zero_fraction,
                num_workers=options.get("num_workers", 0),
                seed=options.get("seed", 0),
            )
            return super().train(
                max_epochs=max_epochs,
                accelerator=accelerator,
                devices=devices,
                plan_kwargs=plan_kwargs,
                datamodule=datamodule,
                **trainer_kwargs,
            )
        collate = TokenizeCollate(self._tokenizer(self.adata), mask_ratio, True, mvc_zero_fraction)
        datasplitter_kwargs = {
            "collate_fn": collate,
            "length_bucketing": length_bucketing,
            **(datasplitter_kwargs or {}),
        }
        if train_size is None or train_size < 1.0 or validation_size:
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)  # losses in model.history
        result = super().train(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            train_size=train_size,
            validation_size=validation_size,
            batch_size=batch_size,
            plan_kwargs=plan_kwargs,
            datasplitter_kwargs=datasplitter_kwargs,
            **trainer_kwargs,
        )
        if batch_statistics == "exact" and self.module.domain_norm:
            self._refit_trained_batch_statistics()
        return result

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True):
        """Register an AnnData the model has not seen: check its counts, accept new batches.

        New cells need no labels, even for a model trained with ``labels_key``.
        """
        adata = self._labels_optional(adata)
        if adata is None or self.get_anndata_manager(adata) is not None:
            return super()._validate_anndata(adata, copy_if_view=copy_if_view)
        _check_if_view(adata, copy_if_view=copy_if_view)
        args = self.registry_["setup_args"]
        validate_counts(adata, args["layer"], args["allow_non_integer"])
        self._warn_unseen_batches(adata)
        # Genes are matched to tokens by name, so the cells may measure another panel.
        registry = registry_for_panel(self.registry_, adata, gene_names(adata, args["gene_key"]))
        type(self).setup_anndata(adata, source_registry=registry, extend_categories=True, **args)
        manager = self._get_most_recent_anndata_manager(adata, required=True)
        self._register_manager_for_instance(manager)
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    def _warn_unseen_batches(self, adata: AnnData) -> None:
        batch_key = self.registry_["setup_args"]["batch_key"]
        if batch_key is None or batch_key not in adata.obs.columns:
            return
        state = self.registry_["field_registries"][REGISTRY_KEYS.BATCH_KEY]["state_registry"]
        new = sorted(
            set(adata.obs[batch_key].astype(str)) - set(map(str, state["categorical_mapping"]))
        )
        if new:
            warnings.warn(
                f"Batches {new} were not seen in training; their cells use the mean of the "
                "learned batch parameters.",
                UserWarning,
                stacklevel=settings.warnings_stacklevel,
            )

    def _tokenizer(self, adata: AnnData) -> Tokenizer:
        """Build the tokenizer for ``adata``'s genes, matched to the vocabulary by name."""
        genes = gene_names(adata, self.registry_["setup_args"]["gene_key"])
        tokenizer = self._gene_tokenizer(genes, "this AnnData")
        if tokenizer.n_known_genes < len(genes):
            known = self.vocab_.lookup(genes) >= 0
            self._warn_cells_without_known_genes(adata, known)
        return tokenizer

    def _gene_tokenizer(self, genes: Sequence[str], source: str) -> Tokenizer:
        """Build the tokenizer for data whose columns are ``genes``."""
        column_ids = self.vocab_.lookup(genes)
        known = column_ids >= 0
        if not known.any():
            raise ValueError(
                f"None of the {len(genes)} genes of {source} (e.g. {list(genes[:3])}) is in the "
                f"model's vocabulary of {self.vocab_.n_genes} genes (e.g. {self.vocab_.genes[:3]})."
                " Use the same gene naming (symbols vs Ensembl ids) as the model, or pass "
                "gene_key= to setup_anndata to use another var column."
            )
        if not known.all():
            warnings.warn(
                f"{int((~known).sum())} of {len(genes)} genes are not in the model's vocabulary "
                "and are ignored.",
                UserWarning,
                stacklevel=settings.warnings_stacklevel,
            )
        return Tokenizer(
            column_ids,
            pad_id=self.vocab_.pad_id,
            cls_id=self.vocab_.cls_id,
            max_seq_len=self.max_seq_len,
            n_bins=self.n_bins,
            n_zero_genes=self.n_zero_genes,
        )

    def _warn_cells_without_known_genes(self, adata: AnnData, known: np.ndarray) -> None:
        layer = self.registry_["setup_args"]["layer"]
        matrix = adata.X if layer is None else adata.layers[layer]
        if adata.isbacked:
            return  # a full pass over a backed matrix is too costly for a warning
        n_tokens = (sp.csr_matrix(matrix)[:, np.flatnonzero(known)] > 0).sum(axis=1)
        n_empty = int((np.asarray(n_tokens).ravel() == 0).sum())
        if n_empty:
            warnings.warn(
                f"{n_empty} cells express none of the vocabulary's genes; they are embedded as "
                "empty cells (only the <cls> token).",
                UserWarning,
                stacklevel=settings.warnings_stacklevel,
            )

    def _tokenized_loader(
        self,
        adata: AnnData,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> TokenizedDataLoader:
        """Deterministic (inference) minibatches of tokenized cells, in the order of ``indices``."""
        collate = TokenizeCollate(self._tokenizer(adata), mask_ratio=0.0, stochastic=False)
        return self._make_data_loader(
            adata=adata, indices=indices, batch_size=batch_size, collate_fn=collate
        )
