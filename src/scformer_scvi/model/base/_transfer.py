"""Transfer learning: vocabulary expansion, scArches-style query mapping, cell-type prediction."""

from __future__ import annotations

import copy
import json
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.model._utils import parse_device_args
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from scformer_scvi.data import GeneVocab, gene_names
from scformer_scvi.tools import knn_label_transfer

from ._save_load import _paths, from_json

logger = logging.getLogger(__name__)

Freeze = bool | Literal["embeddings_only"]
# How new gene tokens start (see TransferMixin.expand_vocab), and what that gives each gene.
InitFrom = pd.DataFrame | str | Path | Sequence[pd.DataFrame | str | Path] | None
TokenSource = tuple[str, np.ndarray] | str | None
# Kinds of tensors indexed along dim 0 by a category that can grow: vocabulary ids, batches,
# or cell labels (only the output layer of a head is indexed by its classes).
TOKEN, BATCH, BATCH_OUTPUT, LABEL_OUTPUT = "token", "batch", "batch_output", "label_output"


# ---------------------------------------------------------------------------------- row tensors
def row_tensors(module: nn.Module) -> dict[str, str]:
    """State-dict names of the module's tensors indexed by token id, batch or label -> kind.

    Every one of them must grow when the vocabulary, the batches or the labels grow.
    """
    kinds = {"embedding.gene.weight": TOKEN}
    kinds.update(
        {name: TOKEN for name, _ in module.named_parameters() if name.endswith("log_theta")}
    )
    if getattr(module, "batch_embedding", None) is not None:
        kinds["batch_embedding.weight"] = BATCH
    if getattr(module, "domain_norm", False):
        kinds.update({"cell_norm.running_mean": BATCH, "cell_norm.running_var": BATCH})
    for attr, kind in (("discriminator", BATCH_OUTPUT), ("classifier", LABEL_OUTPUT)):
        head = getattr(module, attr, None)
        if head is not None:
            last = max(i for i, layer in enumerate(head) if isinstance(layer, nn.Linear))
            kinds.update({f"{attr}.{last}.weight": kind, f"{attr}.{last}.bias": kind})
    return kinds


