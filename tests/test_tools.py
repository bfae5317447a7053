import numpy as np
import pandas as pd
import pytest

from scformer_scvi.tools import knn_label_transfer


def clusters(n_per: int, centres: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(c, 0.1, size=(n_per, centres.shape[1])) for c in centres])


@pytest.mark.parametrize("method", ["exact", pytest.param("pynndescent", marks=pytest.mark.slow)])
def test_knn_transfer_is_exact_on_separable_clusters(method):
    centres = np.eye(5) * 10
    ref = clusters(40, centres, seed=0)
    labels = np.repeat([f"type{i}" for i in range(5)], 40)
    query = clusters(15, centres, seed=1)
    names = pd.Index([f"cell{i}" for i in range(len(query))])
    result = knn_label_transfer(ref, labels, query, k=10, query_index=names, method=method)
    assert list(result.columns) == ["label", "uncertainty"]
    assert result.index.equals(names)
    np.testing.assert_array_equal(result["label"], np.repeat([f"type{i}" for i in range(5)], 15))
    np.testing.assert_array_equal(result["uncertainty"], 0.0)


def test_knn_uncertainty_is_the_losing_vote_share():
    ref = np.array([[0.0], [0.0], [0.0], [1.0]])
    result = knn_label_transfer(ref, ["a", "a", "b", "b"], np.array([[0.0]]), k=3)
    # Neighbours at distance 0, 0, 0 (two "a", one "b"): equal weights, share of "a" = 2/3.
    assert result["label"].iloc[0] == "a"
    assert result["uncertainty"].iloc[0] == pytest.approx(1 / 3)


def test_knn_soft_returns_the_vote_shares():
    ref = np.array([[0.0], [0.0], [0.0], [1.0], [5.0]])
    query = np.array([[0.0], [4.0]])
    shares = knn_label_transfer(ref, ["b", "b", "a", "c", "c"], query, k=3, soft=True)
    assert list(shares.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert shares.iloc[0].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    hard = knn_label_transfer(ref, ["b", "b", "a", "c", "c"], query, k=3)
    np.testing.assert_array_equal(shares.idxmax(axis=1), hard["label"])
    np.testing.assert_allclose(1 - shares.max(axis=1), hard["uncertainty"])


def test_knn_inputs_are_checked():
    ref = np.zeros((5, 2))
    with pytest.raises(ValueError, match="same space"):
        knn_label_transfer(ref, list("aaaaa"), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ref_labels has 4"):
        knn_label_transfer(ref, list("aaaa"), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="k must be"):
        knn_label_transfer(ref, list("aaaaa"), np.zeros((2, 2)), k=6)
    with pytest.raises(ValueError, match="method must be"):
        knn_label_transfer(ref, list("aaaaa"), np.zeros((2, 2)), k=2, method="faiss")
