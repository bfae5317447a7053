"""Training and inference throughput (cells/s) and peak RSS of a small scFormer on CPU.

Baron human pancreas, 2000 highly variable genes, d_model=128, 2 layers, 4 heads,
max_seq_len=256, batch 64. fp32 and bf16 autocast run in the same invocation, each in its own
subprocess so that peak RSS is measured per configuration; their ratio is the comparable number
on a noisy machine.

Run: ``.venv/bin/python benchmarks/training.py``; writes ``results/training.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

EPOCHS = 3  # the first epoch is warm-up and not counted
PRECISIONS = ("32", "bf16-mixed")


def run_one(precision: str) -> dict:
    import anndata as ad
    import scanpy as sc
    import scvi
    from _common import SHARED_DATA, peak_rss_mb
    from lightning.pytorch.callbacks import Callback

    from scformer_scvi import SCFormer

    class EpochTimer(Callback):
        def __init__(self):
            self.times = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.times.append(time.perf_counter() - self.start)

    scvi.settings.seed = 0
    adata = ad.read_h5ad(SHARED_DATA / "baron2016_human_pancreas_came.h5ad")
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat_v3", subset=True)
    sc.pp.filter_cells(adata, min_counts=1)
    SCFormer.setup_anndata(adata, batch_key="donor")
    model = SCFormer(adata, d_model=128, n_heads=4, n_layers=2, d_ff=256, max_seq_len=256)
    timer = EpochTimer()
    model.train(
        max_epochs=EPOCHS,
        batch_size=64,
        train_size=1.0,
        precision=precision,
        callbacks=[timer],
        enable_progress_bar=False,
        check_val_every_n_epoch=None,
    )
    measured = timer.times[1:]
    train_rate = adata.n_obs * len(measured) / sum(measured)
    start = time.perf_counter()
    model.get_latent_representation(batch_size=128)
    embed_rate = adata.n_obs / (time.perf_counter() - start)
    return {
        "precision": precision,
        "n_cells": adata.n_obs,
        "train_cells_per_s": round(train_rate, 1),
        "embed_cells_per_s": round(embed_rate, 1),
        "epoch_seconds": [round(t, 2) for t in timer.times],
        "peak_rss_mb": round(peak_rss_mb()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", choices=PRECISIONS, help="internal: run one configuration")
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one)))
        return
    from _common import write_results

    runs = []
    for precision in PRECISIONS:
        out = subprocess.run(
            [sys.executable, __file__, "--one", precision],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        runs.append(json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:]))
        print(runs[-1])
    fp32, bf16 = runs
    write_results(
        "training",
        {
            "config": {
                "dataset": "Baron human, 2000 HVGs",
                "d_model": 128,
                "n_layers": 2,
                "n_heads": 4,
                "d_ff": 256,
                "max_seq_len": 256,
                "batch_size": 64,
            },
            "runs": runs,
            "bf16_over_fp32_train_speed": round(
                bf16["train_cells_per_s"] / fp32["train_cells_per_s"], 2
            ),
        },
    )


if __name__ == "__main__":
    main()
