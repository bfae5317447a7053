"""Transfer benchmark: cell-type annotation across donors and across species.

scFormer, like scVI for scANVI, is first fitted self-supervised (no labels) to all Baron human
cells, once per seed; every labelled task then fine-tunes a copy of it with a cell-type head
(``SCFormer.load_query_data(..., freeze=False, labels_key=...)``).

(a) Baron human pancreas, leave one donor out (4 folds): the cell types of the held-out donor
    are predicted from the other three donors' labels.

    - scFormer head: the pretrained model fine-tuned on the three donors with the
      classification head (plus masked value prediction), ``predict`` on the held-out donor.
      The head's loss weighs cell types equally (``class_weight="balanced"``): Baron has
      four T cells and a few Schwann, epsilon and mast cells among 2142, which an unweighted
      loss all but ignores (head macro-F1, 3 seeds: 0.698 unweighted, 0.803 balanced; in
      part b the expansion head's was 0.552 unweighted and 0.496 balanced in seed 0, and is
      0.549 +- 0.048 balanced over 3 seeds);
    - scFormer kNN: :func:`scformer_scvi.tools.knn_label_transfer` on that model's embedding;
    - scFormer head+kNN: ``predict(method="head+knn")``, the average of the two above's
      class probabilities and vote shares (they err on different rare cells);
    - scFormer kNN (self-supervised): the same vote on the pretrained, label-free embedding;
    - scANVI: ``SCANVI.from_scvi_model`` on an scVI fitted to all cells, the held-out donor
      unlabelled, as in scvi-tools' tutorials;
    - kNN on PCA: 50 principal components of the scaled log-normalised genes (all cells).

    All methods see the held-out cells' counts (self-supervised pretraining, scVI, PCA); none
    sees their labels.

(b) Cross-species: reference Baron human, query Baron mouse; scored on the mouse cells whose
    ``cell_ontology_class`` also exists in human. Mouse labels are never used for training.

    - scFormer expansion: the pretrained model fine-tuned with labels on all human cells (2000
      HVGs); the mouse query (the mouse genes whose 1:1 human ortholog,
      ``gene_matches_1v1_human2mouse.csv``, is a reference gene) is mapped with
      ``load_query_data(freeze=True)``: its genes become new tokens initialised from their
      ortholog; only they are then trained, by masked value prediction on the mouse cells.
      Scored before ("zero-shot") and after this fine-tuning. The reference model is not
      retrained: this is how a pretrained model meets a new species;
    - scFormer expansion with symbol matches: the same, the query panel also holding the mouse
      genes missing from the 1:1 table whose symbol, ignoring case, is a reference gene's
      (``Ppy``, ``Hhex``; ``init_from=[table, "symbol"]``);
    - scFormer expansion with unmatched genes: the 1:1 panel plus the 2000 mouse HVGs, whose
      tokens start at the mean embedding when they have no ortholog in the reference: what
      tokens without a meaningful initialisation do to the mapping;
    - scFormer restricted: both species restricted to 1:1 orthologs (the human HVGs that have
      one; mouse genes renamed to their human ortholog); a scFormer is pretrained
      self-supervised on the human and mouse cells together (batch = donor, so each mouse
      donor gets its own embedding statistics), fine-tuned with labels on the human cells and
      predicts the mouse cells: the information scANVI gets below;
    - scANVI restricted: scVI + scANVI on human + mouse cells over the same genes (mouse
      unlabelled). scANVI has no counterpart of vocabulary expansion (scArches query mapping
      needs the reference's genes), so it appears in the restricted setting only.

    Each scFormer arm is scored by its head, by kNN and by head+kNN (as in part a; the
    expansion query's ``predict`` takes the fine-tuned human model as ``knn_reference``).

A donor whose cells were not in the last training run (the held-out donor in (a), the mouse
donors after fine-tuning on human cells, new query batches before query training) has its
embedding statistics re-estimated from its own cells with
:meth:`~scformer_scvi.SCFormer.update_batch_statistics` before it is embedded or predicted:
unlabelled cells only, as every method here sees them. Part (a) also scores the three
scFormer rows with the held-out donor given the mean of the training donors' statistics
instead (``estimate_from="other_batches"``, rows marked "other donors' statistics"): a
donor's own statistics also carry its cell-type composition (human4: 71 ductal cells, one
acinar cell), which standardisation turns into a shift.

Accuracy and macro-F1 (over the classes present in truth or prediction), per fold and seed;
summaries are means and standard deviations over seeds of the per-seed means. Part (b) also
gives the macro-F1 over the 10 shared cell types (``macro_f1_shared_types``): a mouse cell
called by a human-only type (acinar, epsilon, mast) is an error in both, but the first also
adds that type to the average with F1 0, so a single such cell lowers it by 0.05-0.07. Run:
``.venv/bin/python benchmarks/transfer.py [--quick] [--parts a b] [--seeds 0 1 2]
[--gene-init pca]``; writes ``results/transfer.json`` (``transfer_quick.json`` with ``--quick``,
``transfer_gene_init_pca.json`` with ``--gene-init pca``) after every part, keeping
the runs of other seeds and parts already there when the configuration is the same.
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scvi
from _common import (
    SCFORMER_MODEL,
    SCFORMER_TRAIN,
    SHARED_DATA,
    earlier_results,
    write_results,
)
from sklearn.metrics import accuracy_score, f1_score

from scformer_scvi import SCFormer
from scformer_scvi.data import GENE_INITS, GeneVocab
from scformer_scvi.tools import knn_label_transfer

LABELS = "cell_ontology_class"
BATCH = "donor"
UNKNOWN = "Unknown"
N_TOP_GENES = 2000
K = 15
ORTHOLOGS = SHARED_DATA / "gene_matches_1v1_human2mouse.csv"
HUMAN_COLUMN, MOUSE_COLUMN = "human.gene.name", "gene.name"

PRECISION = "bf16-mixed"  # as in the integration benchmark
# Fine-tuning is as long as the demo's training: with 2 epochs the cell-type head was still
# learning (held-out donor accuracy 0.71-0.75 in the first folds, below kNN on its embedding).
EPOCHS = {"pretrain": 10, "fine_tune": 10, "query": 4}
# Suffix of the part-(a) rows whose held-out donor is standardised with the training donors'
# mean statistics (update_batch_statistics(estimate_from="other_batches")).
OTHER_DONORS = ", other donors' statistics"
CLASS_WEIGHT = "balanced"  # of the fine-tuning's classification loss (see part a)
SCVI_MODEL = {"n_latent": 30, "n_layers": 2}
SCVI_EPOCHS, SCANVI_EPOCHS = 200, 20
QUICK_MODEL = {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_seq_len": 64}


@dataclass
class Settings:
    model: dict
    epochs: dict
    scvi_epochs: int
    scanvi_epochs: int

    @classmethod
    def make(cls, quick: bool, gene_init: str = "random") -> Settings:
        # The default adds no key, so results written before the option existed still match.
        model = {**SCFORMER_MODEL, **({} if gene_init == "random" else {"gene_init": gene_init})}
        if quick:
            return cls({**model, **QUICK_MODEL}, dict.fromkeys(EPOCHS, 1), 2, 2)
        return cls(model, dict(EPOCHS), SCVI_EPOCHS, SCANVI_EPOCHS)


def scores(
    truth: np.ndarray, predicted: np.ndarray, types: list[str] | None = None
) -> dict[str, float]:
    """Accuracy and macro-F1 (over every type in truth or prediction).

    With ``types``, also ``macro_f1_shared_types``: the macro-F1 over those types only.
    """
    result = {
        "accuracy": round(float(accuracy_score(truth, predicted)), 4),
        "macro_f1": round(float(f1_score(truth, predicted, average="macro")), 4),
    }
    if types is not None:
        f1 = f1_score(truth, predicted, labels=types, average="macro")
        result["macro_f1_shared_types"] = round(float(f1), 4)
    return result


def read(name: str) -> ad.AnnData:
    adata = ad.read_h5ad(SHARED_DATA / name)
    adata.X = adata.X.astype(np.float32)
    adata.layers["counts"] = adata.X.copy()
    return adata


def hvg(adata: ad.AnnData, n: int = N_TOP_GENES) -> ad.AnnData:
    adata = adata.copy()
    sc.pp.highly_variable_genes(adata, n_top_genes=n, flavor="seurat_v3", layer="counts")
    return adata[:, adata.var["highly_variable"]].copy()


def expressing(*datasets: ad.AnnData) -> np.ndarray:
    """Cells with at least one count in every dataset (same cells, other gene panels)."""
    return np.logical_and.reduce(
        [np.asarray(d.layers["counts"].sum(axis=1)).ravel() > 0 for d in datasets]
    )


# ------------------------------------------------------------------------------- methods
def train(model: SCFormer, epochs: int, **kwargs) -> SCFormer:
    model.train(
        max_epochs=epochs,
        precision=PRECISION,
        enable_progress_bar=False,
        **SCFORMER_TRAIN,
        **kwargs,
    )
    return model


def pretrain(adata: ad.AnnData, seed: int, settings: Settings) -> SCFormer:
    """Self-supervised scFormer on all cells (masked value prediction, no labels)."""
    scvi.settings.seed = seed
    adata = adata.copy()
    SCFormer.setup_anndata(adata, layer="counts", batch_key=BATCH)
    model = SCFormer(adata, **settings.model)
    return train(model, settings.epochs["pretrain"])


def fine_tune(adata: ad.AnnData, pretrained: SCFormer, seed: int, settings: Settings) -> SCFormer:
    """The pretrained model with a cell-type head, fine-tuned on labelled cells."""
    scvi.settings.seed = seed
    model = SCFormer.load_query_data(adata.copy(), pretrained, freeze=False, labels_key=LABELS)
    return train(model, settings.epochs["fine_tune"], class_weight=CLASS_WEIGHT)


def fit_scvi(adata: ad.AnnData, seed: int, settings: Settings) -> scvi.model.SCVI:
    scvi.settings.seed = seed
    adata = adata.copy()
    scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key=BATCH)
    model = scvi.model.SCVI(adata, **SCVI_MODEL)
    model.train(max_epochs=settings.scvi_epochs, enable_progress_bar=False)
    return model


def scanvi_predict(
    vae: scvi.model.SCVI, labels: np.ndarray, labelled: np.ndarray, seed: int, settings: Settings
) -> np.ndarray:
    """scANVI from a fitted scVI, labels of the ``~labelled`` cells hidden; their predictions."""
    scvi.settings.seed = seed
    adata = vae.adata.copy()
    adata.obs["scanvi_labels"] = np.where(labelled, labels, UNKNOWN)
    model = scvi.model.SCANVI.from_scvi_model(
        vae, unlabeled_category=UNKNOWN, labels_key="scanvi_labels", adata=adata
    )
    model.train(max_epochs=settings.scanvi_epochs, enable_progress_bar=False)
    return np.asarray(model.predict(adata[~labelled])).astype(str)


def pca_embedding(adata: ad.AnnData) -> np.ndarray:
    normalised = adata.copy()
    sc.pp.normalize_total(normalised, target_sum=1e4)
    sc.pp.log1p(normalised)
    sc.pp.scale(normalised, max_value=10)
    sc.tl.pca(normalised, n_comps=50, random_state=0)
    return normalised.obsm["X_pca"]


def knn(ref: np.ndarray, labels: np.ndarray, query: np.ndarray) -> np.ndarray:
    return knn_label_transfer(ref, labels, query, k=K)["label"].to_numpy()


# ------------------------------------------------------------------------------- (a)
def part_a(human: ad.AnnData, pretrained: SCFormer, seed: int, settings: Settings, quick: bool):
    truth = human.obs[LABELS].astype(str).to_numpy()
    pca = pca_embedding(human)
    z = pretrained.get_latent_representation()
    start = time.perf_counter()
    vae = fit_scvi(human, seed, settings)
    scvi_seconds = time.perf_counter() - start
    runs = []
    for donor in sorted(human.obs[BATCH].unique())[: 1 if quick else None]:
        test = (human.obs[BATCH] == donor).to_numpy()
        start = time.perf_counter()
        tuned = fine_tune(human[~test], pretrained, seed, settings)
        held_out = human[test].copy()
        # The held-out donor had no cells in fine-tuning: its embedding statistics are still
        # those of the pretrained encoder. Re-estimate them from its cells (no labels), or
        # give it the mean of the three training donors' statistics.
        reference = tuned.get_latent_representation()
        predicted = {}
        for estimate_from, suffix in (("cells", ""), ("other_batches", OTHER_DONORS)):
            tuned.update_batch_statistics(held_out, estimate_from=estimate_from)
            predicted[f"scFormer head{suffix}"] = tuned.predict(held_out)
            predicted[f"scFormer head+kNN{suffix}"] = tuned.predict(
                held_out, method="head+knn", k=K
            )
            predicted[f"scFormer kNN{suffix}"] = knn(
                reference, truth[~test], tuned.get_latent_representation(held_out)
            )
        tune_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scanvi = scanvi_predict(vae, truth, ~test, seed, settings)
        scanvi_seconds = time.perf_counter() - start + scvi_seconds / 4
        run = {
            "seed": seed,
            "held_out": donor,
            "n_cells": int(test.sum()),
            **{name: scores(truth[test], labels) for name, labels in predicted.items()},
            "scFormer kNN (self-supervised)": scores(
                truth[test], knn(z[~test], truth[~test], z[test])
            ),
            "scANVI": scores(truth[test], scanvi),
            "kNN on PCA": scores(truth[test], knn(pca[~test], truth[~test], pca[test])),
            "seconds": {"scFormer fine-tune": round(tune_seconds), "scANVI": round(scanvi_seconds)},
        }
        print(run, flush=True)
        runs.append(run)
    return runs


# ------------------------------------------------------------------------------- (b)
@dataclass
class Species:
    """The panels of part (b): expansion (own genes) and ortholog-restricted (human names)."""

    human_expansion: ad.AnnData
    mouse_orthologs: ad.AnnData
    mouse_matched: ad.AnnData
    mouse_expansion: ad.AnnData
    human_restricted: ad.AnnData
    mouse_restricted: ad.AnnData
    mouse_truth: np.ndarray
    scored: np.ndarray
    shared: list[str]


def species_panels(human: ad.AnnData) -> Species:
    mouse = read("baron2016_mouse_pancreas_came.h5ad")
    table = pd.read_csv(ORTHOLOGS, dtype=str)
    in_both = table[HUMAN_COLUMN].isin(human.var_names) & table[MOUSE_COLUMN].isin(mouse.var_names)
    to_human = dict(zip(table[MOUSE_COLUMN][in_both], table[HUMAN_COLUMN][in_both], strict=True))
    reference_genes = set(human.var_names)
    with_ortholog = {m for m, h in to_human.items() if h in reference_genes}
    # The symbol rule of expand_vocab(init_from=[table, "symbol"]): same symbol ignoring case.
    symbol_ids = GeneVocab(list(human.var_names)).lookup(mouse.var_names, case_sensitive=False)
    matched = with_ortholog | set(mouse.var_names[symbol_ids >= 0])
    mouse_matched = mouse[:, [g for g in mouse.var_names if g in matched]].copy()
    mouse_genes = set(hvg(mouse).var_names) | with_ortholog
    mouse_expansion = mouse[:, [g for g in mouse.var_names if g in mouse_genes]].copy()
    restricted = [g for g in human.var_names if g in set(to_human.values())]
    to_mouse = {h: m for m, h in to_human.items()}
    mouse_restricted = mouse[:, [to_mouse[g] for g in restricted]].copy()
    mouse_restricted.var_names = restricted
    keep = expressing(mouse_expansion, mouse_restricted)
    mouse_expansion, mouse_restricted = mouse_expansion[keep].copy(), mouse_restricted[keep].copy()
    mouse_matched = mouse_matched[keep].copy()
    truth = mouse_restricted.obs[LABELS].astype(str).to_numpy()
    # The expansion query is fine-tuned: without labels, so nothing trains on mouse labels.
    # (Nothing trains on mouse cells in the restricted scFormer arm; scANVI hides them.)
    del mouse_expansion.obs[LABELS], mouse_matched.obs[LABELS]
    mouse_orthologs = mouse_restricted.copy()
    mouse_orthologs.var_names = [to_mouse[g] for g in restricted]
    del mouse_orthologs.obs[LABELS]
    human_restricted = human[:, restricted].copy()
    human_keep = expressing(human_restricted)
    shared = sorted(set(human.obs[LABELS].astype(str)) & set(truth))
    return Species(
        human,
        mouse_orthologs,
        mouse_matched,
        mouse_expansion,
        human_restricted[human_keep].copy(),
        mouse_restricted,
        truth,
        np.isin(truth, shared),
        shared,
    )


def part_b(data: Species, pretrained: SCFormer, seed: int, settings: Settings) -> dict:
    truth, scored = data.mouse_truth[data.scored], data.scored
    run = {"seed": seed, "n_scored": int(scored.sum()), "seconds": {}}

    start = time.perf_counter()
    reference = fine_tune(data.human_expansion, pretrained, seed, settings)
    ref_latent = reference.get_latent_representation()
    ref_labels = data.human_expansion.obs[LABELS].astype(str).to_numpy()
    arms = {
        "scFormer expansion": (data.mouse_orthologs, ORTHOLOGS),
        "scFormer expansion with symbol matches": (data.mouse_matched, [ORTHOLOGS, "symbol"]),
        "scFormer expansion with unmatched genes": (data.mouse_expansion, ORTHOLOGS),
    }
    for name, (panel, init_from) in arms.items():
        query = SCFormer.load_query_data(
            panel.copy(),
            reference,
            freeze=True,
            init_from=init_from,
            source_column=HUMAN_COLUMN,
            target_column=MOUSE_COLUMN,
        )
        run[f"{name}: new tokens"] = len(query.vocab_) - len(reference.vocab_)
        for stage in ("zero-shot", "fine-tuned"):
            if stage == "fine-tuned":
                scvi.settings.seed = seed
                train(query, settings.epochs["query"])  # ends with the donors' exact statistics
            else:
                # New batches start from the mean of the reference's statistics: estimate the
                # mouse donors' own from their cells (no training).
                query.update_batch_statistics()
            head = query.predict()[scored]
            mapped = knn(ref_latent, ref_labels, query.get_latent_representation())[scored]
            combined = query.predict(method="head+knn", k=K, knn_reference=reference)[scored]
            run[f"{name}, {stage}: head"] = scores(truth, head, data.shared)
            run[f"{name}, {stage}: kNN"] = scores(truth, mapped, data.shared)
            run[f"{name}, {stage}: head+kNN"] = scores(truth, combined, data.shared)
    run["seconds"]["scFormer expansion"] = round(time.perf_counter() - start)

    start = time.perf_counter()
    both = ad.concat(
        {"human": data.human_restricted, "mouse": data.mouse_restricted},
        label="species",
        index_unique="-",
    )
    del both.obs[LABELS]  # nothing trains on mouse labels; human labels come in fine-tuning
    restricted = fine_tune(data.human_restricted, pretrain(both, seed, settings), seed, settings)
    # The mouse donors had no cells in fine-tuning: refit their statistics (as in part a).
    restricted.update_batch_statistics(data.mouse_restricted)
    head = restricted.predict(data.mouse_restricted)[scored]
    combined = restricted.predict(data.mouse_restricted, method="head+knn", k=K)[scored]
    mapped = knn(
        restricted.get_latent_representation(),
        data.human_restricted.obs[LABELS].astype(str).to_numpy(),
        restricted.get_latent_representation(data.mouse_restricted),
    )[scored]
    run["scFormer restricted: head"] = scores(truth, head, data.shared)
    run["scFormer restricted: kNN"] = scores(truth, mapped, data.shared)
    run["scFormer restricted: head+kNN"] = scores(truth, combined, data.shared)
    run["seconds"]["scFormer restricted"] = round(time.perf_counter() - start)

    start = time.perf_counter()
    both = ad.concat(
        {"human": data.human_restricted, "mouse": data.mouse_restricted},
        label="species",
        index_unique="-",
    )
    labelled = (both.obs["species"] == "human").to_numpy()
    vae = fit_scvi(both, seed, settings)
    labels = both.obs[LABELS].astype(str).to_numpy()
    run["scANVI restricted"] = scores(
        truth, scanvi_predict(vae, labels, labelled, seed, settings)[scored], data.shared
    )
    run["seconds"]["scANVI restricted"] = round(time.perf_counter() - start)
    print(run, flush=True)
    return run


# ------------------------------------------------------------------------------- summary
def summarise(runs: list[dict]) -> dict:
    """Per method: mean and sd over seeds of each seed's mean over folds."""
    rows = [
        {"seed": run["seed"], "method": key, **value}
        for run in runs
        for key, value in run.items()
        if isinstance(value, dict) and "macro_f1" in value
    ]
    per_seed = pd.DataFrame(rows).groupby(["method", "seed"]).mean(numeric_only=True)
    summary = per_seed.groupby("method", sort=False).agg(["mean", "std"]).round(4)
    return {
        method: {
            f"{metric}_{stat}": None if pd.isna(value) else float(value)
            for (metric, stat), value in row.items()
        }
        for method, row in summary.iterrows()
    }


