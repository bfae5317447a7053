"""Test helpers: small synthetic studies with every kind of column, and comparisons."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scbank import DataBank

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# Small parts and row groups so that a few hundred cells span several of each.
LAYOUT = {"row_group_size": 16, "part_size": 64}
CHUNK = 32


def make_adata(
    n_obs: int = 150,
    genes: Sequence[str] | None = None,
    seed: int = 0,
    dense: bool = False,
    prefix: str = "cell",
) -> ad.AnnData:
    """A study with categorical/ordered/bool/int/float/str obs, var, layers, obsm and uns."""
    rng = np.random.default_rng(seed)
    genes = list(genes) if genes is not None else [f"g{i}" for i in range(40)]
    x = sp.random(n_obs, len(genes), density=0.2, format="csr", random_state=rng)
    x.data = rng.integers(1, 30, x.nnz).astype(np.float32)
    x.data[x.indptr[3] : x.indptr[4]] = 0  # an empty cell must survive
    x.eliminate_zeros()
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(
                rng.choice(["B", "T", "NK"], n_obs), categories=["B", "T", "NK", "unused"]
            ),
            "stage": pd.Categorical(
                rng.choice(["early", "late"], n_obs), categories=["early", "late"], ordered=True
            ),
            "n_counts": np.asarray(x.sum(1)).ravel().astype(np.float32),
            "qc_pass": rng.random(n_obs) > 0.2,
            "n_genes": np.diff(x.indptr).astype(np.int64),
            "donor": rng.choice(["d1", "d2"], n_obs).astype(object),
            "score": rng.normal(size=n_obs),
        },
        index=pd.Index([f"{prefix}{i}" for i in range(n_obs)], name="barcode"),
    )
    var = pd.DataFrame(
        {
            "highly_variable": rng.random(len(genes)) > 0.5,
            "mean": rng.random(len(genes)),
            "symbol": [g.upper() for g in genes],
        },
        index=pd.Index(genes),
    )
    counts = x.copy()
    counts.data = counts.data * 2
    obsm = {
        "X_pca": rng.normal(size=(n_obs, 5)).astype(np.float32),
        "guides": sp.random(n_obs, 7, density=0.3, format="csr", random_state=rng, dtype=np.int32),
    }
    return ad.AnnData(
        X=x.toarray() if dense else x,
        obs=obs,
        var=var,
        layers={"counts": counts},
        obsm=obsm,
        uns={"note": "synthetic", "params": {"k": 3, "arr": np.arange(3)}},
    )


def new_bank(path: Path, **kw: object) -> DataBank:
    """A bank with the small test layout."""
    return DataBank.create(path, **{**LAYOUT, **kw})


def dense(m: sp.spmatrix | np.ndarray) -> np.ndarray:
    """Densify for comparisons."""
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def assert_same_study(back: ad.AnnData, orig: ad.AnnData) -> None:
    """What comes out of bank.study(...).to_memory() must equal what went in."""
    pd.testing.assert_frame_equal(back.obs, orig.obs)
    pd.testing.assert_frame_equal(back.var, orig.var)
    assert back.X.dtype == np.float32
    np.testing.assert_array_equal(dense(back.X), dense(orig.X).astype(np.float32))
    assert set(back.layers) == set(orig.layers)
    for k in orig.layers:
        np.testing.assert_array_equal(dense(back.layers[k]), dense(orig.layers[k]))
    assert set(back.obsm) == set(orig.obsm)
    for k, v in orig.obsm.items():
        assert back.obsm[k].dtype == v.dtype
        assert sp.issparse(back.obsm[k]) == sp.issparse(v)
        np.testing.assert_array_equal(dense(back.obsm[k]), dense(v))
    assert back.uns == json.loads(json.dumps(orig.uns, default=lambda a: a.tolist()))


def union_matrix(bank: DataBank, studies: Sequence[ad.AnnData]) -> sp.csr_matrix:
    """The expected bank.X: studies stacked in the union gene space (absent genes are 0)."""
    col = {g: i for i, g in enumerate(bank.var_names)}
    blocks = []
    for a in studies:
        x = sp.csr_matrix(a.X, dtype=np.float32)
        cols = np.array([col[g] for g in a.var_names])
        blocks.append(sp.csr_matrix((x.data, cols[x.indices], x.indptr), shape=(a.n_obs, len(col))))
    return sp.vstack(blocks, format="csr")
