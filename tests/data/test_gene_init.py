"""Gene embeddings from the data's principal axes (``gene_init="pca"``)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scformer_scvi import SCFormer
from scformer_scvi.data import expression_gene_embeddings
from tests.conftest import TINY_MODEL, TINY_TRAIN


def dense_reference(counts: np.ndarray, batch: np.ndarray, n_dims: int) -> np.ndarray:
    """The same coordinates by a dense SVD: log1p(cp10k), centred per batch, unit variance."""
    x = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    for code in np.unique(batch):
        x[batch == code] -= x[batch == code].mean(axis=0)
    sd = x.std(axis=0, ddof=1)
    x = x / np.where(sd > 1e-12, sd, np.inf)
    _, singular, vt = np.linalg.svd(x, full_matrices=False)
    coordinates = vt[:n_dims].T * singular[:n_dims] / np.sqrt(len(x) - 1)
    return coordinates * np.sqrt(n_dims) / np.linalg.norm(coordinates, axis=1).mean()


@pytest.fixture
def panel(baron_small):
    """60 genes of the Baron subset and the donors."""
    counts = baron_small.X[:, :60].toarray().astype(np.float64)
    keep = counts.sum(axis=1) > 0
    return counts[keep], baron_small.obs["donor"].to_numpy()[keep]


def test_coordinates_match_a_dense_svd(panel):
    counts, batch = panel
    embedding = expression_gene_embeddings(sp.csr_matrix(counts), 16, batch)
    reference = dense_reference(counts, batch, 16)
    # Axes are defined up to sign (and rotation among equal singular values): compare Gram
    # matrices, which are not.
    gram, expected = embedding @ embedding.T, reference @ reference.T
    np.testing.assert_allclose(gram, expected, atol=1e-3 * np.abs(expected).max())
    assert np.linalg.norm(embedding, axis=1).mean() == pytest.approx(4.0, rel=1e-5)


def test_batches_are_centred_separately(panel):
    counts, batch = panel
    pooled = expression_gene_embeddings(counts, 16)
    per_batch = expression_gene_embeddings(counts, 16, batch)
    assert not np.allclose(pooled @ pooled.T, per_batch @ per_batch.T, atol=1e-2)
    # Batch names do not matter, only which cells share one.
    renamed = np.array([f"donor-{b[::-1]}" for b in batch])
    np.testing.assert_allclose(expression_gene_embeddings(counts, 16, renamed), per_batch)


def test_deterministic_small_and_degenerate_inputs(panel):
    counts, batch = panel
    first = expression_gene_embeddings(counts, 16, batch)
    np.testing.assert_array_equal(first, expression_gene_embeddings(counts, 16, batch))
    # A gene that no cell expresses has no coordinates; more dims than axes are zero.
    counts = np.column_stack([counts[:, :5], np.zeros(len(counts))])
    small = expression_gene_embeddings(counts, 16, batch)
    assert small.shape == (6, 16)
    np.testing.assert_array_equal(small[5], 0.0)
    np.testing.assert_array_equal(small[:, 5:], 0.0)
    # Subsampling cells: the draw depends on the seed.
    drawn = [expression_gene_embeddings(panel[0], 8, batch, max_cells=100, seed=s) for s in (0, 1)]
    assert not np.allclose(drawn[0] @ drawn[0].T, drawn[1] @ drawn[1].T)


def test_model_gene_init_pca(baron_small):
    SCFormer.setup_anndata(baron_small, layer=None, batch_key="donor")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(SCFormer(baron_small, **TINY_MODEL, gene_init="pca"))
    ids = models[0].vocab_.lookup(list(baron_small.var_names))
    weights = [m.module.embedding.gene.weight.detach().numpy() for m in models]
    expected = expression_gene_embeddings(
        baron_small.X, TINY_MODEL["d_model"], baron_small.obs["donor"].to_numpy()
    )
    # The data's genes: the expression coordinates, whatever the torch seed.
    np.testing.assert_allclose(weights[0][ids], expected, rtol=1e-6)
    np.testing.assert_array_equal(weights[0][ids], weights[1][ids])
    # Special tokens keep their random start; <pad> stays zero.
    special = [models[0].vocab_.cls_id, models[0].vocab_.mask_id]
    assert not np.array_equal(weights[0][special], weights[1][special])
    np.testing.assert_array_equal(weights[0][models[0].vocab_.pad_id], 0.0)
    assert models[0].init_params_["non_kwargs"]["gene_init"] == "pca"


def test_partial_gene_init_mixes_the_expression_and_random_starts(baron_small):
    SCFormer.setup_anndata(baron_small, layer=None, batch_key="donor")
    models = {}
    for init, share in (("random", 1.0), ("pca", 1.0), ("pca", 0.5)):
        torch.manual_seed(0)
        model = SCFormer(baron_small, **TINY_MODEL, gene_init=init, gene_init_weight=share)
        models[init, share] = model.module.embedding.gene.weight.detach().numpy()
    ids = model.vocab_.lookup(list(baron_small.var_names))
    expected = 0.5 * models["pca", 1.0][ids] + np.sqrt(0.75) * models["random", 1.0][ids]
    np.testing.assert_allclose(models["pca", 0.5][ids], expected, rtol=1e-5, atol=1e-6)
    # The mix keeps the random start's scale: mean norms within 10% of each other.
    norms = [np.linalg.norm(models[key][ids], axis=1).mean() for key in models]
    assert max(norms) / min(norms) < 1.1


def test_gene_init_errors(baron_small):
    SCFormer.setup_anndata(baron_small)
    with pytest.raises(ValueError, match="gene_init must be 'random' or 'pca'"):
        SCFormer(baron_small, **TINY_MODEL, gene_init="pretrained")
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"gene_init_weight must be in \(0, 1\]"):
            SCFormer(baron_small, **TINY_MODEL, gene_init="pca", gene_init_weight=share)
    with pytest.raises(ValueError, match="pass gene_init='pca'"):
        SCFormer(baron_small, **TINY_MODEL, gene_init_weight=0.5)


def test_load_and_query_mapping_keep_the_trained_weights(baron_small, tmp_path, monkeypatch):
    SCFormer.setup_anndata(baron_small, batch_key="donor")
    model = SCFormer(baron_small, **TINY_MODEL, gene_init="pca", gene_init_weight=0.5)
    model.train(max_epochs=1, **TINY_TRAIN)
    model.save(tmp_path / "model")
    trained = model.module.embedding.gene.weight.detach().clone()

    def fail(*args, **kwargs):
        raise AssertionError("the gene embeddings were recomputed from the data")

    monkeypatch.setattr("scformer_scvi.model._scformer.expression_gene_embeddings", fail)
    loaded = SCFormer.load(tmp_path / "model", baron_small)
    torch.testing.assert_close(loaded.module.embedding.gene.weight, trained, rtol=0, atol=0)
    query = SCFormer.load_query_data(baron_small.copy(), loaded, freeze=False)
    torch.testing.assert_close(query.module.embedding.gene.weight, trained, rtol=0, atol=0)


def test_pca_start_keeps_cell_types_after_a_short_training(baron_small):
    """The point of the option: at the same small budget, cell types separate better."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    SCFormer.setup_anndata(baron_small, batch_key="donor")
    labels = baron_small.obs["cell_ontology_class"].to_numpy()
    accuracy = {}
    for gene_init in ("random", "pca"):
        model = SCFormer(baron_small, **TINY_MODEL, gene_init=gene_init)
        model.train(max_epochs=2, **TINY_TRAIN)
        latent = model.get_latent_representation()
        knn = KNeighborsClassifier(n_neighbors=5)
        accuracy[gene_init] = cross_val_score(knn, latent, labels, cv=4).mean()
    assert accuracy["pca"] > accuracy["random"] + 0.1, accuracy
