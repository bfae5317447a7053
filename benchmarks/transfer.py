"""Transfer benchmark: cell-type annotation across donors and across species.

(a) Baron human pancreas, leave one donor out (4 folds): the cell types of the held-out donor
    are predicted from the other three donors' labels. Methods:

    - scFormer head: scFormer trained on the three donors with ``labels_key`` (masked value
      prediction + the classification head), ``model.predict`` on the held-out donor;
    - scFormer kNN: :func:`scformer_scvi.tools.knn_label_transfer` on the same model's
      embedding (reference = training donors);
    - scANVI: ``SCANVI.from_scvi_model`` on an scVI fitted to all cells (held-out donor
      unlabelled), as in scvi-tools' tutorials; scVI and scANVI see the held-out cells;
    - kNN on PCA: 50 principal components of log-normalised highly variable genes (fitted on
      all cells), same kNN vote.

    scFormer never sees the held-out donor in training; scANVI (semi-supervised) and PCA do.

(b) Cross-species: reference Baron human, query Baron mouse; cell types are scored on the mouse
    cells whose type also exists in human (``cell_ontology_class``). Mouse labels are never
    used for training.

    - expansion: scFormer reference on 2000 human HVGs; the mouse query (2000 mouse HVGs plus
      the mouse orthologs of the reference genes) is mapped with ``load_query_data``: mouse
      genes become new tokens initialised from their 1:1 human ortholog
      (``gene_matches_1v1_human2mouse.csv``), the mean embedding when there is none, and only
      they are fine-tuned on the mouse cells (``freeze=True``), by masked value prediction.
      Reported before ("zero-shot") and after fine-tuning;
    - ortholog-restricted: both species restricted to 1:1 orthologs, mouse genes renamed to
      their human ortholog; scFormer trained on human (2000 HVGs among the orthologs) predicts
      mouse directly; scANVI on human + mouse over the same genes (mouse unlabelled).

    scANVI has no counterpart of vocabulary expansion (scArches query mapping needs the
    reference genes), so it appears in the restricted setting only.

Accuracy and macro-F1 (over the classes present in truth or prediction) per fold/seed; means
and standard deviations over seeds of the per-seed means. Run:
``.venv/bin/python benchmarks/transfer.py [--quick] [--parts a b] [--seeds 0 1 2]``; writes
``results/transfer.json``.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scvi
from _common import SHARED_DATA, write_results
from sklearn.metrics import accuracy_score, f1_score

from scformer_scvi import SCFormer
from scformer_scvi.tools import knn_label_transfer

LABELS = "cell_ontology_class"
BATCH = "donor"
UNKNOWN = "Unknown"
N_TOP_GENES = 2000
K = 15
ORTHOLOGS = SHARED_DATA / "gene_matches_1v1_human2mouse.csv"
HUMAN_COLUMN, MOUSE_COLUMN = "human.gene.name", "gene.name"

SCFORMER = {
    "model": {
        "d_model": 128,
        "n_heads": 4,
        "n_layers": 2,
        "d_ff": 256,
        "max_seq_len": 256,
        "n_zero_genes": 64,
    },
    "train": {"max_epochs": 8, "batch_size": 64},
    "query_epochs": 4,
}
SCVI_MODEL = {"n_latent": 30, "n_layers": 2}
SCVI_EPOCHS, SCANVI_EPOCHS = 200, 20
QUICK = {
    "model": {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_seq_len": 64},
    "max_epochs": 1,
    "scvi_epochs": 2,
}


def scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": round(float(accuracy_score(truth, predicted)), 4),
        "macro_f1": round(float(f1_score(truth, predicted, average="macro")), 4),
    }


def with_counts(adata: ad.AnnData) -> ad.AnnData:
    adata.X = adata.X.astype(np.float32)
    adata.layers["counts"] = adata.X.copy()
    return adata


def hvg(adata: ad.AnnData, n: int = N_TOP_GENES) -> ad.AnnData:
    adata = adata.copy()
    sc.pp.highly_variable_genes(adata, n_top_genes=n, flavor="seurat_v3", layer="counts")
    adata = adata[:, adata.var["highly_variable"]].copy()
    sc.pp.filter_cells(adata, min_counts=1)
    return adata


# ------------------------------------------------------------------------------- methods
def scformer_config(quick: bool) -> tuple[dict, dict, int]:
    model, train = dict(SCFORMER["model"]), dict(SCFORMER["train"])
    query_epochs = SCFORMER["query_epochs"]
    if quick:
        model.update(QUICK["model"])
        train["max_epochs"] = query_epochs = QUICK["max_epochs"]
    return model, train, query_epochs


def train_scformer(adata: ad.AnnData, seed: int, quick: bool) -> SCFormer:
    scvi.settings.seed = seed
    model_kwargs, train, _ = scformer_config(quick)
    SCFormer.setup_anndata(adata, layer="counts", batch_key=BATCH, labels_key=LABELS)
    model = SCFormer(adata, **model_kwargs)
    model.train(**train, enable_progress_bar=False)
    return model


def scanvi_predict(adata: ad.AnnData, labelled: np.ndarray, seed: int, quick: bool) -> np.ndarray:
    """scVI on all cells, then scANVI with the unlabelled cells' labels hidden."""
    scvi.settings.seed = seed
    adata = adata.copy()
    adata.obs["scanvi_labels"] = np.where(labelled, adata.obs[LABELS].astype(str), UNKNOWN)
    scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key=BATCH)
    vae = scvi.model.SCVI(adata, **SCVI_MODEL)
    epochs = QUICK["scvi_epochs"] if quick else SCVI_EPOCHS
    vae.train(max_epochs=epochs, enable_progress_bar=False)
    model = scvi.model.SCANVI.from_scvi_model(
        vae, unlabeled_category=UNKNOWN, labels_key="scanvi_labels"
    )
    model.train(
        max_epochs=QUICK["scvi_epochs"] if quick else SCANVI_EPOCHS, enable_progress_bar=False
    )
    return np.asarray(model.predict(adata[~labelled])).astype(str)


