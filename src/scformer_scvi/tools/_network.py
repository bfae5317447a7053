"""Comparison of two gene-gene networks (edge tables)."""

from __future__ import annotations

from typing import Literal

import pandas as pd

_EDGE_COLUMNS = ("source", "target", "weight")


def compare_gene_networks(
    net_a: pd.DataFrame, net_b: pd.DataFrame, how: Literal["inner", "outer"] = "inner"
) -> pd.DataFrame:
    """Edge-wise difference between two gene networks, largest changes first.

    Typical use: the attention networks of two groups of cells, e.g. control cells and cells
    with a gene knocked out, from :meth:`scformer_scvi.SCFormer.get_gene_network` with
    ``groupby=``::

        net = model.get_gene_network("attention", groupby="perturbation", genes=genes)
        diff = compare_gene_networks(net[net.group == "control"], net[net.group == "STAT1"])

    Parameters
    ----------
    net_a, net_b
        Edge tables with columns ``source``, ``target``, ``weight`` (other columns are
        ignored). For a full comparison compute both over the same genes with ``top_k=None``.
    how
        ``"inner"``: edges present in both tables (an attention edge is missing where the
        two genes never share a cell of the group). ``"outer"``: edges of either table, a
        missing edge counting as weight 0.

    Returns
    -------
    One row per edge: ``source``, ``target``, ``weight_a``, ``weight_b``
    and ``difference`` (``weight_b - weight_a``), sorted by decreasing ``|difference|``.
    """
    if how not in ("inner", "outer"):
        raise ValueError(f"how must be 'inner' or 'outer', got {how!r}.")
    tables = []
    for name, net in (("net_a", net_a), ("net_b", net_b)):
        missing = [c for c in _EDGE_COLUMNS if c not in net.columns]
        if missing:
            raise KeyError(
                f"{name} lacks the columns {missing}; pass an edge table from "
                "SCFormer.get_gene_network (columns source, target, weight)."
            )
        if net.duplicated(["source", "target"]).any():
            raise ValueError(
                f"{name} has several rows for one edge: with a 'group' column, select one "
                "group first (net[net.group == g])."
            )
        tables.append(net.set_index(["source", "target"])["weight"])
    merged = pd.concat(tables, axis=1, keys=["weight_a", "weight_b"], join=how).fillna(0.0)
    merged["difference"] = merged["weight_b"] - merged["weight_a"]
    order = merged["difference"].abs().sort_values(ascending=False, kind="stable").index
    return merged.loc[order].reset_index()
