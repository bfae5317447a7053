import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from scformer_scvi import SCFormer


def test_negative_counts(baron_small):
    baron_small.X = baron_small.X.toarray()
    baron_small.X[3, 5] = -1
    with pytest.raises(ValueError, match=r"1 negative values.*raw counts"):
        SCFormer.setup_anndata(baron_small)


def test_nan_counts(baron_small):
    baron_small.X = baron_small.X.tocsr()
    baron_small.X.data[[0, 10]] = np.nan
    with pytest.raises(ValueError, match="2 NaN or infinite values"):
        SCFormer.setup_anndata(baron_small)


def test_non_integer_counts_unless_allowed(baron_small):
    baron_small.X = baron_small.X.tocsr()
    baron_small.X.data = np.log1p(baron_small.X.data)
    with pytest.raises(ValueError, match=r"non-integer values.*allow_non_integer=True"):
        SCFormer.setup_anndata(baron_small)
    SCFormer.setup_anndata(baron_small, allow_non_integer=True)


def test_empty_anndata():
    with pytest.raises(ValueError, match=r"AnnData is empty \(0 cells"):
        SCFormer.setup_anndata(ad.AnnData(np.zeros((0, 5), dtype=np.float32)))


def test_missing_layer(baron_small):
    baron_small.layers["counts"] = baron_small.X.copy()
    with pytest.raises(KeyError, match=r"layer='raw' is not a layer.*\['counts'\]"):
        SCFormer.setup_anndata(baron_small, layer="raw")


def test_missing_batch_and_labels_key(baron_small):
    with pytest.raises(KeyError, match="batch_key='sample' is not a column of adata.obs"):
        SCFormer.setup_anndata(baron_small, batch_key="sample")
    with pytest.raises(KeyError, match="labels_key='celltype'"):
        SCFormer.setup_anndata(baron_small, labels_key="celltype")


def test_empty_cells(baron_small):
    X = sp.csr_matrix(baron_small.X)
    X[[1, 2], :] = 0
    X.eliminate_zeros()
    baron_small.X = X
    with pytest.raises(ValueError, match=r"2 of \d+ cells have no counts.*filter_cells"):
        SCFormer.setup_anndata(baron_small)


def test_counts_in_a_layer_are_validated_not_X(baron_small):
    baron_small.layers["counts"] = baron_small.X.copy()
    baron_small.X = np.log1p(baron_small.X)
    SCFormer.setup_anndata(baron_small, layer="counts")  # fine: counts are in the layer
    with pytest.raises(ValueError, match="non-integer"):
        SCFormer.setup_anndata(baron_small)
