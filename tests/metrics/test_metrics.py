import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scformer_scvi.metrics import cross_batch_knn_accuracy, integration


def separable(n_per_group=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(["a", "b", "c"], 2 * n_per_group)
    batches = np.tile(np.repeat(["x", "y"], n_per_group), 3)
    centres = {"a": [0, 0], "b": [10, 0], "c": [0, 10]}
    embedding = np.array([centres[label] for label in labels]) + rng.normal(size=(labels.size, 2))
    return embedding, labels, batches


def test_knn_is_exact_on_separable_groups():
    embedding, labels, batches = separable()
    assert cross_batch_knn_accuracy(embedding, labels, batches) == {
        "accuracy": 1.0,
        "macro_f1": 1.0,
    }
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(labels)
    assert cross_batch_knn_accuracy(embedding, shuffled, batches)["accuracy"] < 0.6


def test_knn_rejects_mismatched_inputs():
    embedding, labels, batches = separable()
    with pytest.raises(ValueError, match="same cells"):
        cross_batch_knn_accuracy(embedding[:-1], labels, batches)
    with pytest.raises(ValueError, match="at least two batches"):
        cross_batch_knn_accuracy(embedding, labels, np.full(labels.size, "x"))


@pytest.fixture(scope="module")
def scored_adata():
    embedding, labels, batches = separable(60)
    adata = ad.AnnData(obs=pd.DataFrame({"batch": batches, "label": labels}))
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    rng = np.random.default_rng(0)
    adata.obsm["X_pca"] = np.hstack([embedding, rng.normal(size=(adata.n_obs, 8))])
    adata.obsm["X_good"] = embedding
    adata.obsm["X_noise"] = rng.normal(size=(adata.n_obs, 2))
    return adata


def test_integration_columns_and_ranking(scored_adata, tmp_path):
    scores = integration(
        scored_adata, ["X_good", "X_noise"], "batch", "label", table_png=tmp_path / "t.png"
    )
    assert list(scores.index) == ["X_good", "X_noise"]
    for column in ("Batch correction", "Bio conservation", "Total", "Silhouette label"):
        assert column in scores.columns
    assert scores.loc["X_good", "Bio conservation"] > scores.loc["X_noise", "Bio conservation"]
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_integration_rejects_bad_embeddings(scored_adata):
    with pytest.raises(ValueError, match=r"shape \(179, 2\)"):
        integration(scored_adata, {"X_short": np.zeros((179, 2))}, "batch", "label")
    with pytest.raises(KeyError, match="X_missing"):
        integration(scored_adata, ["X_missing"], "batch", "label")