def _replace_parameter(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Swap the parameter ``name`` for a new one holding ``value`` (a different shape)."""
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    old = getattr(owner, leaf)
    setattr(owner, leaf, nn.Parameter(value.to(old.device, old.dtype), old.requires_grad))
    if isinstance(owner, nn.Embedding):
        owner.num_embeddings = value.shape[0]


# ---------------------------------------------------------------------------------- row freezing
_FROZEN_ATTR = "_scformer_frozen_rows"
_STEP_HOOK = None


def freeze_rows(module: nn.Module, rows: dict[str, int]) -> None:
    """Keep the first ``rows[name]`` rows of each named parameter bitwise unchanged in training.

    A gradient hook zeroes those rows' gradients (so Adam's moments for them stay zero and
    they do not count in gradient clipping), and after every optimizer step the rows are
    copied back from a snapshot, because AdamW's decoupled weight decay shrinks every entry of
    a parameter, gradient or not. The restore runs from a global optimizer step hook, so it
    works with any training plan; it only touches parameters frozen here. Freezing is a
    property of the model in memory and is not saved.
    """
    global _STEP_HOOK
    for name, n_rows in rows.items():
        param = module.get_parameter(name)
        param.requires_grad_(True)
        setattr(param, _FROZEN_ATTR, (n_rows, param.detach()[:n_rows].clone()))
        param.register_hook(
            lambda grad, n=n_rows: torch.cat([torch.zeros_like(grad[:n]), grad[n:]])
        )
    if rows and _STEP_HOOK is None:
        _STEP_HOOK = register_optimizer_step_post_hook(_restore_frozen_rows)


@torch.no_grad()
def _restore_frozen_rows(optimizer: torch.optim.Optimizer, *args, **kwargs) -> None:
    for group in optimizer.param_groups:
        for param in group["params"]:
            frozen = getattr(param, _FROZEN_ATTR, None)
            if frozen is not None:
                n_rows, snapshot = frozen
                param[:n_rows].copy_(snapshot)


# ---------------------------------------------------------------------------------- orthologs
def read_ortholog_table(table: pd.DataFrame | str | Path) -> pd.DataFrame:
    """An ortholog table as a DataFrame (a path is read as CSV or TSV)."""
    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    if not path.is_file():
        raise FileNotFoundError(f"Ortholog table {path} not found.")
    if path.suffix.lower() not in (".csv", ".tsv", ".txt", ".gz"):
        raise ValueError(f"Read ortholog tables from .csv or .tsv files, got {path.name!r}.")
    return pd.read_csv(path, sep=None, engine="python", dtype=str)


def ortholog_sources(
    table: pd.DataFrame,
    vocab: GeneVocab,
    new_genes: Sequence[str],
    source_column: str | None = None,
    target_column: str | None = None,
) -> dict[str, np.ndarray]:
    """For each new gene with an ortholog in the vocabulary, the token ids of its orthologs.

    Without explicit columns, the source column is the one sharing the most names with the
    vocabulary and the target column the one sharing the most with ``new_genes``.
    """
    columns = [str(c) for c in table.columns]
    for name, column in (("source_column", source_column), ("target_column", target_column)):
        if column is not None and column not in columns:
            raise KeyError(
                f"{name}={column!r} is not a column of the ortholog table (columns: {columns})."
            )
    text = {
        c: table[c].astype(str)
        for c in table.columns
        if pd.api.types.is_object_dtype(table[c]) or pd.api.types.is_string_dtype(table[c])
    }
    new_set = set(new_genes)

    def best(score, exclude=None) -> tuple[str | None, int]:
        scores = {c: score(values) for c, values in text.items() if c != exclude}
        column = max(scores, key=scores.get, default=None)
        return column, scores.get(column, 0)

    if source_column is None:
        source_column, hits = best(lambda v: int((vocab.lookup(v.unique()) >= 0).sum()))
        if not hits:
            raise ValueError(
                f"No column of the ortholog table (columns: {columns}) names genes of the "
                f"model's vocabulary (e.g. {vocab.genes[:3]}). The table needs a column of "
                "reference-species genes named as in the vocabulary and one of new-species "
                "genes; pass source_column= and target_column=."
            )
    if target_column is None:
        target_column, hits = best(lambda v: int(v.isin(new_set).sum()), exclude=source_column)
        if not hits:
            raise ValueError(
                f"No column of the ortholog table (columns: {columns}) other than "
                f"{source_column!r} names any of the new genes (e.g. {list(new_genes)[:3]}); "
                "pass target_column=."
            )
    pairs = pd.DataFrame(
        {"target": table[target_column].astype(str), "id": vocab.lookup(table[source_column])}
    )
    pairs = pairs[(pairs["id"] >= 0) & pairs["target"].isin(new_set)]
    return {gene: group.to_numpy() for gene, group in pairs.groupby("target")["id"]}


# ---------------------------------------------------------------------------------- helpers
def with_placeholder_labels(adata: AnnData, labels_key: str, label: str) -> AnnData:
    """A light copy of ``adata`` (data shared, ``obs`` copied) whose ``labels_key`` is ``label``.

    Lets a model set up with ``labels_key`` read cells without labels; the placeholder never
    trains anything (see :meth:`TransferMixin.load_query_data`).
    """
    obs = adata.obs.copy()
    obs[labels_key] = pd.Categorical([label] * adata.n_obs)
    return AnnData(X=adata.X, obs=obs, var=adata.var.copy(), layers=dict(adata.layers.items()))


def registry_for_panel(registry: dict, adata: AnnData, genes: Sequence[str]) -> dict:
    """A copy of a model's ``registry`` whose count layer describes ``adata``'s own genes.

    scvi's LayerField transfer insists on the registered number of genes; scFormer matches
    genes to tokens by name instead, so cells measuring any panel can be set up from it.
    """
    registry = copy.deepcopy(registry)
    layer = registry["field_registries"][REGISTRY_KEYS.X_KEY]
    layer["state_registry"].update(
        n_obs=adata.n_obs, n_vars=adata.n_vars, column_names=np.asarray(genes, dtype=object)
    )
    layer["summary_stats"].update(n_vars=adata.n_vars, n_cells=adata.n_obs)
    return registry


def init_kwargs(init_params: dict) -> dict:
    """Constructor arguments recorded in a model's ``init_params_``."""
    kwargs = {k: v for group in init_params["kwargs"].values() for k, v in group.items()}
    return {**init_params["non_kwargs"], **kwargs}


