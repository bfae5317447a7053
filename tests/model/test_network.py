import numpy as np
import pandas as pd
import pytest

from scformer_scvi import SCFormer
from scformer_scvi.tools import compare_gene_networks
from tests.conftest import TINY_MODEL, TINY_TRAIN


@pytest.fixture(scope="module")
def model(_baron_small):
    adata = _baron_small.copy()
    SCFormer.setup_anndata(adata, batch_key="donor")
    model = SCFormer(adata, **TINY_MODEL, batch_token=True, n_zero_genes=8)
    model.train(max_epochs=1, **TINY_TRAIN)
    return model


def as_matrix(edges: pd.DataFrame) -> pd.DataFrame:
    return edges.pivot(index="source", columns="target", values="weight")


def test_embedding_network_is_symmetric_cosine_similarity(model):
    genes = list(model.adata.var_names[:40])
    edges = model.get_gene_network("embedding", genes=genes, top_k=None)
    assert len(edges) == 40 * 39 and np.isfinite(edges["weight"]).all()
    matrix = as_matrix(edges)
    np.testing.assert_allclose(matrix.to_numpy(), matrix.T.loc[matrix.index].to_numpy())
    emb = model.get_gene_embeddings(genes[:2]).to_numpy()
    cosine = emb[0] @ emb[1] / np.linalg.norm(emb[0]) / np.linalg.norm(emb[1])
    assert np.isclose(matrix.loc[genes[0], genes[1]], cosine, atol=1e-5)
    top = model.get_gene_network("embedding", genes=genes, top_k=3)
    pairs = set(zip(top["source"], top["target"], strict=True))
    assert all((b, a) in pairs for a, b in pairs)  # kept in both directions
    assert (top.groupby("source").size() >= 3).all()


def test_attention_network_per_group(model):
    genes = list(model.adata.var_names[:60])
    edges = model.get_gene_network(
        "attention", groupby="donor", genes=genes, top_k=None, batch_size=16
    )
    assert set(edges.columns) == {"group", "source", "target", "weight"}
    assert set(edges["group"]) == set(model.adata.obs["donor"].astype(str))
    assert np.isfinite(edges["weight"]).all()
    assert ((edges["weight"] > 0) & (edges["weight"] <= 1)).all()  # mean normalised ranks
    assert (edges["source"] != edges["target"]).all()
    symmetric = model.get_gene_network(
        "attention", genes=genes, top_k=None, symmetric=True, layer="all"
    )
    matrix = as_matrix(symmetric)
    common = matrix.index.intersection(matrix.columns)
    matrix = matrix.loc[common, common].to_numpy()
    np.testing.assert_allclose(matrix, matrix.T, equal_nan=True)
    diff = compare_gene_networks(
        edges[edges["group"] == "human1"], edges[edges["group"] == "human2"]
    )
    assert diff["difference"].abs().is_monotonic_decreasing
    np.testing.assert_allclose(diff["difference"], diff["weight_b"] - diff["weight_a"])


def test_contextual_embeddings_per_group(model):
    genes = list(model.adata.var_names[:30])
    table = model.get_contextual_gene_embeddings(groupby="donor", genes=genes)
    assert table.index.names == ["group", "gene"] and table.shape[1] == 32
    assert set(table.index.get_level_values("gene")) <= set(genes)
    assert np.isfinite(table.to_numpy()).all()
    pooled = model.get_contextual_gene_embeddings(genes=genes[:5])
    assert pooled.index.name == "gene" and len(pooled) <= 5
    network = model.get_gene_network("embedding", groupby="donor", genes=genes, top_k=2)
    assert "group" in network.columns and np.isfinite(network["weight"]).all()


def test_network_inputs_are_checked(model):
    with pytest.raises(KeyError, match="not in the model's vocabulary"):
        model.get_gene_network("embedding", genes=["NOT_A_GENE"])
    with pytest.raises(KeyError, match="groupby='nope'"):
        model.get_gene_network("attention", groupby="nope", genes=list(model.vocab_.genes[:5]))
    with pytest.raises(ValueError, match="method must be"):
        model.get_gene_network("correlation")
    with pytest.raises(KeyError, match="lacks the columns"):
        compare_gene_networks(pd.DataFrame({"a": [1]}), pd.DataFrame({"a": [1]}))
