import pytest
import torch

from scformer_scvi.module import (
    BinnedHead,
    hurdle_log_prob,
    soft_ordinal_targets,
    zinb_log_prob,
)
from scformer_scvi.module._likelihoods import BinContext, bin_value_table


def test_zinb_matches_torch_distributions():
    torch.manual_seed(0)
    x = torch.tensor([0, 0, 1, 3, 7, 20, 0, 150], dtype=torch.float64)
    mu = torch.rand(8, dtype=torch.float64) * 30 + 0.1
    theta = torch.rand(8, dtype=torch.float64) * 5 + 0.05
    zi_logits = torch.randn(8, dtype=torch.float64)
    nb = torch.distributions.NegativeBinomial(total_count=theta, logits=mu.log() - theta.log())
    pi = torch.sigmoid(zi_logits)
    reference = torch.log(pi * (x == 0) + (1 - pi) * nb.log_prob(x).exp())
    torch.testing.assert_close(
        zinb_log_prob(x, mu, theta, zi_logits), reference, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("family", ["gamma", "lognormal"])
def test_hurdle_matches_torch_distributions(family):
    torch.manual_seed(0)
    y = torch.tensor([0.0, 0.5, 3.0, 0.0, 120.0, 7.5], dtype=torch.float64)
    gate = torch.randn(6, dtype=torch.float64)
    a, b = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64) * 0.5
    if family == "gamma":
        positive = torch.distributions.Gamma(b.exp(), b.exp() / a.exp())
    else:
        positive = torch.distributions.LogNormal(a, b.exp())
    bernoulli = torch.distributions.Bernoulli(logits=gate)
    safe = torch.where(y > 0, y, torch.ones_like(y))
    reference = bernoulli.log_prob((y > 0).double()) + (y > 0) * positive.log_prob(safe)
    torch.testing.assert_close(hurdle_log_prob(y, gate, positive), reference, atol=1e-5, rtol=1e-5)


def test_soft_ordinal_targets_sum_to_one_and_peak_at_the_true_bin():
    bins = torch.tensor([[0, 1, 25, 49, 50]])
    soft = soft_ordinal_targets(bins, 51, sigma=1.5)
    torch.testing.assert_close(soft.sum(-1), torch.ones(1, 5))
    assert torch.equal(soft.argmax(-1), bins)
    assert soft[0, 2, 24] > 0.1  # mass spreads to the neighbours
    assert soft[0, 2, 32] < 1e-3  # and not far


def test_binned_head_expectation_and_top_k():
    head = BinnedHead(d_model=4, n_bins=5, top_k=2)
    logits = torch.log(torch.tensor([[[0.1, 0.6, 0.05, 0.05, 0.2]]]))
    assert head.expected_bin({"logits": logits}).item() == pytest.approx((0.6 * 1 + 0.2 * 4) / 0.8)
    head.top_k = None
    expected = 0.6 + 0.05 * 2 + 0.05 * 3 + 0.2 * 4
    assert head.expected_bin({"logits": logits}).item() == pytest.approx(expected, rel=1e-5)


def test_bin_value_table_interpolates_missing_bins():
    context = BinContext(
        bins=torch.tensor([[1, 1, 3, 0]]),
        log_expression=torch.tensor([[1.0, 2.0, 5.0, 9.0]]),
        observed=torch.tensor([[True, True, True, False]]),
    )
    table = bin_value_table(context, n_bins=6)
    torch.testing.assert_close(table, torch.tensor([[0.0, 1.5, 3.25, 5.0, 5.0, 5.0]]))
