"""Pretraining benchmark: every masked-value head x value encoding on Baron human.

Trains scFormer on 80% of the Baron human cells (2000 highly variable genes) for each
combination of ``likelihood`` and ``value_encoding`` and evaluates on the 20% held-out cells:

- masked-value error: mean squared error, on the log1p(cp10k) scale, of the GEP head's
  predictions for 40% masked tokens (fixed masks);
- imputation: Pearson correlation of ``get_normalized_expression`` (from the cell embedding)
  with the observed log1p(cp10k) over all 2000 genes: all entries, median per gene, median
  per cell.

Reference points for the same held-out cells: predicting every gene's mean log1p(cp10k) over
the training cells (masked-value error on the same masks, and imputation correlation).

Then measures training throughput, fp32 vs bf16 autocast and length-bucketed vs padded
minibatches, in the same run (max_seq_len 512, so that cell lengths vary as in real data).

Run: ``.venv/bin/python benchmarks/pretraining.py [--epochs N] [--part heads|throughput]``;
writes (or, for one part, updates) ``results/pretraining.json``.
"""

from __future__ import annotations

import argparse
import json
import time

import anndata as ad
import numpy as np
import scanpy as sc
import scvi
import torch
from _common import RESULTS, SHARED_DATA, write_results
from lightning.pytorch.callbacks import Callback

from scformer_scvi import SCFormer
from scformer_scvi.data import TokenizeCollate
from scformer_scvi.metrics import expression_correlation

MODEL = {"d_model": 64, "n_heads": 4, "n_layers": 2, "d_ff": 128, "max_seq_len": 192}
ENCODINGS = ("binned", "continuous", "count_classes", "scaling")
LIKELIHOODS = ("mse", "binned", "zinb", "hurdle")


class EpochTimer(Callback):
    def __init__(self):
        self.times = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self.start)


def load() -> tuple[ad.AnnData, np.ndarray, np.ndarray]:
    adata = ad.read_h5ad(SHARED_DATA / "baron2016_human_pancreas_came.h5ad")
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat_v3", subset=True)
    sc.pp.filter_cells(adata, min_counts=1)
    order = np.random.default_rng(0).permutation(adata.n_obs)
    n_test = adata.n_obs // 5
    return adata, np.sort(order[n_test:]), np.sort(order[:n_test])


@torch.inference_mode()
def masked_value_error(
    model: SCFormer, adata: ad.AnnData, rows: np.ndarray, gene_means: np.ndarray | None = None
) -> float:
    """GEP error (log1p cp10k scale) on held-out cells with fixed 40% masks.

    With ``gene_means`` (per vocabulary id), the error of predicting those means instead, on
    the same masked tokens.
    """
    torch.manual_seed(123)
    collate = TokenizeCollate(model._tokenizer(adata), mask_ratio=0.4, stochastic=False)
    loader = model._make_data_loader(adata, indices=rows, batch_size=128, collate_fn=collate)
    model.module.eval()
    total = count = 0.0
    for tensors in loader:
        mask = tensors["mlm_mask"]
        n = mask.sum().item()
        if gene_means is None:
            _, _, loss = model.module(tensors)
            total += loss.extra_metrics["gep_log_mse"].item() * n
        else:
            observed = torch.log1p(tensors["values"] / tensors["library_size"][:, None] * 1e4)
            predicted = torch.as_tensor(gene_means, dtype=torch.float32)[tensors["gene_ids"]]
            total += ((predicted - observed)[mask] ** 2).sum().item()
        count += n
    return total / count


def gene_mean_baseline(adata, train_rows, test_rows, observed) -> dict:
    """Scores of predicting each gene's mean log1p(cp10k) over the training cells."""
    scvi.settings.seed = 0
    train = adata[train_rows].copy()
    SCFormer.setup_anndata(train)
    model = SCFormer(train, n_zero_genes=32, **MODEL)  # only for its tokenizer and masks
    model.is_trained_ = True
    normalised = train.copy()
    sc.pp.normalize_total(normalised, target_sum=1e4)
    sc.pp.log1p(normalised)
    means = np.asarray(normalised.X.mean(axis=0)).ravel()
    by_id = np.zeros(len(model.vocab_))
    by_id[model.vocab_.lookup(train.var_names)] = means
    test = adata[test_rows].copy()
    scores = expression_correlation(observed, np.broadcast_to(means, observed.shape))
    return {
        "heldout_masked_log_mse": round(
            masked_value_error(model, test, np.arange(test.n_obs), by_id), 4
        ),
        "imputation_pearson_all": round(scores["overall"], 4),
        "imputation_pearson_median_cell": round(scores["median_per_cell"], 4),
        "note": "per-gene correlation is undefined for a constant prediction",
    }