class TransferMixin:
    """Vocabulary expansion, query mapping (scArches style) and cell-type prediction."""

    # ------------------------------------------------------------------------- vocabulary
    def expand_vocab(
        self,
        new_genes: Sequence[str],
        init_from: InitFrom = None,
        freeze_old: bool = False,
        source_column: str | None = None,
        target_column: str | None = None,
    ) -> pd.DataFrame:
        """Add gene tokens to the vocabulary and to every per-token parameter.

        The gene embedding table and, with ``likelihood="zinb"``, the per-gene dispersions
        grow; old token ids and their values are kept.

        Parameters
        ----------
        new_genes
            Genes to add; those already in the vocabulary (by its matching rule) are skipped.
        init_from
            How new tokens start. ``None`` or ``"mean"``: the mean of the existing gene
            embeddings (and dispersions). ``"random"``: random, with the spread of the
            existing embeddings. An ortholog table (DataFrame or CSV/TSV path, e.g.
            ``gene_matches_1v1_human2mouse.csv``): a new gene starts as the mean of its
            orthologs in the vocabulary. ``"symbol"``: a new gene starts as the vocabulary
            gene with its symbol ignoring case, if exactly one has it (mouse ``Ppy`` from
            human ``PPY``): a heuristic, since a shared symbol is not a curated ortholog. A
            list of tables and ``"symbol"`` tries them in order, each gene taking the first
            match: ``[table, "symbol"]`` adds the genes a one-to-one table leaves out
            (``Ppy`` and ``Hhex`` are not in ``gene_matches_1v1_human2mouse.csv``). Genes
            that no rule matches start at the mean, with a warning (such tokens mean nothing
            until trained).
        freeze_old
            Keep the existing rows bitwise unchanged in training (gradient hook plus a
            restore after each optimizer step, which undoes AdamW weight decay); new rows
            train. Not saved with the model, and a later ``expand_vocab`` call replaces the
            token tensors, so pass ``freeze_old=True`` again there.
        source_column, target_column
            Columns of the ortholog table holding vocabulary genes and new genes; ``None``
            picks the columns that share the most names with each.

        Returns
        -------
        One row per added gene (index ``gene``): its ``token_id`` and ``init`` (``"mean"``,
        ``"random"``, ``"ortholog:<genes>"`` or ``"symbol:<gene>"``).
        """
        vocab: GeneVocab = self.vocab_
        names = list(dict.fromkeys(str(g) for g in new_genes))
        new = [g for g, i in zip(names, vocab.lookup(names), strict=True) if i < 0]
        n_old = len(vocab)
        sources = self._token_sources(new, init_from, source_column, target_column)
        token_tensors = [n for n, kind in row_tensors(self.module).items() if kind == TOKEN]
        for name in token_tensors:
            old = self.module.get_parameter(name).detach()
            rows = _new_rows(old, sources, len(vocab.special_tokens))
            _replace_parameter(self.module, name, torch.cat([old, rows]))
        self.vocab_ = vocab.extend(new)
        if freeze_old:
            freeze_rows(self.module, dict.fromkeys(token_tensors, n_old))
        self._model_summary_string = re.sub(
            r"vocabulary \d+ genes \(md5 [0-9a-f]{8}\)",
            f"vocabulary {self.vocab_.n_genes} genes (md5 {self.vocab_.md5[:8]})",
            self._model_summary_string,
        )
        init = [_describe_init(source, vocab) for source in sources]
        logger.info("Added %d gene tokens; initialisation: %s", len(new), init)
        return pd.DataFrame(
            {"token_id": np.arange(n_old, n_old + len(new)), "init": init},
            index=pd.Index(new, name="gene"),
        )

    def _token_sources(
        self,
        genes: list[str],
        init_from: InitFrom,
        source_column: str | None,
        target_column: str | None,
    ) -> list[TokenSource]:
        """Per new gene: ``(rule, vocabulary ids to average)``, ``None`` (mean) or ``"random"``."""
        if init_from is None or (isinstance(init_from, str) and init_from == "mean"):
            return [None] * len(genes)
        if isinstance(init_from, str) and init_from == "random":
            return ["random"] * len(genes)
        rules = list(init_from) if isinstance(init_from, list | tuple) else [init_from]
        for rule in rules:
            if isinstance(rule, str) and rule in ("mean", "random"):
                raise ValueError(
                    f"init_from={rule!r} initialises every gene: pass it alone, not in a list "
                    "(genes no rule in the list knows start at the mean)."
                )
        tables = [
            None if isinstance(r, str) and r == "symbol" else read_ortholog_table(r) for r in rules
        ]
        if not genes:
            return []
        found: dict[str, tuple[str, np.ndarray]] = {}
        for table in tables:
            if table is None:  # the "symbol" rule: the vocabulary's case-insensitive lookup
                ids = self.vocab_.lookup(genes, case_sensitive=False)
                kind = "symbol"
                matches = {g: np.array([i]) for g, i in zip(genes, ids, strict=True) if i >= 0}
            else:
                kind = "ortholog"
                matches = ortholog_sources(table, self.vocab_, genes, source_column, target_column)
            for gene, ids in matches.items():
                found.setdefault(gene, (kind, ids))
        unmatched = [g for g in genes if g not in found]
        if unmatched:
            # Measured on Baron mouse mapped onto a human model: 1256 such genes next to 1408
            # ortholog-initialised ones took zero-shot accuracy from 0.79 to 0.37.
            warnings.warn(
                f"{len(unmatched)} of {len(genes)} new genes have no ortholog in the vocabulary "
                f"(e.g. {unmatched[:3]}) and start at the mean gene embedding. Until trained "
                "they carry no gene identity, yet they take context slots in every cell that "
                "expresses them. For zero-shot mapping, leave them out of the query "
                "(adata[:, genes_with_orthologs]).",
                UserWarning,
                stacklevel=3,
            )
        return [found.get(g) for g in genes]

    # ------------------------------------------------------------------------- query mapping
    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: TransferMixin | str | Path,
        freeze: Freeze = True,
        expand_vocab: bool = True,
        init_from: InitFrom = None,
        source_column: str | None = None,
        target_column: str | None = None,
        labels_key: str | None = None,
        unlabeled_category: str | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
    ):
        """A model for query data, built from a reference model (scArches-style surgery).

        The query is set up with the reference's ``setup_anndata`` arguments; new categories of
        the batch and label columns are appended after the reference's, so reference rows keep
        their meaning. Unlike :meth:`scvi.model.base.ArchesMixin.load_query_data`, the query
        may measure other genes (any number, any order): genes the reference does not know
        become new tokens (``expand_vocab=True``), e.g. the genes of another species,
        initialised from an ortholog table. Parameters sized by the number of batches or
        labels gain rows for new ones: batch embeddings and domain-norm parameters start at
        the mean of the reference rows (what the reference uses for unseen batches), the rows
        of the discriminator and classifier outputs start fresh.

        What trains afterwards (``query.train(...)``, masked value prediction on the query,
        plus classification if the query has labels):

        - ``freeze=True``: only what is new: new gene tokens (embedding rows and ZINB
          dispersions), rows of new batches (batch token, domain norm, discriminator output)
          and rows of new labels in the classifier output. Reference rows are kept bitwise
          unchanged (see :meth:`expand_vocab`). If nothing is new, this raises.
        - ``freeze="embeddings_only"``: the whole input embedding (every gene token, value
          embeddings and their layer norm), all batch parameters, and new label rows; the
          transformer and heads stay fixed.
        - ``freeze=False``: everything.

        A new cell-type head (``labels_key=``) always trains in full.

        With ``freeze=True`` or ``"embeddings_only"`` the cell-embedding standardisation keeps
        the reference's statistics, so query and reference embeddings share one space and can
        be compared (e.g. with :func:`scformer_scvi.tools.knn_label_transfer`).

        The query model starts from trained weights: it can embed and predict before any
        fine-tuning (its ``pretrained_`` attribute is ``True``). A query without the
        reference's label column gets placeholder labels and its classification objective is
        off (the reference classifier still predicts).

        Parameters
        ----------
        adata
            Query cells, raw counts, with the reference's batch column if it had one.
        reference_model
            A trained model or the directory of a saved one.
        freeze
            ``True``, ``"embeddings_only"`` or ``False`` (see above).
        expand_vocab
            Add the query's unknown genes to the vocabulary; ``False`` ignores them.
        init_from, source_column, target_column
            Initialisation of new gene tokens, as in :meth:`expand_vocab`.
        labels_key
            Train a new cell-type head on this ``obs`` column instead of using the reference's
            labels, e.g. to fine-tune a model pretrained without labels for annotation
            (with ``freeze=False``); the reference's classifier, if any, is left out.
        unlabeled_category
            With ``labels_key``: its value for cells without a label (see
            :meth:`setup_anndata`), e.g. to fine-tune on labelled and unlabelled cells together.
        accelerator, device
            Where to put the model.

        Returns
        -------
        The query model, set up on ``adata`` (on a light copy with placeholder labels when
        ``adata`` lacks the label column: use ``query.adata``).
        """
        if freeze not in (True, False, "embeddings_only"):
            raise ValueError(f"freeze must be True, False or 'embeddings_only', got {freeze!r}.")
        reference = (
            reference_model if isinstance(reference_model, cls) else cls.load(reference_model)
        )
        registry = copy.deepcopy(reference.registry_)
        args = registry["setup_args"]
        fresh = ()  # state-dict prefixes of heads that start afresh in the query
        if unlabeled_category is not None and labels_key is None:
            raise ValueError("unlabeled_category= goes with labels_key= (the new labels).")
        if labels_key is not None:
            if labels_key not in adata.obs:
                raise KeyError(f"labels_key={labels_key!r} is not a column of adata.obs.")
            args["labels_key"] = labels_key
            args["unlabeled_category"] = unlabeled_category
            del registry["field_registries"][REGISTRY_KEYS.LABELS_KEY]  # register afresh
            fresh = ("classifier.",)
        labels = reference._label_categories()
        unlabeled = args["labels_key"] is not None and args["labels_key"] not in adata.obs
        if unlabeled:
            adata = with_placeholder_labels(adata, args["labels_key"], labels[0])
        genes = gene_names(adata, args["gene_key"])
        registry = registry_for_panel(registry, adata, genes)
        cls.setup_anndata(adata, source_registry=registry, extend_categories=True, **args)

        # The reference's weights replace any initialisation from the query's data.
        kwargs = {
            **init_kwargs(reference.init_params_),
            "gene_init": "random",
            "gene_init_weight": 1.0,
        }
        query = cls(adata, vocab=reference.vocab_, **kwargs)
        old_rows = {
            TOKEN: len(reference.vocab_),
            BATCH: reference.summary_stats.n_batch,
            BATCH_OUTPUT: reference.summary_stats.n_batch,
            LABEL_OUTPUT: reference.summary_stats.n_labels,
        }
        if labels_key is not None and query.module.classifier is None:
            raise ValueError(
                "The query has no classification head: the reference was built with "
                "classification_weight=0, or the labels have a single category."
            )
        _load_reference_weights(query.module, reference.module.state_dict(), old_rows, fresh)
        unknown = [g for g, i in zip(genes, reference.vocab_.lookup(genes), strict=True) if i < 0]
        if expand_vocab and unknown:
            query.expand_vocab(unknown, init_from, False, source_column, target_column)
        _apply_freeze(query.module, freeze, old_rows, fresh)
        if unlabeled:
            query.query_unlabeled_ = True
        query._apply_query_state()
        query.pretrained_ = True
        _, _, torch_device = parse_device_args(
            accelerator=accelerator, devices=device, return_device="torch"
        )
        query.to_device(torch_device)
        return query

    def _check_if_trained(self, warn: bool = True, **kwargs) -> None:
        """A model built from trained weights (``pretrained_``) embeds before its own training."""
        if not getattr(self, "pretrained_", False):
            super()._check_if_trained(warn=warn, **kwargs)

    def _apply_query_state(self) -> None:
        """Settings of a query model that live outside its weights."""
        if getattr(self, "query_unlabeled_", False):
            self.module.weights["classification"] = 0.0  # placeholder labels must not train

    @classmethod
    def load(cls, dir_path: str | Path, adata: AnnData | None = None, **kwargs):
        """Load a saved model (see :meth:`SafeSaveLoadMixin.load`); also restores query settings.

        ``adata`` may lack the label column of a model set up with ``labels_key``.
        """
        if adata is not None:
            adata = _labels_optional_for_dir(dir_path, adata, kwargs.get("prefix"))
        model = super().load(dir_path, adata, **kwargs)
        model._apply_query_state()
        return model

    # ------------------------------------------------------------------------- annotation
    @torch.inference_mode()
    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
        method: Literal["head", "head+knn"] = "head",
        k: int = 15,
        knn_reference: TransferMixin | None = None,
    ) -> np.ndarray | pd.DataFrame:
        """Cell types from the classification head.

        Parameters
        ----------
        adata
            Cells (labels not needed); ``None`` uses the model's AnnData.
        indices
            Rows of ``adata``; ``None`` for all.
        soft
            Return class probabilities instead of labels.
        batch_size
            Cells per forward pass.
        method
            ``"head"``: the classification head's probabilities. ``"head+knn"``: their
            average with the vote shares of each cell's ``k`` nearest labelled cells of the
            model's AnnData in the embedding (:func:`~scformer_scvi.tools.knn_label_transfer`).
            The two make different mistakes on rare cell types (the head's are those of a
            decision boundary fitted to few cells, the vote's those of a neighbourhood): on
            Baron's held-out donors (``benchmarks/transfer.py``, 3 seeds) the average scored
            macro-F1 0.878, the head 0.849 and the vote 0.855.
        k
            Neighbours per vote with ``method="head+knn"``.
        knn_reference
            The model whose labelled cells vote with ``method="head+knn"``: this model
            (``None``), or, for a query mapped with ``load_query_data(freeze=True)`` (which
            embeds into its reference's space), the labelled reference model.

        Returns
        -------
        An array of label names, or with ``soft=True`` a DataFrame of probabilities (rows:
        cells, columns: the registered label categories but the ``unlabeled_category``; rows
        sum to 1).
        """
        classifier = self.module.classifier
        if classifier is None:
            raise ValueError(
                "This model has no classification head: set it up with labels_key= (and "
                "classification_weight > 0), or transfer labels from the embedding with "
                "scformer_scvi.tools.knn_label_transfer."
            )
        if method not in ("head", "head+knn"):
            raise ValueError(f"method must be 'head' or 'head+knn', got {method!r}.")
        if knn_reference is not None and method != "head+knn":
            raise ValueError("knn_reference= goes with method='head+knn'.")
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        self.module.eval()
        probabilities, embeddings = [], []
        for tensors in self._tokenized_loader(adata, indices=indices, batch_size=batch_size):
            z = self.module.inference(**self.module._get_inference_input(tensors))["z"]
            probabilities.append(torch.softmax(classifier(z).float(), dim=-1).cpu())
            if method == "head+knn":
                embeddings.append(z.float().cpu())  # the cells' embedding, for the vote
        probabilities = torch.cat(probabilities).numpy()
        categories = self._label_categories()
        predictable = categories != self.registry_["setup_args"].get("unlabeled_category")
        if not predictable.all():
            probabilities = probabilities[:, predictable]
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            categories = categories[predictable]
        if method == "head+knn":
            reference = self if knn_reference is None else knn_reference
            votes = reference._labelled_cell_votes(torch.cat(embeddings).numpy(), k, batch_size)
            probabilities = (
                probabilities + votes.reindex(columns=categories, fill_value=0.0).to_numpy()
            ) / 2
        if not soft:
            return categories[probabilities.argmax(axis=1)]
        rows = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        return pd.DataFrame(probabilities, index=rows, columns=categories)

    def _labelled_cell_votes(
        self, query: np.ndarray, k: int, batch_size: int | None
    ) -> pd.DataFrame:
        """Vote shares of the model's labelled cells (k nearest) for embedded cells, per label."""
        unlabeled = self.registry_["setup_args"].get("unlabeled_category")
        if self.adata_manager is None or getattr(self, "query_unlabeled_", False):
            raise ValueError(
                "method='head+knn' votes among the labelled cells the model was set up with, "
                "but it has none (a model without its AnnData, or a query without labels): "
                "pass the labelled reference model as knn_reference=, or use method='head'."
            )
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY).ravel()
        labels = self._label_categories()[codes.astype(np.int64)]
        labelled = np.flatnonzero(labels != unlabeled)
        reference = self.get_latent_representation(self.adata, labelled, batch_size)
        return knn_label_transfer(
            reference, labels[labelled], query, k=min(k, labelled.size), soft=True
        )

    def _label_categories(self) -> np.ndarray:
        state = self.registry_["field_registries"][REGISTRY_KEYS.LABELS_KEY]["state_registry"]
        return np.asarray(state["categorical_mapping"]).astype(str)

    def _class_weights(
        self, class_weight: Literal["balanced"] | Mapping[str, float] | None
    ) -> tuple[float, ...] | None:
        """Weight of every label code in the classification loss (see ``train``).

        ``None`` when every cell weighs the same; the ``unlabeled_category`` always weighs 0.
        """
        unlabeled = self.registry_["setup_args"].get("unlabeled_category")
        if class_weight is None and unlabeled is None:
            return None
        if self.module.classifier is None or not self.module.weights["classification"]:
            if class_weight is None:
                return None
            raise ValueError(
                "class_weight= weighs the classification loss, but this model trains no "
                "classification head: set it up with labels_key= (classification_weight > 0)."
            )
        categories = self._label_categories()
        labelled = categories != unlabeled
        if class_weight is None:
            return tuple(labelled.astype(float).tolist())
        if isinstance(class_weight, Mapping):
            unknown = sorted(set(map(str, class_weight)) - set(categories[labelled]))
            if unknown:
                raise ValueError(
                    f"class_weight names labels that are not registered: {unknown}. "
                    f"Registered labels: {list(categories[labelled])}."
                )
            weights = np.array([float(class_weight.get(c, 1.0)) for c in categories])
            if not np.isfinite(weights).all() or (weights < 0).any():
                raise ValueError("class_weight values must be finite and non-negative.")
            return tuple(np.where(labelled, weights, 0.0).tolist())
        if class_weight != "balanced":
            raise ValueError(
                f"class_weight must be 'balanced', a mapping label -> weight or None, got "
                f"{class_weight!r}."
            )
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY).ravel()
        counts = np.bincount(codes.astype(np.int64), minlength=categories.size).astype(float)
        present = labelled & (counts > 0)
        # n_cells / (n_classes * n_class) over labelled cells: every class weighs the same.
        weights = np.zeros(categories.size)
        weights[present] = counts[present].sum() / (present.sum() * counts[present])
        return tuple(weights.tolist())

    def _labels_optional(self, adata: AnnData | None) -> AnnData | None:
        """``adata``, or a light copy with placeholder labels if it lacks the label column."""
        key = self.registry_["setup_args"]["labels_key"]
        if adata is None or key is None or key in adata.obs or self.get_anndata_manager(adata):
            return adata
        return with_placeholder_labels(adata, key, self._label_categories()[0])


