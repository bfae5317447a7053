"""scBank random-minibatch read benchmark, side by side with backed .h5ad and in-memory CSR.

For each bank size, the same cells are stored three ways: an scBank, one .h5ad with the same
union-gene CSR matrix (read with ``anndata.read_h5ad(backed="r")``), and that CSR in memory.
Each measurement reads batches of 128 random rows (sorted, as a loader would) and reports
cells/s; a few batches are checked to be equal across the three. The page cache is warm for
both files (they were just written). At the smallest size a bank without Arrow IPC twins
(``random_access=False``, parquet row groups only) is measured too.

Run: ``python benchmarks/scbank_read.py [--quick]`` -> ``benchmarks/results/scbank_read.json``
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import scbank_common as common
import scipy.sparse as sp

from scbank import DataBank

BATCH = 128


def _bank_and_union(path, n_cells, random_access=True):
    """Build a bank from the synthetic studies and the same data as one union-space CSR."""
    bank = DataBank.create(path, random_access=random_access)
    blocks = []
    for sid, adata in common.studies(n_cells):
        bank.append_anndata(adata, sid)
        ids = bank.var.loc[adata.var_names, "gene_id"].to_numpy()
        x = adata.X
        blocks.append(sp.csr_matrix((x.data, ids[x.indices], x.indptr), shape=x.shape))
    union = sp.vstack([sp.csr_matrix(b, shape=(b.shape[0], bank.n_vars)) for b in blocks])
    union = sp.csr_matrix(union)
    union.sort_indices()
    return DataBank.open(path), union


def _rate(read, n_cells, seed, min_seconds=4.0, max_calls=3000):
    rng = np.random.default_rng(seed)

    def one():
        read(np.sort(rng.choice(n_cells, BATCH, replace=False)))
        return BATCH

    return common.throughput(one, min_seconds, max_calls)["items_per_s"]


def measure(n_cells, args) -> dict:
    with common.scratch(args.tmp) as tmp:
        bank, union = _bank_and_union(tmp / "bank.scb", n_cells)
        ad.AnnData(union).write_h5ad(tmp / "union.h5ad")
        backed = ad.read_h5ad(tmp / "union.h5ad", backed="r")
        check = np.random.default_rng(99)
        for _ in range(5):
            rows = np.sort(check.choice(n_cells, BATCH, replace=False))
            assert (bank.X[rows] != union[rows]).nnz == 0
            assert (backed.X[rows] != union[rows]).nnz == 0
        row = {
            "n_cells": n_cells,
            "nnz_per_cell": union.nnz / n_cells,
            "batch_size": BATCH,
            "bank_cells_per_s": _rate(lambda r: bank.X[r], n_cells, 1),
            "h5ad_backed_cells_per_s": _rate(lambda r: backed.X[r], n_cells, 1),
            "in_memory_cells_per_s": _rate(lambda r: union[r], n_cells, 1),
        }
        backed.file.close()
        if n_cells == args.sizes[0]:
            plain, _ = _bank_and_union(tmp / "plain.scb", n_cells, random_access=False)
            row["bank_parquet_only_cells_per_s"] = _rate(
                lambda r: plain.X[r], n_cells, 1, min_seconds=2.0
            )
    row["bank_vs_h5ad"] = row["bank_cells_per_s"] / row["h5ad_backed_cells_per_s"]
    row["bank_vs_in_memory"] = row["bank_cells_per_s"] / row["in_memory_cells_per_s"]
    print(
        f"{n_cells:>9} cells: bank {row['bank_cells_per_s']:,.0f}, "
        f"h5ad {row['h5ad_backed_cells_per_s']:,.0f}, memory {row['in_memory_cells_per_s']:,.0f} "
        f"cells/s (bank/h5ad {row['bank_vs_h5ad']:.1f}x)"
    )
    return row


def main() -> None:
    args = common.parse_args(__doc__)
    common.write_results("scbank_read", args, [measure(n, args) for n in args.sizes])


if __name__ == "__main__":
    main()
