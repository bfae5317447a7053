"""Checks that an AnnData holds what scFormer needs: raw counts, non-empty cells."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

_CHUNK_ROWS = 20_000


def validate_counts(
    adata: AnnData, layer: str | None = None, allow_non_integer: bool = False
) -> None:
    """Raise a clear error if ``adata`` (or one of its layers) is not a usable count matrix.

    Checks, in order: the AnnData is not empty, the layer exists, values are finite,
    non-negative and (unless ``allow_non_integer``) integer-valued, and no cell is empty. The
    matrix is read in row chunks, so backed AnnData is checked without loading it whole.

    Parameters
    ----------
    adata
        Cells × genes.
    layer
        Layer holding raw counts; ``None`` for ``adata.X``.
    allow_non_integer
        Accept non-integer values (e.g. ambient-corrected or imputed counts).

    Raises
    ------
    ValueError
        Naming the problem, how many values or cells it affects, and the fix.
    KeyError
        If ``layer`` is not a layer of ``adata``.
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes). Pass an AnnData "
            "with at least one cell and one gene."
        )
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    if layer is not None and layer not in adata.layers:
        raise KeyError(
            f"layer={layer!r} is not a layer of this AnnData (layers: {list(adata.layers)}). "
            "Pass the name of the layer holding raw counts, or layer=None to use adata.X."
        )
    matrix = adata.X if layer is None else adata.layers[layer]
    if matrix is None:
        raise ValueError(f"{where} is empty (None). Put raw counts there or pass layer=.")

    n_nonfinite = n_negative = n_fractional = 0
    example_fraction = None
    cell_totals = np.zeros(adata.n_obs)
    for start in range(0, adata.n_obs, _CHUNK_ROWS):
        chunk = matrix[start : start + _CHUNK_ROWS]
        values = chunk.data if sp.issparse(chunk) else np.asarray(chunk).ravel()
        finite = np.isfinite(values)
        n_nonfinite += int((~finite).sum())
        n_negative += int((values[finite] < 0).sum())
        fractional = finite & (values != np.round(values))
        if fractional.any() and example_fraction is None:
            example_fraction = float(values[fractional][0])
        n_fractional += int(fractional.sum())
        # Only used when every value is finite and non-negative (otherwise we raise first).
        cell_totals[start : start + _CHUNK_ROWS] = np.asarray(chunk.sum(axis=1)).ravel()

    if n_nonfinite:
        raise ValueError(
            f"{where} contains {n_nonfinite} NaN or infinite values. SCFormer needs raw counts: "
            "fix or drop the affected cells/genes (e.g. fill missing counts with 0)."
        )
    if n_negative:
        raise ValueError(
            f"{where} contains {n_negative} negative values, so it does not hold raw counts "
            "(it looks scaled or batch-corrected). Pass layer= naming the layer with raw counts, "
            "e.g. keep them with adata.layers['counts'] = adata.X.copy() before normalising."
        )
    if n_fractional and not allow_non_integer:
        raise ValueError(
            f"{where} contains {n_fractional} non-integer values (e.g. {example_fraction:.4g}), "
            "so it looks normalised or log-transformed rather than raw counts. Pass layer= naming "
            "the layer with raw counts, or allow_non_integer=True if these are deliberately "
            "non-integer counts (e.g. ambient-RNA corrected)."
        )
    n_empty = int((cell_totals == 0).sum())
    if n_empty:
        raise ValueError(
            f"{n_empty} of {adata.n_obs} cells have no counts in {where}, so they carry no "
            "tokens. Remove them first, e.g. sc.pp.filter_cells(adata, min_counts=1)."
        )