def _labels_optional_for_dir(dir_path, adata: AnnData, prefix: str | None) -> AnnData:
    """``adata``, with placeholder labels if the saved model needs a label column it lacks."""
    meta = _paths(dir_path, prefix)["meta"]
    if not meta.is_file():
        return adata  # load() explains what is missing
    registry = from_json(json.loads(meta.read_text(encoding="utf-8"))["attributes"])["registry_"]
    key = registry["setup_args"]["labels_key"]
    if key is None or key in adata.obs:
        return adata
    state = registry["field_registries"][REGISTRY_KEYS.LABELS_KEY]["state_registry"]
    return with_placeholder_labels(adata, key, str(state["categorical_mapping"][0]))


def _describe_init(source: TokenSource, vocab: GeneVocab) -> str:
    if source is None or isinstance(source, str):
        return source or "mean"
    kind, ids = source
    return f"{kind}:" + ",".join(vocab.tokens[i] for i in ids)


def _new_rows(old: torch.Tensor, sources: list[TokenSource], n_special: int) -> torch.Tensor:
    """Initial values of new rows of a per-token tensor ``old`` whose genes start at n_special."""
    genes = old[n_special:] if old.shape[0] > n_special else old
    mean = genes.mean(dim=0)
    rows = []
    for source in sources:
        if source is None:
            rows.append(mean)
        elif isinstance(source, str):  # "random"
            rows.append(torch.randn_like(mean) * genes.std(dim=0) + mean)
        else:
            rows.append(old[torch.as_tensor(source[1])].mean(dim=0))
    return torch.stack(rows) if rows else old[:0]


