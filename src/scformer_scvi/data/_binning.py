"""Deterministic per-cell quantile binning of expression values."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def quantile_bins(X: sp.csr_matrix, n_bins: int = 51) -> np.ndarray:
    """Bin every stored value of a CSR matrix by its quantile within its own row (cell).

    Zeros go to bin 0. The positive values of a cell are ranked, tied values get their mid-rank
    (the mean of the ranks they span), and the mid-rank quantile ``q = (rank + 0.5) / n_pos``
    maps to bin ``1 + floor(q * (n_bins - 1))``. Equal values therefore always share one bin and
    the result depends only on the cell itself: no random tie-breaking (unlike scGPT), no
    dependence on the minibatch, and invariance to any per-cell monotone transform, so binning
    raw counts equals binning ``log1p(normalize_total(counts))``.

    Parameters
    ----------
    X
        Cells × genes, CSR, non-negative.
    n_bins
        Total number of bins including the zero bin (bins ``1 .. n_bins - 1`` hold positives).

    Returns
    -------
    Integer bins aligned with ``X.data`` (same length and order).
    """
    X = sp.csr_matrix(X)
    bins = np.zeros(X.data.shape[0], dtype=np.int64)
    positive = X.data > 0
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))[positive]
    values = X.data[positive]
    bins[positive] = bins_from_order(rows, values, descending_order(rows, values), n_bins)
    return bins


def descending_order(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Permutation sorting entries by row, then by decreasing value (stable: ties keep order)."""
    return np.lexsort((-values, rows))


def bins_from_order(
    rows: np.ndarray, values: np.ndarray, order: np.ndarray, n_bins: int
) -> np.ndarray:
    """Quantile bins of positive ``values`` (see :func:`quantile_bins`).

    Parameters
    ----------
    rows, values
        Row (cell) and value of every positive entry; rows must be non-decreasing.
    order
        :func:`descending_order` of the entries (shared with the tokenizer's gene selection,
        so one sort serves both).
    n_bins
        Total number of bins including the zero bin.
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be at least 2 (zero bin + one bin), got {n_bins}.")
    if order.size == 0:
        return np.zeros(0, dtype=np.int64)
    n_rows = int(rows[-1]) + 1
    n_pos = np.bincount(rows, minlength=n_rows)
    row_start = np.concatenate([[0], np.cumsum(n_pos)[:-1]])
    sorted_rows, sorted_values = rows[order], values[order]
    # A run is a maximal stretch of equal values within one cell: its members share a rank.
    new_run = np.ones(order.size, dtype=bool)
    new_run[1:] = (sorted_rows[1:] != sorted_rows[:-1]) | (sorted_values[1:] != sorted_values[:-1])
    run_id = np.cumsum(new_run) - 1
    run_first = np.flatnonzero(new_run)
    run_last = np.append(run_first[1:], order.size) - 1
    from_top = 0.5 * (run_first[run_id] + run_last[run_id]) - row_start[sorted_rows]
    n = n_pos[sorted_rows]
    quantile = (n - 1 - from_top + 0.5) / n  # ascending mid-rank quantile
    sorted_bins = np.minimum(1 + np.floor(quantile * (n_bins - 1)).astype(np.int64), n_bins - 1)
    bins = np.empty_like(sorted_bins)
    bins[order] = sorted_bins
    return bins
