"""Tokenization throughput on all 2142 Baron human cells (20125 genes).

Compares, in one run, the vectorised tokenizer with a per-cell Python loop doing the same work
(the shape of scGPT's preprocessing), for inference (deterministic) and training (random gene
sampling, zero genes, masking) settings.

Run: ``.venv/bin/python benchmarks/tokenization.py``; writes ``results/tokenization.json``.
"""

from __future__ import annotations

import statistics
import time

import anndata as ad
import numpy as np
import scipy.sparse as sp
from _common import SHARED_DATA, write_results
from scipy.stats import rankdata

from scformer_scvi.data import GeneVocab, Tokenizer, mask_tokens

REPEATS = 5
BATCH = 64


def per_cell_loop(X: sp.csr_matrix, ids: np.ndarray, max_seq_len: int, n_bins: int) -> list:
    """Reference: bin and tokenize one cell at a time."""
    out = []
    for i in range(X.shape[0]):
        row = X.getrow(i)
        values, columns = row.data, row.indices
        bins = 1 + np.floor((rankdata(values) - 0.5) / values.size * (n_bins - 1))
        keep = np.argsort(-values, kind="stable")[: max_seq_len - 1]
        out.append((ids[columns[keep]], values[keep], np.minimum(bins[keep], n_bins - 1)))
    return out


def timed(fn, repeats: int = REPEATS) -> float:
    """Median wall time of ``fn()`` in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(X: sp.csr_matrix, vocab: GeneVocab, ids: np.ndarray, max_seq_len: int) -> dict:
    """Cells/s of the tokenizer (inference and training settings) and of the per-cell loop."""
    n = X.shape[0]
    batches = [X[i : i + BATCH] for i in range(0, n, BATCH)]
    tokenizer = Tokenizer(ids, vocab.pad_id, vocab.cls_id, max_seq_len=max_seq_len)
    train_tokenizer = Tokenizer(
        ids, vocab.pad_id, vocab.cls_id, max_seq_len=max_seq_len, n_zero_genes=64
    )
    rng = np.random.default_rng(0)

    def inference():
        for batch in batches:
            tokenizer(batch)

    def training():
        for batch in batches:
            tokens = train_tokenizer(batch, rng)
            mask_tokens(tokens.padding_mask, 0.4, rng)

    t_inference = timed(inference)
    t_training = timed(training)
    t_loop = timed(lambda: per_cell_loop(X, ids, max_seq_len, 51), repeats=2)
    return {
        "inference_cells_per_s": round(n / t_inference),
        "training_cells_per_s": round(n / t_training),
        "per_cell_loop_cells_per_s": round(n / t_loop),
        "speedup_vs_loop": round(t_loop / t_inference, 1),
    }


def main() -> None:
    adata = ad.read_h5ad(SHARED_DATA / "baron2016_human_pancreas_came.h5ad")
    X = sp.csr_matrix(adata.X)
    vocab = GeneVocab.from_anndata(adata)
    ids = vocab.lookup(adata.var_names)
    results = {
        "n_cells": X.shape[0],
        "n_genes": X.shape[1],
        "median_nnz": float(np.median(np.diff(X.indptr))),
        "batch_size": BATCH,
    }
    for max_seq_len in (512, 1200):
        results[f"max_seq_len_{max_seq_len}"] = measure(X, vocab, ids, max_seq_len)
        print(max_seq_len, results[f"max_seq_len_{max_seq_len}"])
    write_results("tokenization", results)


if __name__ == "__main__":
    main()