def _load_reference_weights(
    module: nn.Module,
    reference: dict[str, torch.Tensor],
    old_rows: dict[str, int],
    fresh: tuple[str, ...] = (),
) -> None:
    """Copy reference tensors into ``module``, whose batch/label tensors may have more rows.

    Tensors under the ``fresh`` prefixes keep the module's initialisation.
    """
    kinds = row_tensors(module)
    reference = {k: v for k, v in reference.items() if not (fresh and k.startswith(fresh))}
    state = {k: v for k, v in module.state_dict().items() if not (fresh and k.startswith(fresh))}
    problems = [f"unexpected {key}" for key in sorted(set(reference) - set(state))]
    for key, target in state.items():
        source = reference.get(key)
        kind = kinds.get(key)
        if source is None:
            problems.append(f"missing {key}")
        elif source.shape == target.shape:
            state[key] = source
        elif kind in (BATCH, BATCH_OUTPUT, LABEL_OUTPUT) and source.shape[0] == old_rows[kind]:
            rows = target.clone()
            rows[: source.shape[0]] = source
            if kind == BATCH:  # a new batch starts where the reference puts unseen batches
                rows[source.shape[0] :] = source.mean(dim=0)
            state[key] = rows
        else:
            problems.append(
                f"{key}: reference {tuple(source.shape)} vs query {tuple(target.shape)}"
            )
    if problems:
        raise ValueError(
            "The reference weights do not fit the query model: " + "; ".join(problems) + ". "
            "Was the reference trained with this version of scformer-scvi?"
        )
    module.load_state_dict(state, strict=not fresh)


