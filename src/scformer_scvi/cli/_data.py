"""Reading the command line's data sources: AnnData files and scBanks."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from torch.utils.data import DataLoader

import scbank
from scformer_scvi.data import TokenizeCollate, gene_names
from scformer_scvi.data._bank import BankDataModule

from ._config import ConfigError, DataConfig

logger = logging.getLogger(__name__)


def is_bank(path: str | Path) -> bool:
    """Whether ``path`` is a scBank directory."""
    return (Path(path) / "manifest.json").is_file()


def read_h5ads(data: DataConfig) -> ad.AnnData:
    """Read the configured ``.h5ad`` files into one AnnData of counts.

    One file is returned as it is. Several are concatenated with an outer join of genes
    (genes a file does not measure read as zero); their counts (``data.layer`` or ``X``) are
    kept under the same name, other layers are dropped, and ``obs["dataset"]`` is the file's
    name. With ``data.n_top_genes``, highly variable genes are kept and cells left without
    counts are dropped.
    """
    if len(data.h5ad) == 1:
        adata = ad.read_h5ad(data.h5ad[0])
    else:
        adata = _concatenate([ad.read_h5ad(path) for path in data.h5ad], data)
    if data.layer is not None and data.layer not in adata.layers:
        raise ConfigError(
            f"data.layer={data.layer!r} is not a layer of the data (layers: "
            f"{list(adata.layers)}). Fix data.layer, or set it to null to use X."
        )
    if data.n_top_genes is not None and data.n_top_genes < adata.n_vars:
        import scanpy as sc

        sc.pp.highly_variable_genes(
            adata, n_top_genes=data.n_top_genes, flavor="seurat_v3", layer=data.layer, subset=True
        )
        counts = adata.X if data.layer is None else adata.layers[data.layer]
        keep = np.asarray(counts.sum(axis=1)).ravel() > 0
        if not keep.all():
            logger.info("Dropped %d cells without counts in the selected genes.", (~keep).sum())
            adata = adata[keep].copy()
    return adata


def _concatenate(adatas: list[ad.AnnData], data: DataConfig) -> ad.AnnData:
    parts = []
    for path, adata in zip(data.h5ad, adatas, strict=True):
        if data.layer is not None and data.layer not in adata.layers:
            raise ConfigError(f"data.layer={data.layer!r} is not a layer of {path}.")
        counts = adata.X if data.layer is None else adata.layers[data.layer]
        genes = pd.Index(gene_names(adata, data.gene_key), name=None)
        if genes.has_duplicates:
            raise ConfigError(
                f"{path} has duplicated gene names (e.g. {list(genes[genes.duplicated()][:3])});"
                " make them unique (adata.var_names_make_unique()) or choose data.gene_key."
            )
        part = ad.AnnData(X=sp.csr_matrix(counts, dtype=np.float32), obs=adata.obs.copy())
        part.var_names = genes
        parts.append(part)
    names = [Path(path).stem for path in data.h5ad]
    if len(set(names)) < len(names):
        names = [f"{i}_{name}" for i, name in enumerate(names)]
    combined = ad.concat(parts, join="outer", label="dataset", keys=names, index_unique="-")
    combined.X = sp.csr_matrix(combined.X)
    if data.layer is not None:
        combined.layers[data.layer] = combined.X
    if data.gene_key is not None:
        combined.var[data.gene_key] = combined.var_names
    return combined


class BankWithValidation(BankDataModule):
    """:class:`~scformer_scvi.data._bank.BankDataModule` plus validation minibatches.

    Validation reads another bank in a fixed shuffled order (the same every epoch), split
    over DDP ranks like training: every rank gets the same number of full minibatches, so
    the synchronised validation logging cannot wait on a rank that has one batch less.
    """

    def __init__(
        self,
        dataset,
        collate: TokenizeCollate,
        num_workers: int,
        validation,
        validation_collate: TokenizeCollate,
    ) -> None:
        super().__init__(dataset, collate, num_workers)
        self.validation = validation
        self.validation_collate = validation_collate

    def val_dataloader(self) -> DataLoader:
        """Validation minibatches (masked like training)."""
        return DataLoader(
            self.validation,
            batch_size=None,
            collate_fn=self.validation_collate,
            num_workers=self.num_workers,
        )


def bank_datamodule(
    model, bank: scbank.DataBank, data: DataConfig, mask_ratio: float, mvc_zero_fraction: float
) -> BankDataModule:
    """Training minibatches streamed from ``bank``; validation from ``data.validation_bank``."""
    seed = 0  # the shuffle's seed; each epoch draws a new order from it
    datamodule = model._bank_datamodule(
        bank, data.batch_size, mask_ratio, mvc_zero_fraction, data.num_workers, seed
    )
    if data.validation_bank is None:
        return datamodule
    validation_bank = scbank.DataBank.open(data.validation_bank)
    validation, genes = model._bank_batches(validation_bank, data.batch_size, True, seed)
    validation.n_loader_workers = max(1, data.num_workers)
    if len(validation) == 0:
        raise ConfigError(
            f"data.validation_bank has {validation_bank.n_obs} cells, fewer than one minibatch "
            "per process: lower data.batch_size or add cells."
        )
    tokenizer = model._gene_tokenizer(genes, "the validation bank")
    collate = TokenizeCollate(tokenizer, mask_ratio, True, mvc_zero_fraction)
    return BankWithValidation(
        datamodule.dataset, datamodule.collate, data.num_workers, validation, collate
    )
