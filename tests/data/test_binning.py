import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import rankdata

from scformer_scvi.data import quantile_bins


def dense_bins(X: sp.csr_matrix, n_bins: int) -> np.ndarray:
    return sp.csr_matrix((quantile_bins(X, n_bins), X.indices, X.indptr), shape=X.shape).toarray()


def reference_bins(row: np.ndarray, n_bins: int) -> np.ndarray:
    """Per-cell mid-rank quantile binning, one cell at a time (slow and obvious)."""
    bins = np.zeros(row.size, dtype=np.int64)
    positive = row > 0
    if positive.any():
        quantile = (rankdata(row[positive], method="average") - 0.5) / positive.sum()
        bins[positive] = np.minimum(1 + np.floor(quantile * (n_bins - 1)), n_bins - 1)
    return bins


def test_matches_reference_on_real_counts(baron_small):
    X = sp.csr_matrix(baron_small.X[:50])
    got = dense_bins(X, 51)
    dense = X.toarray()
    for i in range(dense.shape[0]):
        np.testing.assert_array_equal(got[i], reference_bins(dense[i], 51))


def test_ties_share_one_bin_and_zeros_are_bin_zero():
    X = sp.csr_matrix(np.array([[0, 1, 1, 1, 5, 0, 2, 2]], dtype=np.float32))
    bins = dense_bins(X, 11)[0]
    assert bins[0] == bins[5] == 0
    assert bins[1] == bins[2] == bins[3]
    assert bins[6] == bins[7]
    assert bins[1] < bins[6] < bins[4]


def test_deterministic_and_independent_of_other_cells(baron_small):
    X = sp.csr_matrix(baron_small.X)
    first = quantile_bins(X, 51)
    np.testing.assert_array_equal(first, quantile_bins(X, 51))
    order = np.random.default_rng(1).permutation(X.shape[0])
    shuffled = X[order]
    shuffled_bins = quantile_bins(shuffled, 51)
    for new_row, old_row in enumerate(order):
        lo, hi = shuffled.indptr[new_row], shuffled.indptr[new_row + 1]
        np.testing.assert_array_equal(shuffled_bins[lo:hi], quantile_bins(X[old_row], 51))


def test_invariant_to_normalisation_and_log(baron_small):
    X = sp.csr_matrix(baron_small.X)
    scale = 1e4 / np.asarray(X.sum(axis=1)).ravel()
    normalised = sp.csr_matrix(sp.diags(scale) @ X)
    normalised.data = np.log1p(normalised.data)
    np.testing.assert_array_equal(dense_bins(X, 51), dense_bins(normalised, 51))


def test_distinct_values_fill_bins_evenly():
    X = sp.csr_matrix(np.arange(1, 101, dtype=np.float32)[None, :])
    counts = np.bincount(quantile_bins(X, 11), minlength=11)
    assert counts[0] == 0 and (counts[1:] == 10).all()


def test_explicit_zeros_and_bin_range():
    X = sp.csr_matrix((np.array([0.0, 3.0, 1.0]), np.array([0, 1, 2]), np.array([0, 3])), (1, 3))
    bins = quantile_bins(X, 5)
    assert bins[0] == 0 and 1 <= bins[2] < bins[1] <= 4
    with pytest.raises(ValueError, match="n_bins"):
        quantile_bins(X, 1)
