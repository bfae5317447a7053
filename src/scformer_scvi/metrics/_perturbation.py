"""Perturbation-prediction metrics and the baselines a model must beat."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float) - np.mean(a), np.asarray(b, float) - np.mean(b)
    denominator = np.sqrt((a**2).sum() * (b**2).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def top_de_genes(true_delta: np.ndarray, n: int = 20) -> np.ndarray:
    """Indices of the ``n`` genes with the largest absolute observed change (descending)."""
    return np.argsort(-np.abs(np.asarray(true_delta)), kind="stable")[:n]


def perturbation_metrics(
    predicted: np.ndarray,
    observed: np.ndarray,
    control: np.ndarray,
    n_de: int = 20,
) -> dict[str, float]:
    """How well a predicted mean profile matches the observed one (all on one scale).

    Parameters
    ----------
    predicted, observed
        Mean expression of the perturbed cells, predicted and observed, per gene.
    control
        Mean expression of the control cells, per gene.
    n_de
        Number of "differentially expressed" genes: the largest absolute observed changes.

    Returns
    -------
    - ``pearson``: Pearson correlation of predicted and observed profiles (all genes);
    - ``pearson_delta``: the same on changes vs control (``x - control``);
    - ``pearson_delta_de``: ``pearson_delta`` on the top-``n_de`` DE genes;
    - ``mse_de``: mean squared error of the profiles on the DE genes;
    - ``direction_agreement``: share of DE genes whose predicted change has the observed sign.
    """
    predicted, observed, control = (np.asarray(x, float) for x in (predicted, observed, control))
    if not predicted.shape == observed.shape == control.shape:
        raise ValueError(
            f"predicted {predicted.shape}, observed {observed.shape} and control "
            f"{control.shape} must be profiles over the same genes."
        )
    predicted_delta, observed_delta = predicted - control, observed - control
    de = top_de_genes(observed_delta, n_de)
    return {
        "pearson": _pearson(predicted, observed),
        "pearson_delta": _pearson(predicted_delta, observed_delta),
        "pearson_delta_de": _pearson(predicted_delta[de], observed_delta[de]),
        "mse_de": float(np.mean((predicted[de] - observed[de]) ** 2)),
        "direction_agreement": float(
            np.mean(np.sign(predicted_delta[de]) == np.sign(observed_delta[de]))
        ),
    }


def interaction_scores(
    combo_delta: np.ndarray, first_delta: np.ndarray, second_delta: np.ndarray
) -> dict[str, float]:
    r"""Non-additivity of a double perturbation from its changes vs control.

    With :math:`\delta_{AB}` the change of the combination and :math:`s = \delta_A + \delta_B`
    the additive expectation:

    - ``non_additivity`` :math:`= \lVert \delta_{AB} - s \rVert / \lVert s \rVert`: 0 when the
      combination is exactly additive, large for epistasis;
    - ``magnitude`` :math:`= \langle \delta_{AB}, s\rangle / \lVert s \rVert^2`: the size of the
      combined change along the additive direction (1 additive, >1 synergy, <1 buffering);
    - ``additive_correlation``: Pearson correlation of :math:`\delta_{AB}` with :math:`s`.
    """
    combo, additive = np.asarray(combo_delta, float), np.asarray(first_delta + second_delta, float)
    norm = float(np.linalg.norm(additive))
    if norm == 0:
        raise ValueError("The single perturbations change nothing: interaction is undefined.")
    return {
        "non_additivity": float(np.linalg.norm(combo - additive) / norm),
        "magnitude": float(combo @ additive / norm**2),
        "additive_correlation": _pearson(combo, additive),
    }


def baseline_no_change(control: np.ndarray) -> np.ndarray:
    """Predict the control mean for every perturbation."""
    return np.asarray(control, float).copy()


def baseline_mean_perturbation(control: np.ndarray, train_deltas: np.ndarray) -> np.ndarray:
    """Predict control + the average change over all training perturbations."""
    return np.asarray(control, float) + np.asarray(train_deltas, float).mean(axis=0)


def baseline_additive(
    control: np.ndarray, single_deltas: Mapping[str, np.ndarray], genes: Sequence[str]
) -> np.ndarray:
    """Predict a combination as control + the sum of its single-gene changes."""
    missing = [g for g in genes if g not in single_deltas]
    if missing:
        raise KeyError(f"No single-perturbation change for {missing}: additive is undefined.")
    return np.asarray(control, float) + sum(np.asarray(single_deltas[g], float) for g in genes)


def baseline_linear(
    features: pd.DataFrame,
    train_deltas: pd.DataFrame,
    targets: Sequence[str],
    control: np.ndarray,
    alpha: float = 1.0,
) -> np.ndarray:
    """Ridge regression from a perturbed gene's features to the change it causes.

    Parameters
    ----------
    features
        One row per gene (e.g. gene embeddings or PCA loadings), indexed by gene name.
    train_deltas
        Observed changes of the training perturbations (rows: perturbed gene, columns: genes).
    targets
        Perturbed genes to predict (rows of ``features``).
    control
        Control mean, added to the predicted changes.
    alpha
        Ridge penalty.

    Returns
    -------
    ``(len(targets), n_genes)`` predicted profiles.
    """
    from sklearn.linear_model import Ridge

    unknown = [g for g in [*train_deltas.index, *targets] if g not in features.index]
    if unknown:
        raise KeyError(f"No features for {unknown[:5]}: the linear baseline needs them.")
    model = Ridge(alpha=alpha).fit(features.loc[train_deltas.index], train_deltas.to_numpy())
    return np.asarray(control, float) + model.predict(features.loc[list(targets)])
