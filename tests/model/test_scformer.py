import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scvi
import torch
from safetensors.torch import load_file, save_file

from scformer_scvi import SCFormer
from tests.conftest import TINY_MODEL, TINY_TRAIN


@pytest.fixture
def trained(baron_small):
    SCFormer.setup_anndata(baron_small, batch_key="donor", labels_key="cell_ontology_class")
    model = SCFormer(baron_small, **TINY_MODEL, n_zero_genes=8)
    model.train(max_epochs=2, **TINY_TRAIN)
    return model, baron_small


def test_training_reduces_the_masked_value_loss(baron_small):
    SCFormer.setup_anndata(baron_small, batch_key="donor")
    model = SCFormer(baron_small, **TINY_MODEL)
    model.train(max_epochs=8, lr=3e-3, **TINY_TRAIN)
    history = model.history
    for key in ("train_loss", "validation_loss", "gep_loss_train", "mvc_loss_validation"):
        assert key in history, key
    train = history["train_loss"].to_numpy(dtype=float).ravel()
    validation = history["validation_loss"].to_numpy(dtype=float).ravel()
    assert np.isfinite(train).all()
    assert train[-1] < 0.8 * train[0]
    assert validation[-1] < validation[0]
    assert model.is_trained


def test_latent_does_not_depend_on_batch_size_or_subset(trained):
    model, adata = trained
    full = model.get_latent_representation()
    assert full.shape == (adata.n_obs, 32) and np.isfinite(full).all()
    for batch_size in (1, 7, 500):
        np.testing.assert_allclose(
            model.get_latent_representation(batch_size=batch_size), full, atol=1e-5
        )
    rows = np.array([5, 100, 3])
    np.testing.assert_allclose(model.get_latent_representation(indices=rows), full[rows], atol=1e-5)


def test_pooled_scale_multiplies_each_dimension_by_its_spread(trained):
    model, _ = trained
    unit = model.get_latent_representation()
    pooled = model.get_latent_representation(scale="pooled", batch_size=7)
    norm = model.module.cell_norm
    spread = torch.sqrt(norm.running_var + norm.eps).numpy()
    np.testing.assert_allclose(pooled, unit * spread, rtol=1e-5, atol=1e-6)
    assert not np.allclose(pooled, unit, atol=1e-2)
    with pytest.raises(ValueError, match="scale must be 'unit' or 'pooled'"):
        model.get_latent_representation(scale="whitened")


def test_same_seed_same_model(baron_small):
    SCFormer.setup_anndata(baron_small)
    latents = []
    for _ in range(2):
        scvi.settings.seed = 7
        model = SCFormer(baron_small, **TINY_MODEL)
        model.train(max_epochs=1, **TINY_TRAIN)
        latents.append(model.get_latent_representation())
    np.testing.assert_array_equal(latents[0], latents[1])


def test_save_load_round_trip(trained, tmp_path):
    model, adata = trained
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.json",
        "model.safetensors",
        "vocab.json",
    ]
    loaded = SCFormer.load(tmp_path / "m", adata)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
    assert loaded.is_trained and loaded.vocab_ == model.vocab_
    np.testing.assert_array_equal(loaded.train_indices, model.train_indices)
    assert (
        loaded.history["train_loss"].astype(float).equals(model.history["train_loss"].astype(float))
    )
    assert str(loaded._model_summary_string) == str(model._model_summary_string)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m")


def test_load_without_adata_then_embed_new_data(trained, tmp_path):
    model, adata = trained
    model.save(tmp_path / "m")
    loaded = SCFormer.load(tmp_path / "m")
    assert loaded.adata is None
    fresh = adata.copy()
    del fresh.uns["_scvi_uuid"], fresh.uns["_scvi_manager_uuid"]
    np.testing.assert_allclose(
        loaded.get_latent_representation(fresh), model.get_latent_representation(), atol=1e-6
    )


def test_load_refuses_mismatched_weights_and_vocab(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    weights.pop("gep_head.mlp.0.bias")
    weights["embedding.gene.weight"] = weights["embedding.gene.weight"][:-1]
    weights["extra.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "m" / "model.safetensors")
    with pytest.raises(ValueError, match="nothing was loaded") as error:
        SCFormer.load(tmp_path / "m")
    message = str(error.value)
    assert "missing (1): gep_head.mlp.0.bias" in message
    assert "unexpected (1): extra.weight" in message
    assert "embedding.gene.weight: checkpoint (402, 32) vs model (403, 32)" in message

    model.save(tmp_path / "v")
    vocab = json.loads((tmp_path / "v" / "vocab.json").read_text())
    vocab["genes"] = vocab["genes"][::-1]
    vocab.pop("md5")
    (tmp_path / "v" / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match="does not belong to this model"):
        SCFormer.load(tmp_path / "v")


def test_load_incomplete_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete SCFormer model directory"):
        SCFormer.load(tmp_path)


def test_genes_are_matched_by_name_not_position(trained):
    model, adata = trained
    reordered = adata[:, adata.var_names[::-1]].copy()
    del reordered.uns["_scvi_uuid"], reordered.uns["_scvi_manager_uuid"]
    np.testing.assert_allclose(
        model.get_latent_representation(reordered),
        model.get_latent_representation(),
        atol=1e-5,
    )


def test_cells_measuring_another_panel_are_embedded(trained):
    """Unknown genes are ignored and missing ones absent, whatever the number of columns."""
    model, adata = trained
    unknown = np.random.default_rng(0).poisson(1.0, size=(adata.n_obs, 25)).astype(np.float32)
    wider = ad.AnnData(
        sp.hstack([sp.csr_matrix(adata.X), sp.csr_matrix(unknown)], format="csr"),
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=[*adata.var_names, *(f"UNKNOWN{i}" for i in range(25))]),
    )
    z = model.get_latent_representation(wider)
    np.testing.assert_allclose(z, model.get_latent_representation(), atol=1e-5)
    narrower = adata[:, : adata.n_vars // 2].copy()
    del narrower.uns["_scvi_uuid"], narrower.uns["_scvi_manager_uuid"]
    assert model.get_latent_representation(narrower).shape == z.shape


def test_no_gene_in_common_with_the_vocabulary(trained):
    model, adata = trained
    renamed = adata.copy()
    del renamed.uns["_scvi_uuid"], renamed.uns["_scvi_manager_uuid"]
    renamed.var_names = [f"ENSG{i:011d}" for i in range(renamed.n_vars)]
    with pytest.raises(ValueError, match=r"None of the 400 genes.*model's vocabulary"):
        model.get_latent_representation(renamed)


def test_new_data_with_bad_counts_is_refused(trained):
    model, adata = trained
    bad = adata.copy()
    del bad.uns["_scvi_uuid"], bad.uns["_scvi_manager_uuid"]
    bad.X = bad.X.toarray() * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        model.get_latent_representation(bad)


def test_unseen_batch_on_load_is_refused(trained, tmp_path):
    model, adata = trained
    model.save(tmp_path / "m")
    other = adata.copy()
    other.obs["donor"] = other.obs["donor"].astype(str).replace("human1", "human9")
    with pytest.raises(ValueError, match="human9"):
        SCFormer.load(tmp_path / "m", other)


def test_repr_summarises_the_model(trained, capsys):
    model, _ = trained
    print(model)
    out = capsys.readouterr().out
    assert "SCFormer: 1 layers x 2 heads, d_model=32" in out
    assert "vocabulary 400 genes" in out and "Training status: Trained" in out
