"""Generations: removal, history, opening earlier generations, vacuum, stable ids."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from bank_helpers import dense, make_adata, new_bank

from scbank import DataBank, ScBankError


@pytest.fixture
def three_gens(bank_path):
    bank = new_bank(bank_path)
    a = make_adata(30, [f"g{i}" for i in range(10)], seed=1, prefix="a")
    b = make_adata(20, [f"g{i}" for i in range(5, 20)], seed=2, prefix="b")
    bank.append_anndata(a, "a")
    bank.append_anndata(b, "b")
    bank.remove_study("a")
    return bank, a, b


def test_remove_never_rewrites_other_studies(three_gens):
    bank, _, b = three_gens
    files_b_before = {
        f.path: f.md5 for f in DataBank.open(bank.path, generation=3)._manifest.files()
    }
    files_b_now = {f.path: f.md5 for f in bank._manifest.files()}
    assert set(files_b_now) <= set(files_b_before)  # removal only drops entries
    assert bank.n_obs == 20
    np.testing.assert_array_equal(dense(bank.study("b").to_memory().X), dense(b.X))
    assert bank.obs["cell_id"].tolist() == list(range(30, 50))  # cell ids are not renumbered


def test_history_and_earlier_generations(three_gens):
    bank, a, _ = three_gens
    h = bank.history
    assert h.index.tolist() == [1, 2, 3, 4]
    assert h["operation"].tolist() == ["create", "append", "append", "remove"]
    assert h.loc[4, "study_id"] == "a"
    assert h["available"].all()
    old = DataBank.open(bank.path, generation=2)
    assert old.n_obs == 30
    np.testing.assert_array_equal(dense(old.X.subset_genes(a.var_names)[:]), dense(a.X))
    assert old.verify().ok
    with pytest.raises(ValueError, match="read-only"):
        DataBank.open(bank.path, mode="a", generation=2)


def test_gene_and_cell_ids_are_never_reused(three_gens):
    bank, _, _ = three_gens
    assert bank.n_vars == 20  # genes of the removed study stay in the vocabulary
    c = make_adata(10, ["g0", "new1", "g19"], seed=3, prefix="c")
    bank.append_anndata(c, "a")  # the id of a removed study may be used again
    assert bank.var.loc[["g0", "new1", "g19"], "gene_id"].tolist() == [0, 20, 19]
    assert bank.obs["cell_id"].tolist()[-10:] == list(range(50, 60))
    np.testing.assert_array_equal(dense(bank.study("a").to_memory().X), dense(c.X))


def test_vacuum_keeps_current_generation(three_gens):
    bank, _, b = three_gens
    current = {f.path for f in bank._manifest.files()}
    removed = bank.vacuum()
    assert removed
    assert not current & set(removed)
    assert all(not p.startswith(("tables/X/b/", "cellmeta/b/")) for p in removed)
    assert any(p.startswith("tables/X/a/") for p in removed)
    assert bank.verify().ok
    np.testing.assert_array_equal(dense(bank.study("b").to_memory().X), dense(b.X))
    assert not bank.history.loc[2, "available"]
    with pytest.raises(ScBankError, match="not available"):
        DataBank.open(bank.path, generation=2)
    assert bank.history.loc[5, "operation"] == "vacuum"
    assert not (bank.path / "tables" / "X" / "a").exists()


def test_remove_unknown_study(three_gens):
    bank, _, _ = three_gens
    with pytest.raises(KeyError, match="no study 'zzz'"):
        bank.remove_study("zzz")
    assert bank.generation == 4


def test_dense_table_round_trip_subset_and_overwrite(bank_path):
    bank = new_bank(bank_path)
    bank.append_anndata(make_adata(30, seed=1, prefix="a"), "a")
    bank.append_anndata(make_adata(40, seed=2, prefix="b"), "b")
    emb = np.random.default_rng(0).normal(size=(70, 8)).astype(np.float32)
    bank.write_dense_table("scformer", emb)
    assert bank.obsm["scformer"].shape == (70, 8)
    np.testing.assert_array_equal(bank.obsm["scformer"][[69, 0, 35]], emb[[69, 0, 35]])
    assert bank.studies.loc["a", "obsm"] == ["X_pca", "guides", "scformer"]
    # a subset of cells, given in any order, across studies; the rest reads as NaN
    ids = np.array([65, 3, 40])
    bank.write_dense_table("scformer", emb[:3] * 2, cell_ids=ids, overwrite=True)
    got = bank.obsm["scformer"][:]
    np.testing.assert_array_equal(got[ids], emb[:3] * 2)
    assert np.isnan(np.delete(got, ids, axis=0)).all()
    in_b = bank.study("b").to_memory().obsm["scformer"]  # study b starts at cell id 30
    np.testing.assert_array_equal(in_b[[10, 35]], emb[[2, 0]] * 2)
    # the old table is still readable from the earlier generation
    old = DataBank.open(bank.path, generation=bank.generation - 1)
    np.testing.assert_array_equal(old.obsm["scformer"][:], emb)
    assert bank.verify().ok


def test_empty_bank(bank_path):
    bank = new_bank(bank_path)
    assert bank.shape == (0, 0)
    assert len(bank.obs) == 0
    assert list(bank.obs.columns[:3]) == ["cell_id", "study_id", "obs_name"]
    assert len(bank.var) == 0
    assert bank.studies.empty
    assert list(bank.iter_batches(8)) == []
    assert bank.verify().ok
    assert "n_obs x n_vars = 0 x 0" in repr(bank)


def test_pickled_handle_is_read_only_on_the_same_generation(three_gens):
    bank, _, b = three_gens
    clone = pickle.loads(pickle.dumps(bank))
    bank.append_anndata(make_adata(5, seed=9, prefix="z"), "z")  # the original moves on
    assert clone.generation == 4
    assert clone.n_obs == 20
    np.testing.assert_array_equal(dense(clone.X.subset_genes(b.var_names)[:]), dense(b.X))
    with pytest.raises(ScBankError, match="read-only"):
        clone.remove_study("b")
