# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   language_info:
#     name: python
# ---

# %% [markdown]
# # Predicting perturbations with scFormer
#
# Two kinds of perturbation: **genetic** (CRISPR knock-outs in THP-1 cells, Papalexi et al.
# 2021) and **condition** (IFN-beta stimulation of PBMCs, Kang et al. 2018). scFormer learns to
# turn a control cell into the perturbed cell: the control cell's tokens carry a flag on the
# perturbed genes (a knocked-out gene that the panel does not measure still enters as a
# token), or a condition token, and the model predicts every panel gene of the perturbed cell.
#
# The data come from `../shared/data` (see its README). Set `SCFORMER_TUTORIAL_FAST=1` for a
# quick run with tiny settings.

# %%
import os
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
import scvi

import scformer_scvi
from scformer_scvi import SCFormer

FAST = os.environ.get("SCFORMER_TUTORIAL_FAST") == "1"
DATA = Path(scformer_scvi.__file__).resolve().parents[3] / "shared" / "data"
scvi.settings.seed = 0

# %% [markdown]
# ## Genetic perturbations: Papalexi THP-1 knock-outs
# `obs["perturbation"]` holds `control` or the targeted gene; a combination would be written
# `"JAK2+STAT1"`. Cells without a confident guide call (`unassigned`) are left out.

# %%
adata = ad.read_h5ad(DATA / "papalexi2021_thp1_lowmoi_sceptre.h5ad")
adata = adata[adata.obs["perturbation"] != "unassigned"].copy()
rng = np.random.default_rng(0)
per_label = 40 if FAST else 200
labels = adata.obs["perturbation"].astype(str).to_numpy()
keep = np.concatenate(
    [
        rng.choice(
            np.flatnonzero(labels == label), min(per_label, (labels == label).sum()), replace=False
        )
        for label in np.unique(labels)
    ]
)
adata = adata[np.sort(keep)].copy()
sc.pp.filter_cells(adata, min_counts=1)

SCFormer.setup_anndata(adata, perturbation_key="perturbation", batch_key="batch")
model = SCFormer(
    adata,
    d_model=32 if FAST else 64,
    n_layers=1 if FAST else 2,
    n_heads=2 if FAST else 4,
    max_seq_len=64 if FAST else 160,
)
print(f"MYC is measured: {'MYC' in adata.var_names}; MYC has a token: {'MYC' in model.vocab_}")

# %% [markdown]
# Pretrain on the expression of all cells, then fine-tune on control -> perturbed pairs
# (each perturbed cell is paired with a random control cell of the same replicate, redrawn
# every epoch). `de_weight` puts extra weight on each perturbation's most changed genes.
# Besides which genes were perturbed, the decoder learns what every perturbation shares: each
# gene's typical response, and the effect on the perturbed gene's own expression (a knock-out
# lowers its mRNA), which carries over to genes never perturbed in training. In the
# benchmark, 30 epochs of fine-tuning did clearly better than 10.

# %%
model.train(max_epochs=1 if FAST else 5, batch_size=64)
model.train_perturbation(max_epochs=2 if FAST else 30, batch_size=64, de_weight=1.0)
model.history["perturbation_loss_train"].join(model.history["perturbation_loss_validation"]).plot()

# %% [markdown]
# ## Predictions
# `predict_perturbation` returns an AnnData of predicted profiles (log1p counts per 10k);
# `get_perturbation_effect` the mean predicted change against the same control cells left
# unperturbed.

# %%
predicted = model.predict_perturbation(["STAT1", "IFNGR1+STAT1"], n_cells=50)
effect = model.get_perturbation_effect(["STAT1", "IRF1", "IFNGR1"], n_cells=50)
effect.T.sort_values("STAT1").head(10)

# %% [markdown]
# Compare with what was observed for STAT1 knock-out cells (mean change vs control cells):

# %%
observed = adata.copy()
sc.pp.normalize_total(observed, target_sum=1e4)
sc.pp.log1p(observed)
expression = observed.X.toarray()
label_of = observed.obs["perturbation"].astype(str).to_numpy()
control_mean = expression[label_of == "control"].mean(0)
stat1_mean = expression[label_of == "STAT1"].mean(0)
scformer_scvi.metrics.perturbation_metrics(
    predicted=control_mean + effect.loc["STAT1", observed.var_names].to_numpy(),
    observed=stat1_mean,
    control=control_mean,
)

# %% [markdown]
# ## Which perturbation explains these cells?
# The inverse problem: rank candidate perturbations by how well their predicted change matches
# each group's observed change.

# %%
ranking = model.predict_perturbation_target(groupby="perturbation", top_k=3, n_cells=50)
ranking[ranking["group"].isin(["STAT1", "IFNGR1", "IRF1"])]

# %% [markdown]
# ## Interactions of double perturbations
# Non-additivity of a combination: 0 when its predicted change equals the sum of the single
# changes; `magnitude` above 1 means synergy, below 1 buffering.

# %%
model.get_genetic_interaction(["IFNGR1+STAT1", "JAK2+STAT1"], n_cells=50)

# %% [markdown]
# ## Condition perturbation: IFN-beta stimulation (Kang)

# %%
kang = ad.read_h5ad(DATA / "kang2018_pbmc_ctrl_stim_harmony.h5ad")
if FAST:
    kang = kang[np.r_[0:150, 1000:1150]].copy()
top = np.argsort(-np.asarray(kang.X.sum(axis=0)).ravel())[: 300 if FAST else 1000]
kang = kang[:, np.sort(top)].copy()
sc.pp.filter_cells(kang, min_counts=1)
SCFormer.setup_anndata(kang, condition_key="condition", control_label="ctrl")
kang_model = SCFormer(kang, d_model=32, n_layers=1, n_heads=2, max_seq_len=128)
kang_model.train_perturbation(max_epochs=2 if FAST else 15, batch_size=64)
stimulated = kang_model.predict_perturbation(["stim"], n_cells=100)
stimulated

# %%
kang_model.get_perturbation_effect(["stim"], n_cells=100).T.sort_values("stim").tail(10)

# %%
model.save("scformer_papalexi", overwrite=True)
