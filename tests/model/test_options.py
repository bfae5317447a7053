"""Every selectable option of SCFormer, trained briefly on a real subset."""

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch

from scformer_scvi import SCFormer
from scformer_scvi.metrics import expression_correlation
from tests.conftest import TINY_MODEL, TINY_TRAIN


def train(adata, epochs=4, train_kwargs=None, **options):
    model = SCFormer(adata, **{**TINY_MODEL, **options})
    model.train(max_epochs=epochs, lr=3e-3, **{**TINY_TRAIN, **(train_kwargs or {})})
    return model


def curve(model, key):
    return model.history[key].to_numpy(dtype=float).ravel()


@pytest.mark.parametrize("likelihood", ["mse", "binned", "zinb", "hurdle"])
def test_every_head_trains(baron_small, likelihood):
    SCFormer.setup_anndata(baron_small)
    model = train(baron_small, likelihood=likelihood, n_zero_genes=8)
    for key in ("gep_loss_train", "mvc_loss_train", "gep_log_mse_validation"):
        values = curve(model, key)
        assert np.isfinite(values).all(), key
    assert curve(model, "gep_loss_train")[-1] < curve(model, "gep_loss_train")[0]
    assert curve(model, "mvc_loss_train")[-1] < curve(model, "mvc_loss_train")[0]


def test_hurdle_lognormal_and_binned_top_k_train(baron_small):
    SCFormer.setup_anndata(baron_small)
    for likelihood, head_kwargs in (
        ("hurdle", {"positive": "lognormal"}),
        ("binned", {"top_k": 3}),
    ):
        model = train(baron_small, epochs=2, likelihood=likelihood, head_kwargs=head_kwargs)
        assert np.isfinite(curve(model, "gep_log_mse_validation")).all()


@pytest.mark.parametrize("encoding", ["binned", "continuous", "count_classes", "scaling"])
def test_every_value_encoding_trains(baron_small, encoding):
    SCFormer.setup_anndata(baron_small)
    model = train(baron_small, value_encoding=encoding)
    gep = curve(model, "gep_loss_train")
    assert np.isfinite(gep).all()
    assert gep[-1] < gep[0]


def test_objectives_switch_their_logged_losses(baron_small):
    SCFormer.setup_anndata(baron_small, labels_key="cell_ontology_class")
    model = train(
        baron_small, epochs=2, cce_weight=1.0, ecs_weight=1.0, mvc_weight=0.0, gep_weight=1.0
    )
    keys = set(model.history)
    assert {
        "gep_loss_train",
        "cce_loss_train",
        "ecs_loss_train",
        "classification_loss_train",
    } <= keys
    assert "classification_accuracy_validation" in keys
    assert "mvc_loss_train" not in keys
    model = train(baron_small, epochs=1, classification_weight=0.0)
    keys = set(model.history)
    assert {"gep_loss_train", "mvc_loss_train"} <= keys
    assert not {"cce_loss_train", "ecs_loss_train", "classification_loss_train"} & keys


def test_classification_learns_cell_types(baron_small):
    SCFormer.setup_anndata(baron_small, labels_key="cell_ontology_class")
    model = train(
        baron_small, epochs=20, classification_weight=1.0, train_kwargs={"train_size": 1.0}
    )
    accuracy = curve(model, "classification_accuracy_train")
    assert accuracy[0] < 0.4  # the majority class is 29% of cells
    assert accuracy[-1] > 0.55


def test_mvc_zero_fraction_adds_zero_targets(baron_small):
    SCFormer.setup_anndata(baron_small)
    model = train(baron_small, epochs=1, train_kwargs={"mvc_zero_fraction": 0.5})
    collate = model.trainer.datamodule.train_dataloader().collate_fn
    assert collate.absent_ratio == pytest.approx(0.4)
    batch = next(iter(model.trainer.datamodule.train_dataloader()))
    zero_ids = batch["mvc_zero_ids"]
    n_masked = batch["mlm_mask"].sum(1)
    n_zero = (zero_ids != model.vocab_.pad_id).sum(1)
    assert torch.allclose(n_zero.float(), n_masked.float(), atol=1.5)  # f = 0.5: as many zeros
    for row in range(zero_ids.shape[0]):
        expressed = set(batch["gene_ids"][row][batch["values"][row] > 0].tolist())
        assert not expressed & set(zero_ids[row][zero_ids[row] != 0].tolist())


def test_unseen_batch_uses_the_mean_batch_parameters(baron_small):
    SCFormer.setup_anndata(baron_small, batch_key="donor")
    model = train(baron_small, epochs=1, batch_token=True, domain_norm=True)
    new = baron_small.copy()
    del new.uns["_scvi_uuid"], new.uns["_scvi_manager_uuid"]
    new.obs["donor"] = "donor_never_seen"
    with pytest.warns(UserWarning, match=r"\['donor_never_seen'\] were not seen in training"):
        unseen = model.get_latent_representation(new)
    # The documented fallback: identical to a model whose batch parameters and batch
    # statistics are all their mean.
    with torch.no_grad():
        for table in (
            model.module.batch_embedding.weight,
            model.module.cell_norm.running_mean,
            model.module.cell_norm.running_var,
        ):
            table.copy_(table.mean(0, keepdim=True).expand_as(table))
    np.testing.assert_allclose(unseen, model.get_latent_representation(), atol=1e-5)


