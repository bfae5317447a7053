"""Training on and embedding a scBank, streamed."""

import numpy as np
import pytest

import scbank
from scformer_scvi import SCFormer
from scformer_scvi.data._bank import BankBatches
from tests.conftest import TINY_MODEL


@pytest.fixture
def bank(baron_small, tmp_path):
    bank = scbank.DataBank.create(tmp_path / "baron.scb")
    donors = baron_small.obs["donor"].astype(str)
    for study, members in (("early", ["human1", "human2"]), ("late", ["human3", "human4"])):
        part = baron_small[donors.isin(members).to_numpy()].copy()
        part.obs["donor"] = part.obs["donor"].astype(str)
        bank.append_anndata(part, study)
    return scbank.DataBank.open(tmp_path / "baron.scb")


def test_train_from_a_bank_and_write_embeddings_back(bank):
    model = SCFormer.from_bank(bank, batch_key="donor", **TINY_MODEL, batch_token=True)
    assert model.summary_stats.n_batch == 4
    model.train(bank=bank, max_epochs=3, batch_size=32, enable_progress_bar=False)
    loss = model.history["train_loss"].to_numpy(dtype=float).ravel()
    assert np.isfinite(loss).all()
    assert loss[-1] < loss[0]

    embedded = model.get_latent_representation(bank, bank_table="scformer")
    assert embedded.shape == (bank.n_obs, 32)
    stored = scbank.DataBank.open(bank.path).obsm["scformer"][np.arange(bank.n_obs)]
    np.testing.assert_allclose(stored, embedded)

    # the same cells as an AnnData give the same embeddings (rows follow bank.obs)
    cells = bank[np.arange(bank.n_obs)].to_memory()
    np.testing.assert_allclose(model.get_latent_representation(cells), embedded, atol=1e-5)
    np.testing.assert_allclose(
        model.get_latent_representation(bank, scale="pooled"),
        model.get_latent_representation(cells, scale="pooled"),
        atol=1e-5,
    )


def test_bank_model_saves_and_loads(bank, tmp_path):
    with pytest.raises(ValueError, match="a model built from a bank starts with gene_init"):
        SCFormer.from_bank(bank, **TINY_MODEL, gene_init="pca")
    model = SCFormer.from_bank(bank, **TINY_MODEL)
    model.train(bank=bank, max_epochs=1, batch_size=32, enable_progress_bar=False)
    model.save(tmp_path / "model")
    loaded = SCFormer.load(tmp_path / "model")
    np.testing.assert_array_equal(
        loaded.get_latent_representation(bank), model.get_latent_representation(bank)
    )


def test_ranks_get_disjoint_equal_shares_and_epochs_reshuffle(bank):
    genes = list(bank.var_names)
    cats = np.array(["0"], dtype=object)

    def cells(rank, epoch):
        batches = BankBatches(bank.path, genes, 16, None, None, cats, cats, rank=rank, world_size=2)
        batches.epoch = epoch
        return [b["cell_id"] for b in batches]

    rank0, rank1 = cells(0, 0), cells(1, 0)
    assert len(rank0) == len(rank1)  # equal steps for DDP
    ids0, ids1 = np.concatenate(rank0), np.concatenate(rank1)
    assert not set(ids0) & set(ids1)
    assert len(ids0) + len(ids1) > bank.n_obs - 2 * 16  # at most one partial batch per rank left
    assert not np.array_equal(np.concatenate(cells(0, 1)), ids0)  # a new epoch, a new order


def test_bank_with_batches_the_model_does_not_know(bank, baron_small):
    model = SCFormer.from_bank(bank, batch_key="donor", **TINY_MODEL)
    other = scbank.DataBank.create(bank.path.parent / "other.scb")
    part = baron_small[:50].copy()
    part.obs["donor"] = "human9"
    other.append_anndata(part, "new")
    model.is_trained_ = True
    with pytest.raises(ValueError, match=r"categories the model was not set up with: \['human9'\]"):
        model.get_latent_representation(scbank.DataBank.open(other.path))
