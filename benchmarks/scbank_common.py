"""Shared pieces of the scBank benchmarks: a synthetic multi-study generator and helpers.

The generator mimics droplet data: per-cell non-zero counts are log-normal (median 350,
clipped to 100..2000), genes are drawn by a Zipf-like popularity (so panels share their common
genes), counts are geometric (mostly 1s), and every study measures its own panel of 2k-20k
genes out of a 24k-gene universe.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

RESULTS = Path(__file__).resolve().parent / "results"
UNIVERSE = 24_000
PANEL_SIZES = (18_000, 6_000, 12_000, 2_500, 20_000, 9_000, 15_000, 4_000)
CELL_TYPES = np.array(["T", "B", "NK", "mono", "DC", "platelet", "erythroid", "stem"])


def parse_args(
    description: str, sizes: tuple[int, ...] = (100_000, 300_000, 1_000_000)
) -> argparse.Namespace:
    """``--quick`` (small smoke run) and ``--sizes`` (cells per bank, default ``sizes``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small smoke run (seconds)")
    p.add_argument("--sizes", type=int, nargs="+", help="bank sizes in cells")
    p.add_argument("--tmp", default=None, help="scratch directory (default: system temp)")
    args = p.parse_args()
    if args.sizes is None:
        args.sizes = [20_000, 50_000] if args.quick else list(sizes)
    return args


def n_studies(n_cells: int) -> int:
    """Studies per bank: more studies for bigger banks (4..8)."""
    return int(np.clip(n_cells // 125_000, 4, len(PANEL_SIZES)))


def study_sizes(n_cells: int) -> list[int]:
    """Cells per study, roughly equal, summing to ``n_cells``."""
    k = n_studies(n_cells)
    return [n_cells * (i + 1) // k - n_cells * i // k for i in range(k)]


def popularity(n: int) -> np.ndarray:
    """Zipf-like gene popularity (sums to 1)."""
    p = 1.0 / np.arange(1, n + 1) ** 0.9
    return p / p.sum()


def panel(study: int, seed: int = 0) -> np.ndarray:
    """Universe indices of a study's genes (popular genes are in most panels)."""
    rng = np.random.default_rng([seed, study, 1])
    size = PANEL_SIZES[study % len(PANEL_SIZES)]
    return np.sort(rng.choice(UNIVERSE, size=size, replace=False, p=popularity(UNIVERSE)))


def gene_names(indices: np.ndarray) -> list[str]:
    """Names of universe genes."""
    return [f"G{i:05d}" for i in indices]


def counts(n_cells: int, n_genes: int, rng: np.random.Generator) -> sp.csr_matrix:
    """A block of synthetic counts over a panel of ``n_genes`` genes (float32 CSR)."""
    nnz = np.clip(rng.lognormal(np.log(350), 0.6, n_cells), 100, min(2000, n_genes // 2))
    nnz = nnz.astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(nnz)])
    # popularity is shuffled per panel so that a study's top genes are not all low ids
    p = popularity(n_genes)[rng.permutation(n_genes)]
    indices = rng.choice(n_genes, size=int(indptr[-1]), p=p).astype(np.int32)
    data = rng.geometric(0.55, size=len(indices)).astype(np.float32)
    x = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))
    x.sum_duplicates()  # a gene drawn twice in a cell counts twice
    return x


def study(index: int, n_cells: int, seed: int = 0) -> ad.AnnData:
    """One synthetic study (counts in X, cell type and donor in obs), generated in blocks."""
    rng = np.random.default_rng([seed, index, 2])
    genes = panel(index, seed)
    blocks = [counts(min(50_000, n_cells - s), len(genes), rng) for s in range(0, n_cells, 50_000)]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(CELL_TYPES, n_cells)),
            "donor": pd.Categorical(rng.choice([f"s{index}_d{d}" for d in range(4)], n_cells)),
        },
        index=[f"s{index}_c{i}" for i in range(n_cells)],
    )
    return ad.AnnData(
        X=sp.vstack(blocks, format="csr"), obs=obs, var=pd.DataFrame(index=gene_names(genes))
    )


def studies(n_cells: int, seed: int = 0) -> Iterator[tuple[str, ad.AnnData]]:
    """``(study_id, AnnData)`` of a bank of ``n_cells`` cells, one study at a time."""
    for i, n in enumerate(study_sizes(n_cells)):
        yield f"study{i}", study(i, n, seed)


@contextmanager
def scratch(base: str | None) -> Iterator[Path]:
    """A temporary directory, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="scbank-bench-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def disk_bytes(path: Path, pattern: str = "*") -> int:
    """Total size of files under ``path`` matching ``pattern``."""
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def throughput(fn: Callable[[], int], min_seconds: float, max_calls: int) -> dict[str, float]:
    """Call ``fn`` (returns items handled) until ``min_seconds`` or ``max_calls``; rate/s."""
    items, calls, start = 0, 0, time.perf_counter()
    while calls < max_calls and (calls < 3 or time.perf_counter() - start < min_seconds):
        items += fn()
        calls += 1
    seconds = time.perf_counter() - start
    return {"items_per_s": items / seconds, "calls": calls, "seconds": seconds}


def write_results(name: str, args: argparse.Namespace, results: Any) -> Path:
    """Write ``benchmarks/results/<name>.json`` (``<name>_quick.json`` for --quick)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}{'_quick' if args.quick else ''}.json"
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "sizes": args.sizes,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {path}")
    return path
