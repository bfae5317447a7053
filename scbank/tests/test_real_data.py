"""Real datasets from ../shared/data: two PBMC studies with different gene sets, and Baron."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from bank_helpers import DATA, assert_same_study, dense

from scbank import DataBank

PBMC = {
    "pbmc10k": "pbmc_10k_protein_v3_200cells.h5ad",
    "pbmc5k": "pbmc_5k_protein_v3_200cells.h5ad",
}

pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not available"),
    pytest.mark.filterwarnings("ignore::anndata.OldFormatWarning"),  # the PBMC files are old
]


@pytest.fixture(scope="module")
def pbmc_bank(tmp_path_factory):
    bank = DataBank.create(tmp_path_factory.mktemp("real") / "pbmc.scb")
    for sid, name in PBMC.items():
        bank.append_anndata(DATA / name, sid, chunk_size=128)  # streamed from the file
    return DataBank.open(bank.path), {sid: ad.read_h5ad(DATA / n) for sid, n in PBMC.items()}


def test_each_study_round_trips(pbmc_bank):
    bank, originals = pbmc_bank
    for sid, orig in originals.items():
        assert_same_study(bank.study(sid).to_memory(), orig)


def test_union_genes_and_zeros_for_absent_genes(pbmc_bank):
    bank, originals = pbmc_bank
    g10, g5 = (set(originals[s].var_names) for s in ("pbmc10k", "pbmc5k"))
    assert set(bank.var_names) == g10 | g5
    assert g10 != g5
    only10 = sorted(g10 - g5)[:20]
    both = sorted(g10 & g5)[:200]
    x = dense(bank.X.subset_genes(only10 + both)[:])
    assert not x[200:, : len(only10)].any()  # pbmc5k cells never measured these genes
    np.testing.assert_array_equal(x[:200, : len(only10)], originals["pbmc10k"][:, only10].X)
    np.testing.assert_array_equal(x[200:, len(only10) :], originals["pbmc5k"][:, both].X)
    assert bank.verify().ok


def test_obsm_with_different_widths_stays_per_study(pbmc_bank):
    bank, originals = pbmc_bank
    assert bank.obsm["protein_expression"].shape == (400, None)
    np.testing.assert_array_equal(
        bank.obsm["protein_expression"][200:210],
        originals["pbmc5k"].obsm["protein_expression"][:10],
    )


def test_baron_categoricals(tmp_path):
    path = DATA / "baron2016_human_pancreas_came.h5ad"
    bank = DataBank.create(tmp_path / "baron.scb")
    bank.append_anndata(path, "baron_human")
    orig = ad.read_h5ad(path)
    back = bank.study("baron_human").to_memory()
    pd.testing.assert_frame_equal(back.obs, orig.obs)
    assert (back.X != orig.X).nnz == 0
    assert bank.studies.loc["baron_human", "cell_types"] == sorted(
        orig.obs["cell_ontology_class"].cat.categories
    )
    donors = pd.concat(b["obs"] for b in bank.iter_batches(512, columns=["donor"]))["donor"]
    assert donors.value_counts().sort_index().equals(orig.obs["donor"].value_counts().sort_index())
