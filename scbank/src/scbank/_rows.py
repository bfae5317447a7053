"""Row selection: normalising indexers, gathering list-encoded rows, assembling CSR."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp


def normalize_index(index: Any, n: int, what: str = "row") -> np.ndarray:
    """Turn an int, slice, int array or boolean mask into positions (int64).

    Parameters
    ----------
    index
        The indexer, with numpy semantics (negative ints count from the end).
    n
        Length of the axis.
    what
        Axis name, for error messages.

    Returns
    -------
    numpy.ndarray
        Positions in ``[0, n)``, in the requested order (duplicates kept).
    """
    if isinstance(index, slice):
        return np.arange(*index.indices(n), dtype=np.int64)
    if isinstance(index, (int, np.integer)):
        index = [index]
    arr = np.asarray(index)
    if arr.ndim == 2 and 1 in arr.shape:  # np.ix_-style open mesh, as anndata passes it
        arr = arr.ravel()
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"boolean {what} mask has length {arr.shape}, expected ({n},)")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise IndexError(
            f"{what} index must be an int, slice, 1-d int array or boolean mask, got {arr.dtype}"
        )
    pos = arr.astype(np.int64)
    bad = (pos < -n) | (pos >= n)
    if bad.any():
        raise IndexError(f"{what} index {pos[bad][0]} is out of range for length {n}")
    return np.where(pos < 0, pos + n, pos)


def gather(
    offsets: np.ndarray, arrays: Sequence[np.ndarray], rows: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Gather rows of list-encoded columns (shared ``offsets``) in the order of ``rows``.

    Returns
    -------
    lengths
        Entries per gathered row.
    flats
        For each array, the gathered rows' entries, concatenated.
    """
    starts = offsets[rows].astype(np.int64)
    lengths = offsets[rows + 1].astype(np.int64) - starts
    ends = np.cumsum(lengths)
    flat = np.arange(ends[-1] if len(ends) else 0, dtype=np.int64)
    flat += np.repeat(starts - (ends - lengths), lengths)
    return lengths, [np.asarray(a[flat]) for a in arrays]


def assemble_csr(
    pieces: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    n_rows: int,
    n_cols: int,
    dtype: np.dtype,
) -> sp.csr_matrix:
    """Assemble gathered pieces into one CSR matrix in output-row order.

    Parameters
    ----------
    pieces
        ``(out_rows, lengths, indices, values)``: where each gathered row goes, its length
        and the concatenated entries. Every output row appears in exactly one piece.
    n_rows, n_cols
        Shape of the result.
    dtype
        dtype of the result's values.
    """
    if not pieces:
        return sp.csr_matrix((n_rows, n_cols), dtype=dtype)
    out_rows = np.concatenate([p[0] for p in pieces])
    lengths = np.concatenate([p[1] for p in pieces])
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    block_order = sp.csr_matrix(
        (
            np.concatenate([p[3] for p in pieces]).astype(dtype, copy=False),
            np.concatenate([p[2] for p in pieces]),
            indptr,
        ),
        shape=(len(lengths), n_cols),
    )
    # Rows were gathered file by file; one row permutation restores the requested order.
    return block_order[np.argsort(out_rows, kind="stable")]