def evaluate(encoding: str, likelihood: str, adata, train_rows, test_rows, observed, epochs):
    scvi.settings.seed = 0
    train = adata[train_rows].copy()
    SCFormer.setup_anndata(train)
    model = SCFormer(
        train, n_zero_genes=32, value_encoding=encoding, likelihood=likelihood, **MODEL
    )
    timer = EpochTimer()
    model.train(
        max_epochs=epochs,
        batch_size=64,
        mvc_zero_fraction=0.3,
        callbacks=[timer],
        enable_progress_bar=False,
    )
    test = adata[test_rows].copy()
    imputed = model.get_normalized_expression(test)
    scores = expression_correlation(observed, imputed.to_numpy())
    history = model.history
    return {
        "value_encoding": encoding,
        "likelihood": likelihood,
        "heldout_masked_log_mse": round(masked_value_error(model, test, np.arange(test.n_obs)), 4),
        "imputation_pearson_all": round(scores["overall"], 4),
        "imputation_pearson_median_gene": round(scores["median_per_gene"], 4),
        "imputation_pearson_median_cell": round(scores["median_per_cell"], 4),
        "final_train_loss": round(float(history["train_loss"].iloc[-1, 0]), 4),
        "seconds_per_epoch": round(float(np.mean(timer.times[1:] or timer.times)), 2),
    }


def throughput(adata, train_rows, epochs: int = 3) -> list[dict]:
    runs = []
    for precision in ("32", "bf16-mixed"):
        for bucketing in (True, False):
            scvi.settings.seed = 0
            train = adata[train_rows].copy()
            SCFormer.setup_anndata(train)
            model = SCFormer(train, n_zero_genes=32, **{**MODEL, "max_seq_len": 512})
            timer = EpochTimer()
            model.train(
                max_epochs=epochs,
                batch_size=64,
                precision=precision,
                length_bucketing=bucketing,
                train_size=1.0,
                callbacks=[timer],
                enable_progress_bar=False,
            )
            seconds = float(np.mean(timer.times[1:]))
            runs.append(
                {
                    "precision": precision,
                    "length_bucketing": bucketing,
                    "train_cells_per_s": round(train.n_obs / seconds, 1),
                }
            )
            print(runs[-1])
    reference = next(r for r in runs if r["precision"] == "32" and not r["length_bucketing"])
    base = reference["train_cells_per_s"]
    for run in runs:
        run["speedup_vs_fp32_padded"] = round(run["train_cells_per_s"] / base, 2)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--part", choices=["all", "heads", "throughput"], default="all")
    args = parser.parse_args()
    adata, train_rows, test_rows = load()
    observed = adata[test_rows].copy()
    sc.pp.normalize_total(observed, target_sum=1e4)
    sc.pp.log1p(observed)
    observed = observed.X.toarray()
    path = RESULTS / "pretraining.json"
    payload = json.loads(path.read_text()) if args.part != "all" and path.exists() else {}
    payload.pop("machine", None)
    payload.update({"dataset": "Baron human, 2000 HVGs; 80% train / 20% held out", "model": MODEL})
    if args.part in ("all", "heads"):
        results = []
        for encoding in ENCODINGS:
            for likelihood in LIKELIHOODS:
                results.append(
                    evaluate(
                        encoding, likelihood, adata, train_rows, test_rows, observed, args.epochs
                    )
                )
                print(results[-1])
        payload.update({"epochs": args.epochs, "heads_x_encodings": results})
    if args.part in ("all", "throughput"):
        payload["gene_mean_baseline"] = gene_mean_baseline(adata, train_rows, test_rows, observed)
        print(payload["gene_mean_baseline"])
        payload["throughput"] = throughput(adata, train_rows)
    write_results("pretraining", payload)


if __name__ == "__main__":
    main()
