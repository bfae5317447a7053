"""Column dtypes of obs/var tables: recording them per study and unifying them across studies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Columns scBank adds to every cell's metadata.
CELL_ID, STUDY_ID, OBS_NAME = "cell_id", "study_id", "obs_name"
RESERVED_OBS = (CELL_ID, STUDY_ID, OBS_NAME)
#: Columns scBank adds to every gene annotation row.
GENE_ID, VAR_NAME = "gene_id", "var_name"
RESERVED_VAR = (GENE_ID, VAR_NAME)

DtypeSpec = dict[str, Any]


def describe(df: pd.DataFrame) -> dict[str, DtypeSpec]:
    """Describe each column's dtype as JSON-able data (categories included).

    Parameters
    ----------
    df
        An ``obs`` or ``var`` DataFrame.

    Returns
    -------
    dict
        ``{column: {"dtype": "category", "categories": [...], "ordered": bool}}`` for
        categoricals, ``{column: {"dtype": "<pandas dtype name>"}}`` otherwise.
    """
    out: dict[str, DtypeSpec] = {}
    for col, dt in df.dtypes.items():
        if isinstance(dt, pd.CategoricalDtype):
            out[str(col)] = {
                "dtype": "category",
                "categories": dt.categories.tolist(),
                "ordered": bool(dt.ordered),
            }
        else:
            out[str(col)] = {"dtype": str(dt)}
    return out


def to_dtype(spec: DtypeSpec) -> Any:
    """Return the pandas/numpy dtype a :func:`describe` entry stands for."""
    if spec["dtype"] == "category":
        return pd.CategoricalDtype(spec["categories"], ordered=spec["ordered"])
    return pd.api.types.pandas_dtype(spec["dtype"])


def restore(df: pd.DataFrame, specs: Mapping[str, DtypeSpec]) -> pd.DataFrame:
    """Cast the columns of ``df`` back to their recorded dtypes (in place, and return it)."""
    for col, spec in specs.items():
        if col in df.columns:
            df[col] = df[col].astype(to_dtype(spec))
    return df


def unify(specs: Sequence[Mapping[str, DtypeSpec]]) -> dict[str, Any]:
    """One dtype per column for a table that concatenates several studies.

    Categoricals merge their categories (in first-seen order), so codes mean the same in every
    study. A column some studies lack is filled with missing values, which turns integer
    columns into float64 and bool columns into object. Other mixes become object.

    Parameters
    ----------
    specs
        :func:`describe` output of each study, in bank order.

    Returns
    -------
    dict
        Column -> dtype, columns in first-seen order.
    """
    columns: dict[str, list[DtypeSpec]] = {}
    for s in specs:
        for col, spec in s.items():
            columns.setdefault(col, []).append(spec)
    out: dict[str, Any] = {}
    for col, found in columns.items():
        missing = len(found) < len(specs)
        if all(f["dtype"] == "category" for f in found):
            cats = list(dict.fromkeys(c for f in found for c in f["categories"]))
            ordered = all(f["ordered"] and f["categories"] == cats for f in found)
            out[col] = pd.CategoricalDtype(cats, ordered=ordered)
            continue
        dtypes = [to_dtype(f) for f in found]
        if all(isinstance(d, np.dtype) and d.kind in "iuf" for d in dtypes):
            dt = np.result_type(*dtypes)
            out[col] = np.dtype(np.float64) if missing and dt.kind in "iu" else dt
        elif all(d == dtypes[0] for d in dtypes) and not (
            missing and isinstance(dtypes[0], np.dtype) and dtypes[0].kind == "b"
        ):
            out[col] = dtypes[0]
        else:
            out[col] = np.dtype(object)
    return out


def conform(df: pd.DataFrame, dtypes: Mapping[str, Any]) -> pd.DataFrame:
    """Give ``df`` exactly the columns and dtypes of ``dtypes`` (missing columns are NA)."""
    out = {}
    for col, dt in dtypes.items():
        if col in df.columns:
            out[col] = df[col].astype(dt)
        else:
            out[col] = pd.Series([None] * len(df), index=df.index, dtype=object).astype(dt)
    return pd.DataFrame(out, index=df.index)