def pca_embedding(adata: ad.AnnData) -> np.ndarray:
    normalised = adata.copy()
    normalised.X = normalised.layers["counts"].copy()
    sc.pp.normalize_total(normalised, target_sum=1e4)
    sc.pp.log1p(normalised)
    sc.pp.scale(normalised, max_value=10)
    sc.tl.pca(normalised, n_comps=50, random_state=0)
    return normalised.obsm["X_pca"]


# ------------------------------------------------------------------------------- (a)
def part_a(seeds: list[int], quick: bool) -> dict:
    adata = hvg(with_counts(ad.read_h5ad(SHARED_DATA / "baron2016_human_pancreas_came.h5ad")))
    truth = adata.obs[LABELS].astype(str).to_numpy()
    donors = sorted(adata.obs[BATCH].unique())
    if quick:
        donors = donors[:1]
    pca = pca_embedding(adata)
    runs = []
    for seed in seeds:
        for donor in donors:
            test = (adata.obs[BATCH] == donor).to_numpy()
            start = time.perf_counter()
            model = train_scformer(adata[~test].copy(), seed, quick)
            scformer_s = time.perf_counter() - start
            held_out = adata[test].copy()
            head = model.predict(held_out)
            knn = knn_label_transfer(
                model.get_latent_representation(),
                truth[~test],
                model.get_latent_representation(held_out),
                k=K,
            )["label"].to_numpy()
            start = time.perf_counter()
            scanvi = scanvi_predict(adata, ~test, seed, quick)
            scanvi_s = time.perf_counter() - start
            pca_knn = knn_label_transfer(pca[~test], truth[~test], pca[test], k=K)["label"]
            run = {
                "seed": seed,
                "held_out": donor,
                "n_cells": int(test.sum()),
                "scFormer head": scores(truth[test], head),
                "scFormer kNN": scores(truth[test], knn),
                "scANVI": scores(truth[test], scanvi),
                "kNN on PCA": scores(truth[test], pca_knn.to_numpy()),
                "seconds": {"scFormer": round(scformer_s), "scANVI": round(scanvi_s)},
            }
            print(run, flush=True)
            runs.append(run)
    methods = ["scFormer head", "scFormer kNN", "scANVI", "kNN on PCA"]
    return {"runs": runs, "summary": summarise(runs, methods)}