def test_batch_token_and_domain_norm_change_the_embedding_per_batch(baron_small):
    SCFormer.setup_anndata(baron_small, batch_key="donor")
    model = train(baron_small, epochs=2, batch_token=True, domain_norm=True)
    relabelled = baron_small.copy()
    del relabelled.uns["_scvi_uuid"], relabelled.uns["_scvi_manager_uuid"]
    relabelled.obs["donor"] = (
        relabelled.obs["donor"]
        .astype(str)
        .map({"human1": "human2", "human2": "human1", "human3": "human4", "human4": "human3"})
    )
    assert not np.allclose(
        model.get_latent_representation(relabelled), model.get_latent_representation()
    )


def test_pooled_scale_gives_every_batch_the_same_spread(baron_small):
    SCFormer.setup_anndata(baron_small, batch_key="donor")
    model = train(baron_small, epochs=1, batch_token=True, domain_norm=True)
    pooled = model.get_latent_representation(scale="pooled")
    expected = model.module.cell_norm.pooled_std().numpy()
    donors = baron_small.obs["donor"].to_numpy()
    for donor in np.unique(donors):
        cells = pooled[donors == donor]
        np.testing.assert_allclose(cells.mean(0), 0, atol=1e-3)
        np.testing.assert_allclose(cells.std(0, ddof=1), expected, rtol=1e-2)


@pytest.mark.parametrize("style", ["cls", "weighted"])
def test_cell_embedding_styles_and_linear_attention(baron_small, style):
    SCFormer.setup_anndata(baron_small)
    model = train(baron_small, epochs=1, cell_embedding=style, attention="linear")
    latent = model.get_latent_representation()
    assert np.isfinite(latent).all()
    np.testing.assert_allclose(model.get_latent_representation(batch_size=3), latent, atol=1e-5)


def test_length_bucketing_reduces_padding_and_covers_every_cell(baron_small):
    SCFormer.setup_anndata(baron_small)
    model = train(baron_small, epochs=1, train_kwargs={"train_size": 1.0})
    splitter = model.trainer.datamodule
    bucketed = list(splitter.train_dataloader())
    seen = np.concatenate([b["library_size"].numpy() for b in bucketed])
    assert len(seen) == baron_small.n_obs
    padding = sum(b["padding_mask"].sum().item() for b in bucketed)
    splitter.data_loader_kwargs["length_bucketing"] = False
    plain = list(splitter.train_dataloader())
    assert padding < 0.5 * sum(b["padding_mask"].sum().item() for b in plain)
    sampler = splitter.train_dataloader().sampler
    indices = np.concatenate([np.asarray(batch) for batch in sampler])
    assert sorted(indices.tolist()) == list(range(baron_small.n_obs))


def test_gene_embeddings_and_imputation(baron_small):
    SCFormer.setup_anndata(baron_small)
    model = train(
        baron_small,
        epochs=30,
        n_zero_genes=16,
        train_kwargs={"mvc_zero_fraction": 0.5},
    )
    embeddings = model.get_gene_embeddings()
    assert embeddings.shape == (400, 32)
    assert list(embeddings.index[:3]) == list(baron_small.var_names[:3])
    genes = list(baron_small.var_names[:50])
    with pytest.raises(KeyError, match="not in the model's vocabulary"):
        model.get_gene_embeddings(["NOT_A_GENE"])

    predicted = model.get_normalized_expression(gene_list=genes, indices=np.arange(100))
    assert isinstance(predicted, pd.DataFrame)
    assert predicted.shape == (100, 50)
    assert list(predicted.columns) == genes
    assert np.isfinite(predicted.to_numpy()).all()
    observed = baron_small[:100].copy()
    sc.pp.normalize_total(observed, target_sum=1e4)
    sc.pp.log1p(observed)
    scores = expression_correlation(observed[:, genes].X.toarray(), predicted)
    assert scores["overall"] > 0.25  # imputation carries signal after brief training
    batched = model.get_normalized_expression(gene_list=genes, indices=np.arange(100), batch_size=7)
    np.testing.assert_allclose(batched.to_numpy(), predicted.to_numpy(), atol=1e-4)


def test_bf16_autocast_and_gradient_clipping(baron_small):
    SCFormer.setup_anndata(baron_small)
    model = train(
        baron_small,
        epochs=2,
        likelihood="zinb",
        train_kwargs={"precision": "bf16-mixed", "gradient_clip_val": 0.5},
    )
    assert model.trainer.precision == "bf16-mixed"
    assert model.trainer.gradient_clip_val == 0.5
    assert np.isfinite(curve(model, "train_loss")).all()
    assert np.isfinite(model.get_latent_representation()).all()


def test_latent_bottleneck_sets_the_embedding_width(baron_small, tmp_path):
    SCFormer.setup_anndata(baron_small, batch_key="donor", labels_key="cell_ontology_class")
    model = train(
        baron_small, epochs=2, n_latent=8, batch_token=True, domain_norm=True, dar_weight=0.1
    )
    latent = model.get_latent_representation()
    assert latent.shape == (baron_small.n_obs, 8)
    assert np.isfinite(curve(model, "mvc_loss_train")).all()
    assert set(model.predict()) <= set(baron_small.obs["cell_ontology_class"].astype(str))
    expression = model.get_normalized_expression(gene_list=list(baron_small.var_names[:5]))
    assert expression.shape == (baron_small.n_obs, 5)
    model.save(tmp_path / "model")
    loaded = SCFormer.load(tmp_path / "model", baron_small)
    np.testing.assert_array_equal(loaded.get_latent_representation(), latent)
