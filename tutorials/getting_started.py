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
# # Getting started with scFormer
#
# Pretrain scFormer on the Baron human pancreas data that ships with the package, embed the
# cells, and look at the embedding with scanpy. Everything runs on a laptop CPU.
#
# Set the environment variable `SCFORMER_TUTORIAL_FAST=1` to run with tiny settings (as the
# test suite does).

# %%
import os

import scanpy as sc
import scvi

import scformer_scvi
from scformer_scvi import SCFormer

FAST = os.environ.get("SCFORMER_TUTORIAL_FAST") == "1"
scvi.settings.seed = 0

# %% [markdown]
# ## Data: raw counts
# scFormer reads **raw counts**. Keep them in a layer before normalising anything.

# %%
adata = scformer_scvi.datasets.baron_pancreas()
adata.layers["counts"] = adata.X.copy()
sc.pp.highly_variable_genes(
    adata, n_top_genes=500 if FAST else 2000, flavor="seurat_v3", layer="counts", subset=True
)
sc.pp.filter_cells(adata, min_counts=1)
adata

# %% [markdown]
# ## Set up and train
# `setup_anndata` validates the counts (it refuses normalised, negative or NaN values and empty
# cells, naming the fix) and registers the batch and label columns.

# %%
SCFormer.setup_anndata(adata, layer="counts", batch_key="donor", labels_key="cell_ontology_class")
model = SCFormer(
    adata,
    d_model=32 if FAST else 128,
    n_layers=1 if FAST else 2,
    n_heads=2 if FAST else 4,
    max_seq_len=64 if FAST else 256,
    n_zero_genes=64,
)
model

# %%
model.train(max_epochs=2 if FAST else 12, batch_size=64)
model.history["train_loss"].join(model.history["validation_loss"]).plot()

# %% [markdown]
# ## Embed
# The embedding is deterministic: the same cell gets the same vector whatever the batch size.

# %%
adata.obsm["X_scFormer"] = model.get_latent_representation()
sc.pp.neighbors(adata, use_rep="X_scFormer")
sc.tl.umap(adata)
sc.pl.umap(adata, color=["cell_ontology_class", "donor"], wspace=0.4)

# %% [markdown]
# ## Score the embedding
# Label transfer across donors: every donor's cell types are predicted from the other donors.

# %%
scformer_scvi.metrics.cross_batch_knn_accuracy(
    adata.obsm["X_scFormer"], adata.obs["cell_ontology_class"], adata.obs["donor"]
)

# %% [markdown]
# ## Save and load
# Weights go to safetensors and metadata to JSON (nothing is pickled); the gene vocabulary is
# saved with the model and checked on load.

# %%
model.save("scformer_baron", overwrite=True)
reloaded = SCFormer.load("scformer_baron", adata)
(reloaded.get_latent_representation() == adata.obsm["X_scFormer"]).all()
