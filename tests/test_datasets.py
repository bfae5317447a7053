from scformer_scvi.datasets import baron_pancreas


def test_bundled_baron_matches_the_shared_copy(baron_full):
    adata = baron_pancreas()
    assert adata.shape == (2142, 20125)
    assert adata.obs["donor"].nunique() == 4
    assert adata.obs["cell_ontology_class"].nunique() == 13
    assert (adata.X != baron_full.X).nnz == 0