# ------------------------------------------------------------------------------- (b)
def part_b(seeds: list[int], quick: bool) -> dict:
    human = with_counts(ad.read_h5ad(SHARED_DATA / "baron2016_human_pancreas_came.h5ad"))
    mouse = with_counts(ad.read_h5ad(SHARED_DATA / "baron2016_mouse_pancreas_came.h5ad"))
    table = pd.read_csv(ORTHOLOGS, dtype=str)
    table = table[
        table[HUMAN_COLUMN].isin(human.var_names) & table[MOUSE_COLUMN].isin(mouse.var_names)
    ]
    to_human = dict(zip(table[MOUSE_COLUMN], table[HUMAN_COLUMN], strict=True))
    shared = sorted(set(human.obs[LABELS].astype(str)) & set(mouse.obs[LABELS].astype(str)))
    mouse_truth = mouse.obs[LABELS].astype(str).to_numpy()
    scored = np.isin(mouse_truth, shared)

    # Expansion: human HVGs; mouse HVGs + mouse orthologs of those genes.
    human_exp = hvg(human)
    mouse_genes = set(hvg(mouse).var_names) | {
        m for m, h in to_human.items() if h in set(human_exp.var_names)
    }
    mouse_exp = mouse[:, [g for g in mouse.var_names if g in mouse_genes]].copy()
    keep = np.asarray(mouse_exp.layers["counts"].sum(axis=1)).ravel() > 0
    # Restricted: 1:1 orthologs only, mouse genes renamed to human symbols.
    human_res = hvg(human[:, table[HUMAN_COLUMN].to_numpy()].copy())
    mouse_res = mouse[:, [m for m, h in to_human.items() if h in set(human_res.var_names)]].copy()
    mouse_res.var_names = [to_human[m] for m in mouse_res.var_names]
    mouse_res = mouse_res[:, human_res.var_names].copy()
    keep &= np.asarray(mouse_res.layers["counts"].sum(axis=1)).ravel() > 0
    mouse_exp, mouse_res, truth = mouse_exp[keep].copy(), mouse_res[keep].copy(), mouse_truth[keep]
    scored = scored[keep]
    # The expansion query is fine-tuned: without labels, so nothing trains on mouse labels.
    # (The restricted arm trains nothing on mouse cells; its labels only ride along.)
    del mouse_exp.obs[LABELS]

    runs = []
    for seed in seeds:
        run = {"seed": seed, "n_scored": int(scored.sum()), "seconds": {}}
        start = time.perf_counter()
        reference = train_scformer(human_exp.copy(), seed, quick)
        ref_latent = reference.get_latent_representation()
        ref_labels = human_exp.obs[LABELS].astype(str).to_numpy()
        query = SCFormer.load_query_data(
            mouse_exp.copy(),
            reference,
            freeze=True,
            init_from=ORTHOLOGS,
            source_column=HUMAN_COLUMN,
            target_column=MOUSE_COLUMN,
        )
        n_new = len(query.vocab_) - len(reference.vocab_)
        run["expansion_new_tokens"] = n_new
        for name in ("zero-shot", "fine-tuned"):
            if name == "fine-tuned":
                _, _, query_epochs = scformer_config(quick)
                scvi.settings.seed = seed
                query.train(max_epochs=query_epochs, batch_size=64, enable_progress_bar=False)
            head = query.predict()
            knn = knn_label_transfer(ref_latent, ref_labels, query.get_latent_representation(), k=K)
            run[f"scFormer expansion ({name}) head"] = scores(truth[scored], head[scored])
            run[f"scFormer expansion ({name}) kNN"] = scores(
                truth[scored], knn["label"].to_numpy()[scored]
            )
        run["seconds"]["scFormer expansion"] = round(time.perf_counter() - start)

        start = time.perf_counter()
        restricted = train_scformer(human_res.copy(), seed, quick)
        head = restricted.predict(mouse_res)
        knn = knn_label_transfer(
            restricted.get_latent_representation(),
            human_res.obs[LABELS].astype(str).to_numpy(),
            restricted.get_latent_representation(mouse_res),
            k=K,
        )
        run["scFormer restricted head"] = scores(truth[scored], head[scored])
        run["scFormer restricted kNN"] = scores(truth[scored], knn["label"].to_numpy()[scored])
        run["seconds"]["scFormer restricted"] = round(time.perf_counter() - start)

        start = time.perf_counter()
        both = ad.concat(
            {"human": human_res, "mouse": mouse_res.copy()}, label="species", index_unique="-"
        )
        both.obs[LABELS] = np.concatenate([human_res.obs[LABELS].astype(str), truth])
        predicted = scanvi_predict(both, (both.obs["species"] == "human").to_numpy(), seed, quick)
        run["scANVI restricted"] = scores(truth[scored], predicted[scored])
        run["seconds"]["scANVI restricted"] = round(time.perf_counter() - start)
        print(run, flush=True)
        runs.append(run)
    methods = [k for k in runs[0] if isinstance(runs[0][k], dict) and "macro_f1" in runs[0][k]]
    return {
        "shared_cell_types": shared,
        "genes": {
            "expansion_reference": human_exp.n_vars,
            "expansion_query": mouse_exp.n_vars,
            "restricted": human_res.n_vars,
        },
        "runs": runs,
        "summary": summarise(runs, methods),
    }


def summarise(runs: list[dict], methods: list[str]) -> dict:
    """Mean and sd over seeds of each seed's mean over folds."""
    frame = pd.DataFrame(
        [{"seed": run["seed"], "method": m, **run[m]} for run in runs for m in methods if m in run]
    )
    per_seed = frame.groupby(["method", "seed"]).mean(numeric_only=True)
    summary = per_seed.groupby("method").agg(["mean", "std"]).round(4)
    return {
        method: {
            f"{metric}_{stat}": (None if pd.isna(v) else float(v))
            for (metric, stat), v in row.items()
        }
        for method, row in summary.iterrows()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, one fold: a smoke run")
    parser.add_argument("--parts", nargs="+", default=["a", "b"], choices=["a", "b"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    options = parser.parse_args()
    seeds = options.seeds[:1] if options.quick else options.seeds
    warnings.filterwarnings("ignore", category=UserWarning)
    payload = {"quick": options.quick, "seeds": seeds, "config": copy.deepcopy(SCFORMER)}
    payload["config"].update(scvi=SCVI_MODEL, scvi_epochs=SCVI_EPOCHS, scanvi_epochs=SCANVI_EPOCHS)
    start = time.perf_counter()
    for part, run in (("a", part_a), ("b", part_b)):
        if part in options.parts:
            part_start = time.perf_counter()
            payload[f"part_{part}"] = run(seeds, options.quick)
            payload[f"part_{part}"]["wall_seconds"] = round(time.perf_counter() - part_start)
    payload["wall_seconds"] = round(time.perf_counter() - start)
    write_results("transfer_quick" if options.quick else "transfer", payload)


if __name__ == "__main__":
    main()