def configuration(settings: Settings) -> dict:
    """What a result depends on besides the seed; runs of other seeds merge only if it matches."""
    return {
        "scformer": settings.model,
        "scformer_train": {**SCFORMER_TRAIN, "precision": PRECISION},
        "epochs": settings.epochs,
        "class_weight": CLASS_WEIGHT,
        "scvi": SCVI_MODEL,
        "scvi_epochs": settings.scvi_epochs,
        "scanvi_epochs": settings.scanvi_epochs,
        "knn_k": K,
    }


def earlier_runs(name: str, config: dict, seeds: list[int], parts: list[str]) -> dict:
    """The runs in an existing result file of the same configuration that this run keeps.

    A part's run is replaced only when this run repeats that part for that seed: running
    ``--seeds 0 --parts b`` keeps seed 0's part (a).
    """
    earlier = earlier_results(name, "config", config)
    if earlier is None:
        return {"a": [], "b": [], "seconds": {}}

    def kept(part: str) -> list[dict]:
        runs = earlier.get(f"part_{part}", {}).get("runs", [])
        return [run for run in runs if part not in parts or run["seed"] not in seeds]

    return {"a": kept("a"), "b": kept("b"), "seconds": earlier.get("seconds_per_seed", {})}


def write(name: str, config: dict, runs: dict, species: Species) -> None:
    payload = {
        "seeds": sorted({run["seed"] for run in runs["a"] + runs["b"]}),
        "config": config,
        "seconds_per_seed": runs["seconds"],
    }
    if runs["a"]:
        payload["part_a"] = {"runs": runs["a"], "summary": summarise(runs["a"])}
    if runs["b"]:
        payload["part_b"] = {
            "shared_cell_types": species.shared,
            "genes": {
                "expansion_reference": species.human_expansion.n_vars,
                "expansion_query": species.mouse_orthologs.n_vars,
                "expansion_query_with_symbol_matches": species.mouse_matched.n_vars,
                "expansion_query_with_unmatched": species.mouse_expansion.n_vars,
                "restricted": species.human_restricted.n_vars,
            },
            "runs": runs["b"],
            "summary": summarise(runs["b"]),
        }
    write_results(name, payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, one fold: a smoke run")
    parser.add_argument("--parts", nargs="+", default=["a", "b"], choices=["a", "b"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    # The pretraining's start of the gene embeddings: the demo's "random" writes
    # results/transfer.json; "pca" (the data's principal axes, which keep cell types better in
    # the integration tuning) writes results/transfer_gene_init_pca.json.
    parser.add_argument("--gene-init", choices=GENE_INITS, default="random")
    options = parser.parse_args()
    settings = Settings.make(options.quick, options.gene_init)
    seeds = options.seeds[:1] if options.quick else options.seeds
    name = "transfer_quick" if options.quick else "transfer"
    if options.gene_init != "random":
        name += f"_gene_init_{options.gene_init}"
    config = configuration(settings)
    warnings.filterwarnings("ignore", category=UserWarning)
    human = hvg(read("baron2016_human_pancreas_came.h5ad"))
    human = human[expressing(human)].copy()
    species = species_panels(human)
    # Runs of other seeds and parts with this configuration are kept, and the file is rewritten
    # after every part: seeds and parts can be run separately, and an interrupted run keeps what
    # it finished.
    runs = earlier_runs(name, config, seeds, options.parts)
    for seed in seeds:
        seconds = runs["seconds"].setdefault(str(seed), {})
        start = time.perf_counter()
        pretrained = pretrain(human, seed, settings)
        seconds["pretrain"] = round(time.perf_counter() - start)
        if "a" in options.parts:
            start = time.perf_counter()
            runs["a"] += part_a(human, pretrained, seed, settings, options.quick)
            seconds["a"] = round(time.perf_counter() - start)
            write(name, config, runs, species)
        if "b" in options.parts:
            start = time.perf_counter()
            runs["b"].append(part_b(species, pretrained, seed, settings))
            seconds["b"] = round(time.perf_counter() - start)
            write(name, config, runs, species)


if __name__ == "__main__":
    main()
