import numpy as np
import pandas as pd
import pytest

from scformer_scvi.metrics import (
    baseline_additive,
    baseline_linear,
    baseline_mean_perturbation,
    baseline_no_change,
    interaction_scores,
    perturbation_metrics,
)


def test_metrics_match_hand_computed_values():
    control = np.array([1.0, 1.0, 1.0, 1.0])
    observed = np.array([3.0, 1.0, 0.0, 1.5])  # deltas 2, 0, -1, 0.5
    predicted = np.array([2.0, 1.5, 0.5, 1.0])  # deltas 1, 0.5, -0.5, 0
    scores = perturbation_metrics(predicted, observed, control, n_de=2)
    assert scores["pearson"] == pytest.approx(np.corrcoef(predicted, observed)[0, 1])
    assert scores["pearson_delta"] == pytest.approx(
        np.corrcoef([1, 0.5, -0.5, 0], [2, 0, -1, 0.5])[0, 1]
    )
    # the two largest observed changes are genes 0 (+2) and 2 (-1)
    assert scores["pearson_delta_de"] == pytest.approx(1.0)
    assert scores["mse_de"] == pytest.approx(((2 - 3) ** 2 + (0.5 - 0) ** 2) / 2)
    assert scores["direction_agreement"] == 1.0
    with pytest.raises(ValueError, match="same genes"):
        perturbation_metrics(predicted[:3], observed, control)


def test_interaction_scores_on_known_interactions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    additive = interaction_scores(a + b, a, b)
    assert additive["non_additivity"] == pytest.approx(0.0)
    assert additive["magnitude"] == pytest.approx(1.0)
    synergy = interaction_scores(2 * (a + b), a, b)
    assert synergy["magnitude"] == pytest.approx(2.0)
    assert synergy["non_additivity"] == pytest.approx(1.0)
    buffering = interaction_scores(0.5 * (a + b), a, b)
    assert buffering["magnitude"] == pytest.approx(0.5)
    epistasis = interaction_scores(a + b + 3 * rng.normal(size=50), a, b)
    assert epistasis["non_additivity"] > 1.0
    assert epistasis["additive_correlation"] < 0.8
    with pytest.raises(ValueError, match="change nothing"):
        interaction_scores(a, np.zeros(50), np.zeros(50))


def test_baselines():
    control = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(baseline_no_change(control), control)
    deltas = np.array([[1.0, 0.0, -1.0], [3.0, 2.0, 1.0]])
    np.testing.assert_allclose(baseline_mean_perturbation(control, deltas), [3.0, 3.0, 3.0])
    singles = {"A": deltas[0], "B": deltas[1]}
    np.testing.assert_allclose(baseline_additive(control, singles, ["A", "B"]), [5.0, 4.0, 3.0])
    with pytest.raises(KeyError, match="additive is undefined"):
        baseline_additive(control, singles, ["A", "C"])
    # an exactly linear relation between gene features and their effects is recovered
    features = pd.DataFrame(np.eye(4)[:, :2] + 0.0, index=list("ABCD"))
    features.loc["C"] = [1.0, 1.0]
    features.loc["D"] = [2.0, -1.0]
    weights = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
    train = pd.DataFrame(features.loc[["A", "B", "C"]].to_numpy() @ weights, index=list("ABC"))
    predicted = baseline_linear(features, train, ["D"], control, alpha=1e-8)
    np.testing.assert_allclose(
        predicted[0], control + features.loc["D"].to_numpy() @ weights, atol=1e-5
    )
