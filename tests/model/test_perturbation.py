"""Perturbation prediction on real Papalexi (CRISPR) and Kang (IFN-beta) subsets."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scvi
import torch

from scformer_scvi import GeneVocab, SCFormer
from scformer_scvi.data._perturbation import PerturbationPairs, parse_perturbations
from tests.conftest import TINY_MODEL, TINY_TRAIN, shared_file


@pytest.fixture(scope="module")
def _papalexi():
    adata = ad.read_h5ad(shared_file("papalexi2021_thp1_lowmoi_sceptre.h5ad"))
    adata = adata[adata.obs["perturbation"] != "unassigned"]
    rng = np.random.default_rng(0)
    labels = adata.obs["perturbation"].astype(str)
    keep = [
        rng.choice(np.flatnonzero(labels == label), 20, replace=False)
        for label in ("control", "STAT1", "JAK2", "IRF1", "MYC", "IFNGR1")
    ]
    adata = adata[np.sort(np.concatenate(keep))].copy()
    adata.obs["perturbation"] = adata.obs["perturbation"].astype(str)
    # two cells carrying a combination, to exercise double perturbations
    adata.obs.iloc[[0, 1], adata.obs.columns.get_loc("perturbation")] = "JAK2+STAT1"
    sc.pp.filter_cells(adata, min_counts=1)
    return adata


@pytest.fixture
def papalexi(_papalexi):
    return _papalexi.copy()


@pytest.fixture
def trained(papalexi):
    SCFormer.setup_anndata(papalexi, perturbation_key="perturbation", batch_key="batch")
    model = SCFormer(papalexi, **TINY_MODEL)
    model.train(max_epochs=1, **TINY_TRAIN)
    model.train_perturbation(max_epochs=3, batch_size=32, enable_progress_bar=False)
    return model, papalexi


def test_labels_are_parsed_and_bad_labels_refused():
    parsed = parse_perturbations(["control", "STAT1", "JAK2+STAT1"])
    assert parsed == {"control": (), "STAT1": ("STAT1",), "JAK2+STAT1": ("JAK2", "STAT1")}
    for bad in ("JAK2+", "", "+STAT1"):
        with pytest.raises(ValueError, match="empty"):
            parse_perturbations([bad])


def test_setup_refuses_missing_controls_and_empty_labels(papalexi):
    no_controls = papalexi.copy()
    no_controls.obs["perturbation"] = no_controls.obs["perturbation"].replace("control", "STAT3")
    with pytest.raises(ValueError, match="No cell of obs\\['perturbation'\\] has the control"):
        SCFormer.setup_anndata(no_controls, perturbation_key="perturbation")
    empty = papalexi.copy()
    empty.obs.iloc[5, empty.obs.columns.get_loc("perturbation")] = "STAT1+"
    with pytest.raises(ValueError, match="'STAT1\\+' is empty or has an empty gene"):
        SCFormer.setup_anndata(empty, perturbation_key="perturbation")


def test_off_panel_targets_get_tokens(papalexi):
    SCFormer.setup_anndata(papalexi, perturbation_key="perturbation")
    model = SCFormer(papalexi, **TINY_MODEL)
    assert "MYC" not in papalexi.var_names  # not measured
    assert "MYC" in model.vocab_ and "IRF1" in model.vocab_


def test_pairing_respects_covariates():
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    controls = np.array([0, 3, 6])
    pairs = PerturbationPairs(np.arange(8), groups, controls)
    scvi.settings.seed = 0
    for _ in range(5):
        drawn = pairs[list(range(8))]
        np.testing.assert_array_equal(groups[drawn["controls"]], groups[drawn["targets"]])
    with pytest.raises(ValueError, match="no control cells"):
        PerturbationPairs(np.arange(8), groups, np.array([0, 3]))


def test_perturbed_genes_are_flagged_and_never_dropped(trained):
    model, adata = trained
    info = model._perturbation_info()
    codes = model._cell_codes(adata)
    collate = model._perturbation_collate(adata, info, *codes)
    collate.tokenizer.max_seq_len = 6  # force truncation: the perturbed genes must survive
    combo = int(np.flatnonzero(adata.obs["perturbation"] == "JAK2+STAT1")[0])
    single = int(np.flatnonzero(adata.obs["perturbation"] == "MYC")[0])
    control = int(np.flatnonzero(adata.obs["perturbation"] == "control")[0])
    batch = collate(
        {
            "targets": np.array([combo, single, control]),
            "controls": np.array([control, control, control]),
        }
    )
    flagged = [set(batch["gene_ids"][i][batch["perturbation_flags"][i]].tolist()) for i in range(3)]
    vocab = model.vocab_
    assert flagged[0] == {vocab["JAK2"], vocab["STAT1"]}  # a combination: both flags
    assert flagged[1] == {vocab["MYC"]}  # off-panel target enters as a token
    assert flagged[2] == set()  # a control target: no perturbation
    assert batch["target_counts"].shape == (3, adata.n_vars)


def test_gene_dropout_hides_which_genes(trained):
    """A dropped-out cell looks like a perturbation of unknown genes: no flag, no projection."""
    model, adata = trained
    module = model.module
    codes = model._cell_codes(adata)
    collate = model._perturbation_collate(adata, model._perturbation_info(), *codes)
    perturbed = np.flatnonzero(adata.obs["perturbation"] == "STAT1")[:4]
    control = np.flatnonzero(adata.obs["perturbation"] == "control")[:4]
    batch = collate({"targets": perturbed, "controls": control})
    module.train()
    gradients = {}
    for dropout in (0.0, 1.0):
        module.perturbation_gene_dropout = dropout
        module.zero_grad()
        module.perturbation_step(batch)[2].loss.backward()
        gradients[dropout] = [
            module.perturbation_flag.weight.grad.abs().sum().item(),
            module.perturbation_proj.weight.grad.abs().sum().item(),
            module.perturbation_shared.grad.abs().sum().item(),
            module.perturbation_response.weight.grad.abs().sum().item(),
        ]
    assert all(g > 0 for g in gradients[0.0])
    assert gradients[1.0][:2] == [0.0, 0.0]  # which genes: hidden
    assert all(g > 0 for g in gradients[1.0][2:])  # the shared components still learn


def test_self_effect_reaches_only_the_perturbed_gene(trained):
    model, _ = trained
    before = model.predict_perturbation(["STAT1"], n_cells=5)
    with torch.no_grad():
        model.module.perturbation_self.add_(3.0)
    after = model.predict_perturbation(["STAT1"], n_cells=5)
    changed = np.abs(after.X - before.X).max(axis=0) > 1e-6
    assert list(after.var_names[changed]) == ["STAT1"]


def test_training_and_predictions(trained):
    model, adata = trained
    for key in ("perturbation_loss_train", "perturbation_log_mse_validation", "gep_loss_train"):
        assert key in model.history, key
    predicted = model.predict_perturbation(["STAT1", "JAK2+STAT1"], n_cells=10)
    assert predicted.shape == (20, adata.n_vars)
    assert list(predicted.obs["perturbation"].cat.categories) == ["STAT1", "JAK2+STAT1"]
    assert np.isfinite(predicted.X).all()
    again = model.predict_perturbation(["STAT1", "JAK2+STAT1"], n_cells=10)
    np.testing.assert_array_equal(predicted.X, again.X)  # deterministic
    with pytest.raises(KeyError, match="\\['NOTAGENE'\\] are not in the model's vocabulary"):
        model.predict_perturbation(["NOTAGENE"])

    effect = model.get_perturbation_effect(["STAT1", "IRF1"], n_cells=10)
    assert isinstance(effect, pd.DataFrame)
    assert effect.shape == (2, adata.n_vars)

    ranking = model.predict_perturbation_target(groupby="perturbation", top_k=3, n_cells=10)
    assert list(ranking.columns) == ["group", "rank", "perturbation", "score"]
    assert (ranking.groupby("group")["rank"].max() == 3).all()

    interaction = model.get_genetic_interaction(["JAK2+STAT1"], n_cells=10)
    assert list(interaction.columns) == ["non_additivity", "magnitude", "additive_correlation"]
    assert np.isfinite(interaction.to_numpy()).all()


def test_condition_perturbation_on_kang():
    adata = ad.read_h5ad(shared_file("kang2018_pbmc_ctrl_stim_harmony.h5ad"))
    adata = adata[np.r_[0:60, 1000:1060]].copy()
    adata = adata[:, np.argsort(-np.asarray(adata.X.sum(axis=0)).ravel())[:300]].copy()
    sc.pp.filter_cells(adata, min_counts=1)
    SCFormer.setup_anndata(adata, condition_key="condition", control_label="ctrl")
    model = SCFormer(adata, **TINY_MODEL)
    model.train_perturbation(max_epochs=2, batch_size=32, enable_progress_bar=False)
    predicted = model.predict_perturbation(["stim", "ctrl"], n_cells=15)
    assert predicted.shape == (30, adata.n_vars)
    assert not np.allclose(predicted[:15].X, predicted[15:].X)  # the condition token matters


def test_genes_the_model_knows_nothing_about_get_the_shared_effect(papalexi, tmp_path):
    """Two untrained genes (vocabulary only) predict the same, typical perturbation effect."""
    SCFormer.setup_anndata(papalexi, perturbation_key="perturbation", batch_key="batch")
    targets = ["STAT1", "JAK2", "IRF1", "MYC", "IFNGR1"]
    vocab = GeneVocab(papalexi.var_names).extend([*targets, "UNSEEN_A", "UNSEEN_B"])
    model = SCFormer(papalexi, vocab=vocab, **TINY_MODEL)
    model.train(max_epochs=1, **TINY_TRAIN)
    model.train_perturbation(max_epochs=2, batch_size=32, enable_progress_bar=False)
    effect = model.get_perturbation_effect(["UNSEEN_A", "UNSEEN_B", "STAT1"], n_cells=10)
    np.testing.assert_array_equal(effect.loc["UNSEEN_A"], effect.loc["UNSEEN_B"])
    assert np.abs(effect.loc["UNSEEN_A"]).max() > 0  # the shared component, not nothing
    assert not np.allclose(effect.loc["UNSEEN_A"], effect.loc["STAT1"])

    # The gene-specific projection (bias included) serves only genes perturbed in training: a
    # panel gene never perturbed, like an unknown gene, does not depend on it.
    panel_gene = next(g for g in papalexi.var_names if g not in targets)
    genes = ["UNSEEN_A", panel_gene, "STAT1"]
    before = model.get_perturbation_effect(genes, n_cells=10)
    with torch.no_grad():
        model.module.perturbation_proj.weight.mul_(3.0)
        model.module.perturbation_proj.bias.add_(1.0)
    after = model.get_perturbation_effect(genes, n_cells=10)
    np.testing.assert_allclose(after.loc[genes[:2]], before.loc[genes[:2]], atol=1e-6)
    assert not np.allclose(after.loc["STAT1"], before.loc["STAT1"])

    # which genes were perturbed in training is saved with the model
    model.save(tmp_path / "model")
    loaded = SCFormer.load(tmp_path / "model", papalexi)
    assert loaded.perturbation_trained_genes_ == sorted(targets)
    reloaded = loaded.get_perturbation_effect(genes, n_cells=10)
    np.testing.assert_allclose(reloaded, after, atol=1e-6)
