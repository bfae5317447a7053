"""Agreement between predicted and observed expression."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _as_array(values) -> np.ndarray:
    return np.asarray(values.to_numpy() if isinstance(values, pd.DataFrame) else values, float)


def rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``.

    NaN for a row where either side is constant.
    """
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(axis=1) / denominator, np.nan)


def expression_correlation(observed, predicted) -> dict[str, np.ndarray | float]:
    """Pearson correlations of predicted with observed expression (cells x genes).

    Parameters
    ----------
    observed, predicted
        Arrays or DataFrames of the same shape, on the same scale (e.g. ``log1p(cp10k)``).

    Returns
    -------
    ``per_gene`` and ``per_cell`` correlations (NaN where constant), ``overall`` (all entries
    pooled) and the medians ``median_per_gene`` / ``median_per_cell``.
    """
    observed, predicted = _as_array(observed), _as_array(predicted)
    if observed.shape != predicted.shape:
        raise ValueError(
            f"observed {observed.shape} and predicted {predicted.shape} must have the same shape."
        )
    per_gene = rowwise_pearson(observed.T, predicted.T)
    per_cell = rowwise_pearson(observed, predicted)
    overall = float(rowwise_pearson(observed.reshape(1, -1), predicted.reshape(1, -1))[0])
    return {
        "per_gene": per_gene,
        "per_cell": per_cell,
        "overall": overall,
        "median_per_gene": float(np.nanmedian(per_gene)),
        "median_per_cell": float(np.nanmedian(per_cell)),
    }