def _apply_freeze(
    module: nn.Module, freeze: Freeze, old_rows: dict[str, int], fresh: tuple[str, ...] = ()
) -> None:
    """Set what trains in a query model (see ``load_query_data``)."""
    kinds = row_tensors(module)
    frozen_rows = {}
    for name, param in module.named_parameters():
        kind = kinds.get(name)
        new_head = bool(fresh) and name.startswith(fresh)
        grows = kind is not None and not new_head and param.shape[0] > old_rows[kind]
        whole = (
            freeze is False
            or new_head
            or (freeze == "embeddings_only" and (name.startswith("embedding.") or kind == BATCH))
        )
        param.requires_grad_(whole or grows)
        if grows and not whole:
            frozen_rows[name] = old_rows[kind]
    freeze_rows(module, frozen_rows)
    if freeze is not False and getattr(module, "domain_norm", False):
        module.cell_norm.n_frozen = old_rows[BATCH]  # new batches learn their own statistics
    elif freeze is not False:
        module.cell_norm.momentum = 0.0  # keep the reference's embedding statistics
    if not any(p.requires_grad for p in module.parameters()):
        raise ValueError(
            "freeze=True leaves nothing to train: the query adds no gene, batch or label to "
            "the reference. Embed or predict it with the reference model directly, or "
            "fine-tune with freeze='embeddings_only' or freeze=False."
        )
