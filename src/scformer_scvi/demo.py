"""The README demo: pretrain scFormer on the bundled Baron pancreas data and evaluate it.

Run ``python -m scformer_scvi.demo --output outputs`` (or ``make demo``). It writes:

- ``baron_scformer.h5ad``: the cells with ``obsm["X_scFormer"]``, ``obsm["X_pca"]`` and UMAPs;
- ``model/``: the trained model (``SCFormer.load("model", adata)``);
- ``umap_scformer.png`` / ``umap_pca.png``: UMAPs coloured by cell type and by donor;
- ``scib_results.png``: the scib-metrics results table;
- ``metrics.json``: cross-donor kNN label transfer and scib-metrics scores, scFormer vs PCA;
- ``training_history.csv``: losses per epoch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import scanpy as sc
import scvi

from scformer_scvi import LATENT_KEY, SCFormer
from scformer_scvi.datasets import baron_pancreas
from scformer_scvi.metrics import cross_batch_knn_accuracy, integration
from scformer_scvi.plotting import umap

BATCH_KEY = "donor"
LABEL_KEY = "cell_ontology_class"
# The configuration the integration tuning chose (benchmarks/integration.py, which trains it
# longer with adversarial batch removal, its best result; the demo keeps 12 epochs to stay
# short): raw-count classes, batch token, per-donor embedding statistics, MVC and ECS.
MODEL = {
    "d_model": 128,
    "n_heads": 4,
    "n_layers": 2,
    "d_ff": 256,
    "max_seq_len": 256,
    "n_zero_genes": 64,
    "value_encoding": "count_classes",
    "mvc_weight": 3.0,
    "ecs_weight": 3.0,
    "batch_token": True,
    "domain_norm": True,
}
# Its training options besides epochs: half of the genes the MVC objective predicts from the
# cell embedding are genes the cell does not express.
TRAIN = {"batch_size": 64, "mvc_zero_fraction": 0.5}


def run_demo(
    output: str | Path = "outputs",
    n_top_genes: int = 2000,
    max_epochs: int = 12,
    seed: int = 0,
) -> dict:
    """Pretrain a small scFormer on CPU (self-supervised), embed the cells and score them.

    Parameters
    ----------
    output
        Directory for the results (created).
    n_top_genes
        Highly variable genes used as the model's vocabulary.
    max_epochs
        Training epochs.
    seed
        Seed for scvi-tools (weights, data split, masking).

    Returns
    -------
    The metrics written to ``metrics.json``.
    """
    started = time.perf_counter()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    scvi.settings.seed = seed

    adata = baron_pancreas()
    adata.layers["counts"] = adata.X.copy()
    sc.pp.highly_variable_genes(
        adata, n_top_genes=n_top_genes, flavor="seurat_v3", layer="counts", subset=True
    )
    sc.pp.filter_cells(adata, min_counts=1)

    # Self-supervised: no labels_key, so the cell types scored below never train the model
    # (with labels it would also fit a cell-type classifier on its embedding).
    SCFormer.setup_anndata(adata, layer="counts", batch_key=BATCH_KEY)
    model = SCFormer(adata, **MODEL)
    print(model)
    model.train(max_epochs=max_epochs, **TRAIN)
    adata.obsm[LATENT_KEY] = model.get_latent_representation()
    model.save(output / "model", overwrite=True)

    # Unintegrated baseline: PCA of log-normalised expression.
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=50, random_state=seed)

    metrics: dict = {"n_cells": adata.n_obs, "n_genes": adata.n_vars, "embeddings": {}}
    for key in (LATENT_KEY, "X_pca"):
        metrics["embeddings"][key] = {
            "cross_donor_knn": cross_batch_knn_accuracy(
                adata.obsm[key], adata.obs[LABEL_KEY], adata.obs[BATCH_KEY]
            )
        }
    scores = integration(
        adata,
        [LATENT_KEY, "X_pca"],
        batch_key=BATCH_KEY,
        label_key=LABEL_KEY,
        table_png=output / "scib_results.png",
    )
    for key, row in scores.iterrows():
        metrics["embeddings"][key]["scib"] = row.to_dict()

    for key, name in ((LATENT_KEY, "scformer"), ("X_pca", "pca")):
        sc.pp.neighbors(adata, use_rep=key, key_added=name, random_state=seed)
        sc.tl.umap(adata, neighbors_key=name, random_state=seed)
        adata.obsm[f"X_umap_{name}"] = adata.obsm.pop("X_umap")
        umap(
            adata,
            color=[LABEL_KEY, BATCH_KEY],
            basis=f"X_umap_{name}",
            title=f"Baron human pancreas: {key}",
            path=output / f"umap_{name}.png",
        )
    final = model.history["train_loss"].iloc[-1, 0]
    metrics["training"] = {
        "epochs": max_epochs,
        "final_train_loss": float(final),
        "final_validation_loss": float(model.history["validation_loss"].iloc[-1, 0]),
    }
    metrics["wall_time_s"] = round(time.perf_counter() - started, 1)

    history = model.history["train_loss"].join(
        [frame for key, frame in model.history.items() if key != "train_loss"]
    )
    history.to_csv(output / "training_history.csv")
    adata.write_h5ad(output / "baron_scformer.h5ad", compression="gzip")
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    _report(output, metrics)
    return metrics


def _report(output: Path, metrics: dict) -> None:
    print("\nscFormer demo results")
    for key, values in metrics["embeddings"].items():
        knn = values["cross_donor_knn"]
        scib = values["scib"]
        print(
            f"  {key:<11} cross-donor kNN accuracy {knn['accuracy']:.3f} "
            f"(macro-F1 {knn['macro_f1']:.3f}); scib Total {scib['Total']:.3f} "
            f"(bio {scib['Bio conservation']:.3f}, batch {scib['Batch correction']:.3f})"
        )
    print(f"Wrote (in {metrics['wall_time_s']} s):")
    for path in sorted(output.iterdir()):
        print(f"  {path}")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="outputs", help="output directory")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs")
    parser.add_argument("--n-top-genes", type=int, default=2000, help="highly variable genes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run_demo(args.output, n_top_genes=args.n_top_genes, max_epochs=args.epochs, seed=args.seed)


if __name__ == "__main__":
    main()
