"""Validation of names and values that come from user data."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ._errors import InvalidInputError

# Names become path components: a whitelist keeps them safe on every file system.
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,127}$")


def check_name(name: object, what: str) -> str:
    """Return ``name`` if it is a safe identifier, else raise.

    Parameters
    ----------
    name
        A study id, table, layer or ``obsm`` name.
    what
        What the name is, for the error message.

    Returns
    -------
    str
        The name, unchanged.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInputError(
            f"invalid {what} {name!r}: use 1-128 characters from A-Z a-z 0-9 _ - . , starting "
            "with a letter or digit, without '..', '/' or spaces (it becomes a directory name)"
        )
    return name


def check_labels(labels: Iterable[object], what: str) -> np.ndarray:
    """Check that labels (gene or cell names) are unique, non-empty strings.

    Parameters
    ----------
    labels
        The labels, e.g. ``adata.var_names``.
    what
        What they are, for the error message ("gene names", "cell names of study 'x'").

    Returns
    -------
    numpy.ndarray
        The labels as an object array of ``str``.
    """
    arr = np.asarray(list(labels), dtype=object)
    if len(arr) == 0:
        raise InvalidInputError(f"no {what}: the input has no rows on that axis")
    bad = [i for i, v in enumerate(arr) if not isinstance(v, str) or not v.strip()]
    if bad:
        raise InvalidInputError(
            f"{len(bad)} empty or non-string {what} (first at position {bad[0]}: "
            f"{arr[bad[0]]!r}); give every entry a non-empty string name"
        )
    dup = pd.Index(arr).duplicated()
    if dup.any():
        examples = sorted(set(arr[dup]))[:5]
        raise InvalidInputError(
            f"{int(dup.sum())} duplicated {what}, e.g. {examples}; make them unique "
            "(e.g. AnnData.var_names_make_unique() / obs_names_make_unique())"
        )
    return arr


def check_counts(values: np.ndarray, what: str) -> None:
    """Refuse NaN, infinite or negative values in a table that holds counts.

    Parameters
    ----------
    values
        The stored (non-zero) values of a chunk.
    what
        Where they come from, for the error message.
    """
    if values.size == 0:
        return
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InvalidInputError(
            f"{what} contains NaN or infinite values; scBank stores count-like data in X and "
            "layers: pass raw counts, or leave this matrix out (layers=[...])"
        )
    if values.min() < 0:
        raise InvalidInputError(
            f"{what} contains negative values (min {values.min()}); scBank stores count-like "
            "data in X and layers: pass raw counts, or leave this matrix out (layers=[...])"
        )
