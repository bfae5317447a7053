"""Models built from, trained on and embedding a scBank, streamed without loading it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

import scbank
from scformer_scvi.data import GeneVocab, TokenizeCollate
from scformer_scvi.data._bank import (
    BankBatches,
    BankDataModule,
    bank_categories,
    bank_registry,
    inference_loader,
)


class BankMixin:
    """``from_bank``, training on a bank and embedding a bank (optionally writing back)."""

    @classmethod
    def from_bank(
        cls,
        bank: scbank.DataBank,
        batch_key: str | None = None,
        labels_key: str | None = None,
        genes: Sequence[str] | None = None,
        **model_kwargs,
    ):
        """Create a model for the cells of a bank, like ``setup_anndata`` + the constructor.

        Parameters
        ----------
        bank
            An open :class:`scbank.DataBank`.
        batch_key, labels_key
            obs columns of the bank for the batch and the cell labels (e.g. ``"study_id"``).
        genes
            Vocabulary genes; ``None`` uses the bank's union gene vocabulary.
        **model_kwargs
            Passed to the model's constructor (``d_model``, ``likelihood``, ...).
        """
        if model_kwargs.get("gene_init", "random") != "random":
            raise ValueError(
                "gene_init='pca' computes the gene embeddings from the cells' expression in "
                "memory (an AnnData: SCFormer(adata, gene_init='pca')); a model built from a "
                "bank starts with gene_init='random'."
            )
        genes = list(bank.var_names if genes is None else genes)
        registry = bank_registry(bank, genes, batch_key, labels_key, model_name=cls.__name__)
        return cls(None, registry=registry, vocab=GeneVocab(genes), **model_kwargs)

    def _bank_batches(
        self, bank: scbank.DataBank, batch_size: int, shuffle: bool, seed: int = 0
    ) -> tuple[BankBatches, list[str]]:
        """Stream the bank's cells over the vocabulary genes it measures."""
        present = set(bank.var_names)
        genes = [gene for gene in self.vocab_.genes if gene in present]
        args = self.registry_["setup_args"]
        batch_key, labels_key = args["batch_key"], args["labels_key"]
        dataset = BankBatches(
            bank.path,
            genes,
            batch_size,
            batch_key,
            labels_key,
            self._registered_categories("batch", bank, batch_key),
            self._registered_categories("labels", bank, labels_key),
            shuffle=shuffle,
            seed=seed,
        )
        return dataset, genes

    def _registered_categories(
        self, registry_key: str, bank: scbank.DataBank, key: str | None
    ) -> np.ndarray:
        registered = self.registry_["field_registries"][registry_key]["state_registry"]
        mapping = np.asarray(registered["categorical_mapping"]).astype(str)
        if key is not None:
            unseen = sorted(set(bank_categories(bank, key)) - set(mapping))
            if unseen:
                raise ValueError(
                    f"obs[{key!r}] of the bank has categories the model was not set up with: "
                    f"{unseen[:5]}. Embed those cells from an AnnData, which accepts new batches."
                )
        return mapping

    def _bank_datamodule(
        self,
        bank: scbank.DataBank,
        batch_size: int,
        mask_ratio: float,
        mvc_zero_fraction: float,
        num_workers: int,
        seed: int,
    ) -> BankDataModule:
        dataset, genes = self._bank_batches(bank, batch_size, shuffle=True, seed=seed)
        tokenizer = self._gene_tokenizer(genes, "the bank")
        collate = TokenizeCollate(tokenizer, mask_ratio, True, mvc_zero_fraction)
        return BankDataModule(dataset, collate, num_workers)

    @torch.inference_mode()
    def _embed_bank(
        self,
        bank: scbank.DataBank,
        batch_size: int | None,
        table: str | None,
        factor: np.ndarray | float = 1.0,
    ) -> np.ndarray:
        """Embed the bank's cells in ``bank.obs`` order, times ``factor``; optionally store them."""
        dataset, genes = self._bank_batches(bank, batch_size or 256, shuffle=False)
        collate = TokenizeCollate(self._gene_tokenizer(genes, "the bank"))
        self.module.eval()
        embeddings, cell_ids = [], []
        for tensors in inference_loader(dataset, collate):
            inputs = self.module._get_inference_input(tensors)
            embeddings.append(self.module.inference(**inputs)["z"].float().cpu().numpy())
            cell_ids.append(tensors["cell_id"].numpy())
        embeddings, cell_ids = np.concatenate(embeddings), np.concatenate(cell_ids)
        order = np.argsort(cell_ids)
        position = np.searchsorted(cell_ids[order], bank.obs["cell_id"].to_numpy())
        embeddings = embeddings[order][position] * factor
        if table is not None:
            writable = scbank.DataBank.open(bank.path, mode="a")
            writable.write_dense_table(
                table, embeddings, cell_ids=bank.obs["cell_id"].to_numpy(), overwrite=True
            )
        return embeddings
