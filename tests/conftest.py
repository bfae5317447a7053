"""Shared fixtures: small real subsets of the datasets in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scvi

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.fail(f"Test data {path} is missing: the tests read real data from ../shared/data.")
    return path


@pytest.fixture(scope="session")
def baron_full() -> ad.AnnData:
    return ad.read_h5ad(shared_file("baron2016_human_pancreas_came.h5ad"))


@pytest.fixture(scope="session")
def _baron_small(baron_full) -> ad.AnnData:
    """240 cells (60 per donor) x 400 highly variable genes, raw counts, no empty cell."""
    rng = np.random.default_rng(0)
    rows = np.concatenate(
        [
            rng.choice(np.flatnonzero(baron_full.obs["donor"] == donor), 60, replace=False)
            for donor in sorted(baron_full.obs["donor"].unique())
        ]
    )
    adata = baron_full[np.sort(rows)].copy()
    sc.pp.highly_variable_genes(adata, n_top_genes=400, flavor="seurat_v3", subset=True)
    sc.pp.filter_cells(adata, min_counts=1)
    return adata


@pytest.fixture
def baron_small(_baron_small) -> ad.AnnData:
    """A fresh copy per test, so tests can modify it."""
    return _baron_small.copy()


@pytest.fixture(autouse=True)
def _seed():
    scvi.settings.seed = 0


TINY_MODEL = {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_seq_len": 64}
TINY_TRAIN = {"batch_size": 32, "enable_progress_bar": False, "accelerator": "cpu"}
