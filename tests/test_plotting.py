import numpy as np
import pandas as pd
import pytest

from scformer_scvi.metrics import expression_correlation
from scformer_scvi.plotting import correlation_plot, distribution_plot


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    observed = pd.DataFrame(rng.gamma(1.0, 1.0, size=(60, 8)), columns=[f"g{i}" for i in range(8)])
    predicted = observed * 0.8 + rng.normal(0, 0.1, size=observed.shape)
    return observed, predicted


def test_expression_correlation_matches_numpy(frames):
    observed, predicted = frames
    scores = expression_correlation(observed, predicted)
    expected_gene = [np.corrcoef(observed[g], predicted[g])[0, 1] for g in observed]
    np.testing.assert_allclose(scores["per_gene"], expected_gene)
    expected_cell = [np.corrcoef(observed.iloc[i], predicted.iloc[i])[0, 1] for i in range(60)]
    np.testing.assert_allclose(scores["per_cell"], expected_cell)
    with pytest.raises(ValueError, match="same shape"):
        expression_correlation(observed, predicted.iloc[:5])


def test_figures_are_written(frames, tmp_path):
    observed, predicted = frames
    correlation_plot(observed, predicted, title="t", path=tmp_path / "c.png")
    distribution_plot(observed, predicted, n_genes=3, path=tmp_path / "d.png")
    assert (tmp_path / "c.png").stat().st_size > 5000
    assert (tmp_path / "d.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="same genes"):
        distribution_plot(observed, predicted[predicted.columns[::-1]])
