"""Lazy row reads must equal the same indexing of the in-memory matrix, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from bank_helpers import CHUNK, dense, make_adata, new_bank, union_matrix

from scbank import DataBank

ROWS = [
    7,
    -1,
    slice(None),
    slice(10, 200, 7),
    slice(None, None, -3),
    [249, 0, 150, 149, 0],  # unsorted, across studies, with a repeat
    np.array([], dtype=np.int64),
    np.arange(250) % 3 == 0,  # boolean mask
]


@pytest.fixture(scope="module", params=[True, False], ids=["ipc-twin", "parquet-only"])
def bank_and_expected(request, tmp_path_factory):
    """Both read paths: memory-mapped Arrow IPC twins, and parquet row groups."""
    a = make_adata(150, [f"g{i}" for i in range(40)], seed=1, prefix="a")
    b = make_adata(100, [f"g{i}" for i in range(25, 70)], seed=2, prefix="b")
    bank = new_bank(tmp_path_factory.mktemp("slicing") / "b.scb", random_access=request.param)
    bank.append_anndata(a, "a", chunk_size=CHUNK)
    bank.append_anndata(b, "b", chunk_size=CHUNK)
    assert all(f.twin is not None for f in bank._manifest.study("a").tables["X"].files) is (
        request.param
    )
    return DataBank.open(bank.path), [a, b]


@pytest.mark.parametrize("rows", ROWS, ids=lambda r: type(r).__name__)
def test_rows_equal_in_memory(bank_and_expected, rows):
    bank, studies = bank_and_expected
    expected = union_matrix(bank, studies)
    got = bank.X[rows]
    assert isinstance(got, sp.csr_matrix)
    assert got.dtype == np.float32
    want = expected[rows]
    assert got.shape == want.shape
    assert (got != want).nnz == 0


def test_gene_subset_reads_zeros_for_absent_genes(bank_and_expected):
    bank, studies = bank_and_expected
    genes = ["g69", "g0", "g30", "g45"]  # g69 only in b, g0 only in a
    got = bank.X.subset_genes(genes)[[0, 160, 10, 240]]
    want = union_matrix(bank, studies)[[0, 160, 10, 240]][:, [69, 0, 30, 45]]
    np.testing.assert_array_equal(dense(got), dense(want))
    assert got[0, 0] == 0
    assert got[1, 1] == 0


def test_row_and_column_tuple(bank_and_expected):
    bank, studies = bank_and_expected
    cols = np.zeros(70, dtype=bool)
    cols[[3, 33, 66]] = True
    got = bank.X[100:180, cols]
    np.testing.assert_array_equal(dense(got), dense(union_matrix(bank, studies)[100:180][:, cols]))


def test_layers_rows(bank_and_expected):
    bank, studies = bank_and_expected
    counts = [s.copy() for s in studies]
    for c in counts:
        c.X = c.layers["counts"]
    rows = [5, 200, 149]
    got = bank.layers["counts"][rows]
    np.testing.assert_array_equal(dense(got), dense(union_matrix(bank, counts)[rows]))


def test_obsm_rows_dense_and_sparse(bank_and_expected):
    bank, (a, b) = bank_and_expected
    rows = [249, 3, 151]
    pca = np.concatenate([a.obsm["X_pca"], b.obsm["X_pca"]])
    got = bank.obsm["X_pca"][rows]
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, pca[rows])
    guides = sp.vstack([a.obsm["guides"], b.obsm["guides"]], format="csr")
    got = bank.obsm["guides"][rows]
    assert got.dtype == np.int32
    np.testing.assert_array_equal(dense(got), dense(guides[rows]))


def test_out_of_range_and_bad_index(bank_and_expected):
    bank, _ = bank_and_expected
    with pytest.raises(IndexError, match="out of range"):
        bank.X[250]
    with pytest.raises(IndexError, match="mask"):
        bank.X[np.ones(3, dtype=bool)]
    with pytest.raises(IndexError, match="int, slice"):
        bank.X[["a"]]
    with pytest.raises(KeyError, match="not in the bank vocabulary"):
        bank.X.subset_genes(["nope"])


def test_obsm_table_with_different_widths_per_study(tmp_path):
    a, b = make_adata(20, seed=1), make_adata(20, seed=2, prefix="b")
    b.obsm["X_pca"] = b.obsm["X_pca"][:, :3]
    bank = new_bank(tmp_path / "w.scb")
    bank.append_anndata(a, "a")
    bank.append_anndata(b, "b")
    with pytest.raises(ValueError, match="different shapes"):
        bank.obsm["X_pca"][[0, 30]]
    # per study (or a view within one study) it is fine
    np.testing.assert_array_equal(bank.obsm["X_pca"][[0, 1]], a.obsm["X_pca"][[0, 1]])
    assert "X_pca" not in bank[[0, 30]].to_memory().obsm
    np.testing.assert_array_equal(bank.study("b").to_memory().obsm["X_pca"], b.obsm["X_pca"])
