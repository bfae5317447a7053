"""scBank build benchmark: append throughput from .h5ad files, and append time vs bank size.

For each bank size, synthetic studies are written to .h5ad files (not timed), then appended
one by one with ``DataBank.append_anndata(path)`` (streamed, backed). A fixed 20k-cell study is
then appended to the full bank, to show that append time does not grow with the bank.

Run: ``python benchmarks/scbank_build.py [--quick]`` -> ``benchmarks/results/scbank_build.json``
"""

from __future__ import annotations

import time

import scbank_common as common

from scbank import DataBank

FIXED_STUDY_CELLS = 20_000


def build(n_cells: int, args) -> dict:
    with common.scratch(args.tmp) as tmp:
        inputs = []
        for sid, adata in common.studies(n_cells):
            path = tmp / f"{sid}.h5ad"
            adata.write_h5ad(path)
            inputs.append((sid, path, adata.n_obs, adata.X.nnz, adata.n_vars))
        extra = tmp / "fixed.h5ad"
        common.study(50, FIXED_STUDY_CELLS).write_h5ad(extra)

        bank = DataBank.create(tmp / "bank.scb")
        appends = []
        start = time.perf_counter()
        for sid, path, n, _, _ in inputs:
            t0 = time.perf_counter()
            bank.append_anndata(path, sid)
            appends.append({"study": sid, "cells": n, "seconds": time.perf_counter() - t0})
        build_s = time.perf_counter() - start

        fixed = []
        for k in range(2):  # the same 20k-cell study, twice, on the full bank
            t0 = time.perf_counter()
            bank.append_anndata(extra, f"fixed{k}")
            fixed.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        bank.verify()
        verify_s = time.perf_counter() - t0
        nnz = sum(i[3] for i in inputs)
        row = {
            "n_cells": n_cells,
            "n_studies": len(inputs),
            "panel_sizes": [i[4] for i in inputs],
            "union_genes": bank.n_vars,
            "nnz_per_cell": nnz / n_cells,
            "build_seconds": build_s,
            "build_cells_per_s": n_cells / build_s,
            "appends": appends,
            "fixed_append_cells": FIXED_STUDY_CELLS,
            "fixed_append_seconds": fixed,
            "verify_seconds": verify_s,
            "h5ad_bytes": sum(i[1].stat().st_size for i in inputs),
            "bank_parquet_bytes": common.disk_bytes(bank.path, "*.parquet"),
            "bank_ipc_twin_bytes": common.disk_bytes(bank.path, "*.arrow"),
        }
    print(
        f"{n_cells:>9} cells: build {row['build_cells_per_s']:,.0f} cells/s, "
        f"fixed 20k append {min(fixed):.2f} s"
    )
    return row


def main() -> None:
    args = common.parse_args(__doc__)
    common.write_results("scbank_build", args, [build(n, args) for n in args.sizes])


if __name__ == "__main__":
    main()
