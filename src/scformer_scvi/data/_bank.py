"""Training and inference streamed from a scBank, without loading it into memory."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import scvi
import torch.distributed as dist
from lightning.pytorch import LightningDataModule
from scvi import REGISTRY_KEYS
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

import scbank

from ._loader import TokenizeCollate


def bank_categories(bank: scbank.DataBank, key: str | None) -> np.ndarray:
    """The bank-wide categories of an obs column.

    For ``key=None``, the single category ``0`` that scvi-tools registers for a missing key.
    """
    if key is None:
        return np.array([0])
    if key not in bank.obs.columns:
        raise KeyError(
            f"{key!r} is not an obs column of the bank (columns: {list(bank.obs.columns)})."
        )
    column = bank.obs[key]
    if column.isna().any():
        raise ValueError(f"obs[{key!r}] of the bank has missing values; fill them first.")
    categories = column.cat.categories if hasattr(column, "cat") else np.unique(column)
    return np.asarray([str(c) for c in categories], dtype=object)


def bank_registry(
    bank: scbank.DataBank,
    genes: Sequence[str],
    batch_key: str | None = None,
    labels_key: str | None = None,
    model_name: str = "SCFormer",
) -> dict:
    """An scvi-tools registry describing a bank, as ``setup_anndata`` would for an AnnData.

    Published as a ``setup_anndata`` registry with the same ``setup_args``, so the model saves
    and loads like any other and can later embed an AnnData with the same ``obs`` columns.
    """
    batches = bank_categories(bank, batch_key)
    labels = bank_categories(bank, labels_key)

    def categorical(attr_key: str, original_key: str | None, mapping: np.ndarray, name: str):
        return {
            "data_registry": {"attr_name": "obs", "attr_key": attr_key},
            "state_registry": {
                "categorical_mapping": mapping,
                "original_key": original_key or attr_key,
            },
            "summary_stats": {name: len(mapping)},
        }

    return {
        "scvi_version": scvi.__version__,
        "model_name": model_name,
        "setup_method_name": "setup_anndata",
        "setup_args": {
            "layer": None,
            "batch_key": batch_key,
            "labels_key": labels_key,
            "gene_key": None,
            "allow_non_integer": False,
            "perturbation_key": None,
            "control_label": "control",
            "perturbation_sep": "+",
            "condition_key": None,
        },
        "_scvi_uuid": str(uuid.uuid4()),
        "field_registries": {
            REGISTRY_KEYS.X_KEY: {
                "data_registry": {"attr_name": "X", "attr_key": None},
                "state_registry": {
                    "n_obs": bank.n_obs,
                    "n_vars": len(genes),
                    "column_names": np.asarray(list(genes), dtype=object),
                },
                "summary_stats": {"n_vars": len(genes), "n_cells": bank.n_obs},
            },
            REGISTRY_KEYS.BATCH_KEY: categorical("_scvi_batch", batch_key, batches, "n_batch"),
            REGISTRY_KEYS.LABELS_KEY: categorical("_scvi_labels", labels_key, labels, "n_labels"),
            "perturbation": categorical(
                "_scvi_perturbation", None, np.array([0]), "n_perturbation"
            ),
            "condition": categorical("_scvi_condition", None, np.array([0]), "n_condition"),
        },
    }


class BankBatches(IterableDataset):
    """Minibatches streamed from a bank, in the dict layout scvi-tools' loaders produce.

    Each item has ``"X"`` (CSR counts over ``genes``), ``"batch"`` and ``"labels"`` (category
    codes, ``(n, 1)``) and ``"cell_id"``. Cells are split disjointly across DDP ranks (from
    ``torch.distributed``) and dataloader workers. With ``shuffle``, every rank and worker yields
    the same number of full minibatches (the few cells beyond that are left out of this epoch,
    and a new epoch reshuffles), so DDP ranks take equal steps.

    Parameters
    ----------
    path
        The bank directory.
    genes
        Genes (columns) to read, in the model's order.
    batch_size
        Cells per minibatch.
    batch_key, labels_key
        obs columns for the batch and the labels, or None.
    batch_categories, label_categories
        Their categories, in registry order.
    shuffle
        Shuffle (training) or read in bank order (inference).
    seed
        Seed of the shuffle; each pass over the data (epoch) uses a new order.
    rank, world_size
        This process's share of the cells; ``None`` reads them from ``torch.distributed``
        (one process when it is not initialised).
    """

    def __init__(
        self,
        path: str | Path,
        genes: Sequence[str],
        batch_size: int,
        batch_key: str | None,
        labels_key: str | None,
        batch_categories: np.ndarray,
        label_categories: np.ndarray,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.path = str(path)
        self.rank, self.world_size = rank, world_size
        self.genes = list(genes)
        self.batch_size = batch_size
        self.keys = {REGISTRY_KEYS.BATCH_KEY: batch_key, REGISTRY_KEYS.LABELS_KEY: labels_key}
        self.categories = {
            REGISTRY_KEYS.BATCH_KEY: np.asarray(batch_categories),
            REGISTRY_KEYS.LABELS_KEY: np.asarray(label_categories),
        }
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = -1  # advanced by EpochDataLoader before every pass
        self.n_loader_workers = 1  # set by the data module: how many workers share the shard
        self.n_obs = scbank.DataBank.open(self.path).n_obs

    def _shards(self) -> tuple[int, int, int, int]:
        if self.world_size is not None:
            rank, world = self.rank or 0, self.world_size
        elif dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = 0, 1
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, worker, workers

    def batches_per_worker(self, world: int, workers: int) -> int:
        """Full minibatches every (rank, worker) yields in a shuffled epoch."""
        return (self.n_obs // (world * workers)) // self.batch_size

    def __len__(self) -> int:
        """Minibatches per pass for this process (all its dataloader workers together)."""
        _, world, _, _ = self._shards()
        if self.shuffle:
            return self.n_loader_workers * self.batches_per_worker(world, self.n_loader_workers)
        return math.ceil(math.ceil(self.n_obs / world) / self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        rank, world, worker, workers = self._shards()
        bank = scbank.DataBank.open(self.path)
        columns = [key for key in self.keys.values() if key is not None]
        stream = bank.iter_batches(
            self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=max(self.epoch, 0),
            rank=rank,
            world_size=world,
            worker_id=worker,
            num_workers=workers,
            columns=columns,
            genes=self.genes,
            drop_last=self.shuffle,
        )
        limit = self.batches_per_worker(world, workers) if self.shuffle else None
        for index, batch in enumerate(stream):
            if limit is not None and index >= limit:
                break
            yield self._to_registry_layout(batch)

    def _to_registry_layout(self, batch: dict) -> dict:
        out = {REGISTRY_KEYS.X_KEY: batch["X"], "cell_id": batch["cell_id"]}
        n_cells = batch["X"].shape[0]
        for registry_key, column in self.keys.items():
            if column is None:
                codes = np.zeros(n_cells, dtype=np.int64)
            else:
                values = batch["obs"][column].astype(str).to_numpy()
                codes = np.searchsorted(self.categories[registry_key], values)
            out[registry_key] = codes.reshape(-1, 1)
        return out


class EpochDataLoader(DataLoader):
    """A DataLoader that tells its :class:`BankBatches` which epoch begins (for reshuffling).

    The epoch is advanced in the main process before workers receive the dataset.
    """

    def __iter__(self):
        self.dataset.epoch += 1
        return super().__iter__()


class BankDataModule(LightningDataModule):
    """Lightning data module streaming tokenized minibatches from a bank (training only).

    Parameters
    ----------
    dataset
        The streamed minibatches.
    collate
        Tokenizes each minibatch (random gene subsampling and masking).
    num_workers
        DataLoader worker processes.
    """

    def __init__(self, dataset: BankBatches, collate: TokenizeCollate, num_workers: int = 0):
        super().__init__()
        self.dataset = dataset
        self.collate = collate
        self.num_workers = num_workers
        dataset.n_loader_workers = max(1, num_workers)
        self.n_obs = dataset.n_obs

    def train_dataloader(self) -> EpochDataLoader:
        """Shuffled, sharded minibatches."""
        return EpochDataLoader(
            self.dataset, batch_size=None, collate_fn=self.collate, num_workers=self.num_workers
        )


def inference_loader(dataset: BankBatches, collate: TokenizeCollate) -> DataLoader:
    """Minibatches in bank order, for embedding every cell once (single process)."""
    if dataset.shuffle:
        raise ValueError("An inference loader reads the bank in order (shuffle=False).")
    return DataLoader(dataset, batch_size=None, collate_fn=collate)
