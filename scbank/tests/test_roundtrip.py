"""AnnData -> bank -> AnnData round trips, and the bank-wide obs/var/studies tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from bank_helpers import CHUNK, assert_same_study, dense, make_adata, new_bank, union_matrix

from scbank import DataBank, LazyMatrix


@pytest.mark.parametrize("source", ["memory", "h5ad", "h5ad-dense"])
def test_study_round_trip(bank_path, write_h5ad, source):
    a = make_adata(150, dense=source == "h5ad-dense")
    bank = new_bank(bank_path)
    data = a if source == "memory" else write_h5ad(a, "in")
    bank.append_anndata(data, "s1", chunk_size=CHUNK)
    assert len(bank._manifest.study("s1").tables["X"].files) == 3  # 150 cells / 64 per part
    reopened = DataBank.open(bank_path)
    assert_same_study(reopened.study("s1").to_memory(), a)


def test_layers_and_obsm_can_be_chosen(bank_path):
    a = make_adata(40)
    bank = new_bank(bank_path)
    bank.append_anndata(a, "s", layers=(), obsm=["X_pca"])
    back = bank.study("s").to_memory()
    assert list(back.layers) == []
    assert list(back.obsm) == ["X_pca"]


def test_bank_obs_unifies_studies(two_studies):
    bank, (a, b) = two_studies
    obs = bank.obs
    assert obs.index.tolist() == [f"study_a:{n}" for n in a.obs_names] + [
        f"study_b:{n}" for n in b.obs_names
    ]
    assert obs["cell_id"].tolist() == list(range(250))
    assert obs["study_id"].cat.categories.tolist() == ["study_a", "study_b"]
    assert obs["obs_name"].tolist() == [*a.obs_names, *b.obs_names]
    # categories are merged, so codes mean the same in both studies
    assert obs["cell_type"].cat.categories.tolist() == ["B", "T", "NK", "unused"]
    assert obs["stage"].cat.ordered
    assert obs["n_counts"].dtype == np.float32
    np.testing.assert_array_equal(obs["score"], np.concatenate([a.obs["score"], b.obs["score"]]))


def test_obs_columns_missing_in_a_study_are_na(bank_path):
    a, b = make_adata(20, seed=1), make_adata(20, seed=2, prefix="b")
    b.obs = b.obs[["cell_type"]]
    bank = new_bank(bank_path)
    bank.append_anndata(a, "a")
    bank.append_anndata(b, "b")
    obs = bank.obs
    assert obs["n_genes"].dtype == np.float64  # int column with missing values
    assert obs["n_genes"].iloc[20:].isna().all()
    assert obs["qc_pass"].iloc[:20].tolist() == a.obs["qc_pass"].tolist()


def test_var_is_union_vocabulary(two_studies):
    bank, _ = two_studies
    assert bank.var_names.tolist() == [f"g{i}" for i in range(70)]
    assert bank.var["gene_id"].tolist() == list(range(70))
    assert bank.var["n_studies"].tolist() == [1] * 25 + [2] * 15 + [1] * 30
    assert bank.shape == (250, 70)


def test_studies_table(two_studies):
    bank, (a, _) = two_studies
    st = bank.studies
    assert st.index.tolist() == ["study_a", "study_b"]
    assert st.loc["study_a", "n_cells"] == 150
    assert st.loc["study_b", "cell_id_start"] == 150
    assert st.loc["study_a", "hvgs"] == a.var_names[a.var["highly_variable"]].tolist()
    assert st.loc["study_a", "cell_types"] == ["B", "NK", "T"]
    assert st.loc["study_a", "uns"] == {"note": "synthetic", "params": {"k": 3, "arr": [0, 1, 2]}}
    assert st.loc["study_a", "obsm"] == ["X_pca", "guides"]


def test_uns_that_is_not_json_is_skipped_with_warning(bank_path):
    a = make_adata(20)
    a.uns["frame"] = pd.DataFrame({"x": [1]})
    bank = new_bank(bank_path)
    with pytest.warns(UserWarning, match="frame"):
        bank.append_anndata(a, "s")
    assert "frame" not in bank.studies.loc["s", "uns"]


def test_view_to_memory_union_space(two_studies):
    bank, studies = two_studies
    rows = np.array([0, 149, 150, 249, 10])
    m = bank[rows].to_memory()
    np.testing.assert_array_equal(dense(m.X), dense(union_matrix(bank, studies)[rows]))
    pd.testing.assert_frame_equal(m.obs, bank.obs.iloc[rows])
    # X_pca exists in both studies with the same width; layers too
    np.testing.assert_array_equal(
        m.obsm["X_pca"],
        np.concatenate([studies[0].obsm["X_pca"], studies[1].obsm["X_pca"]])[rows],
    )
    assert sp.issparse(m.layers["counts"])


def test_view_of_view_and_gene_subset(two_studies):
    bank, studies = two_studies
    genes = ["g30", "g0", "g69"]
    view = bank[100:200][::3].subset_genes(genes)
    m = view.to_memory()
    expected = union_matrix(bank, studies)[100:200][::3][:, [30, 0, 69]]
    np.testing.assert_array_equal(dense(m.X), dense(expected))
    assert m.var_names.tolist() == genes
    assert view.shape == (34, 3)


def test_lazy_anndata(two_studies):
    bank, studies = two_studies
    adata = bank.to_anndata(lazy=True)
    assert isinstance(adata.X, LazyMatrix)
    assert adata.shape == (250, 70)
    pd.testing.assert_frame_equal(adata.obs, bank.obs)
    mask = (adata.obs["cell_type"] == "NK").to_numpy()
    sub = adata[mask, ["g1", "g30"]]
    expected = union_matrix(bank, studies)[mask][:, [1, 30]]
    np.testing.assert_array_equal(dense(sub.X), dense(expected))
    np.testing.assert_array_equal(
        dense(adata[mask].layers["counts"][:, 1].toarray()),
        dense(union_matrix(bank, [_counts(a) for a in studies])[mask][:, [1]]),
    )


def _counts(a):
    return a.copy().__class__(X=a.layers["counts"], var=a.var)


def test_eager_anndata(two_studies):
    bank, studies = two_studies
    adata = bank.to_anndata(lazy=False)
    np.testing.assert_array_equal(dense(adata.X), dense(union_matrix(bank, studies)))
    assert adata.obs_names.is_unique
