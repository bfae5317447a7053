"""Masked-value heads: the likelihood of a token's expression given a hidden state.

Every head maps hidden states ``(batch, n, d_model)`` to distribution parameters, scores the
true values of selected tokens (``loss``), and gives its prediction on one common scale,
``log1p(cp10k)`` (counts per 10,000 of the cell's library, log1p-transformed), so that heads can
be compared and used for imputation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Likelihood = Literal["mse", "binned", "zinb", "hurdle"]
LIKELIHOODS: tuple[str, ...] = ("mse", "binned", "zinb", "hurdle")
_EPS = 1e-8


@dataclass
class TokenTargets:
    """What is known about each token, ``(batch, n)`` unless noted.

    Attributes
    ----------
    counts
        Raw counts.
    log_expression
        ``log1p(counts / library_size * 1e4)``.
    bins
        Per-cell quantile bins.
    library_size
        ``(batch,)`` total counts of the cell.
    """

    counts: torch.Tensor
    log_expression: torch.Tensor
    bins: torch.Tensor
    library_size: torch.Tensor


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``values`` over ``mask`` for the minibatch, and per cell (0 if a cell has none)."""
    weight = mask.to(values.dtype)
    weighted = values * weight
    per_cell = weighted.sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)
    return weighted.sum() / weight.sum().clamp(min=1.0), per_cell


def _mlp(d_model: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, n_out))


class MSEHead(nn.Module):
    r"""Gaussian head with fixed variance: squared error on ``log1p(cp10k)``.

    .. math:: \ell = (\hat y - \log(1 + 10^4 x / L))^2
    """

    def __init__(self, d_model: int, **kwargs) -> None:
        super().__init__()
        self.mlp = _mlp(d_model, 1)

    def forward(self, hidden: torch.Tensor, gene_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predicted ``log1p(cp10k)`` per token."""
        return {"mean": self.mlp(hidden).squeeze(-1)}

    def token_loss(self, params: dict, targets: TokenTargets) -> torch.Tensor:
        """Per-token squared error."""
        return (params["mean"] - targets.log_expression) ** 2

    def predict(self, params: dict, context: BinContext | None = None) -> torch.Tensor:
        """Prediction on the ``log1p(cp10k)`` scale."""
        return params["mean"]


def soft_ordinal_targets(bins: torch.Tensor, n_bins: int, sigma: float) -> torch.Tensor:
    r"""Soft labels over neighbouring bins: :math:`w_j \propto \exp(-(j - b)^2 / 2\sigma^2)`.

    Each row sums to 1 and peaks at the true bin ``b``; ``sigma -> 0`` gives one-hot labels.
    """
    grid = torch.arange(n_bins, device=bins.device, dtype=torch.float32)
    logits = -((grid - bins.unsqueeze(-1).float()) ** 2) / (2 * max(sigma, 1e-3) ** 2)
    return torch.softmax(logits, dim=-1)


@dataclass
class BinContext:
    """Observed values of each cell by bin, to map a predicted bin back to expression.

    Attributes
    ----------
    bins
        ``(batch, n)`` bins of the context tokens.
    log_expression
        ``(batch, n)`` their ``log1p(cp10k)``.
    observed
        ``(batch, n)`` ``True`` for tokens whose value the model saw (not masked, not special).
    """

    bins: torch.Tensor
    log_expression: torch.Tensor
    observed: torch.Tensor


def bin_value_table(context: BinContext, n_bins: int) -> torch.Tensor:
    """Per cell, the mean ``log1p(cp10k)`` of its observed tokens in each bin ``(batch, n_bins)``.

    Bin 0 is 0. A bin with no observed token is interpolated linearly between the nearest
    observed bins (held flat beyond the last one), so the table is defined everywhere.
    """
    n_cells = context.bins.shape[0]
    weight = context.observed.to(context.log_expression.dtype)
    sums = torch.zeros(n_cells, n_bins, device=weight.device, dtype=weight.dtype)
    counts = torch.zeros_like(sums)
    sums.scatter_add_(1, context.bins, context.log_expression * weight)
    counts.scatter_add_(1, context.bins, weight)
    observed = counts > 0
    observed[:, 0] = True
    table = torch.where(observed, sums / counts.clamp(min=1.0), torch.zeros_like(sums))
    index = torch.arange(n_bins, device=weight.device).expand(n_cells, n_bins)
    below = torch.cummax(torch.where(observed, index, torch.zeros_like(index)), dim=1).values
    above_flipped = torch.where(observed, index, torch.full_like(index, n_bins)).flip(1)
    above = torch.cummin(above_flipped, dim=1).values.flip(1)
    above = torch.where(above >= n_bins, below, above)
    low, high = table.gather(1, below), table.gather(1, above)
    span = (above - below).clamp(min=1).to(table.dtype)
    return low + (high - low) * (index - below).to(table.dtype) / span


class BinnedHead(nn.Module):
    r"""Categorical head over value bins with soft ordinal targets.

    .. math:: \ell = -\sum_j w_j \log p_j, \qquad w_j \propto e^{-(j-b)^2 / 2\sigma^2}

    The predicted bin is the expectation :math:`\sum_j j\, p_j`, or with ``top_k`` the
    probability-weighted mean of the ``top_k`` most likely bins. It is mapped back to
    ``log1p(cp10k)`` through the cell's own observed values per bin (:func:`bin_value_table`).
    """

    def __init__(
        self, d_model: int, n_bins: int = 51, sigma: float = 1.0, top_k: int | None = None, **kwargs
    ) -> None:
        super().__init__()
        self.n_bins = n_bins
        self.sigma = sigma
        self.top_k = top_k
        self.mlp = _mlp(d_model, n_bins)

    def forward(self, hidden: torch.Tensor, gene_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bin logits per token."""
        return {"logits": self.mlp(hidden)}

    def token_loss(self, params: dict, targets: TokenTargets) -> torch.Tensor:
        """Per-token cross-entropy against soft ordinal labels."""
        soft = soft_ordinal_targets(targets.bins, self.n_bins, self.sigma)
        return -(soft * F.log_softmax(params["logits"].float(), dim=-1)).sum(-1)

    def expected_bin(self, params: dict) -> torch.Tensor:
        """Expected bin, or the weighted mean of the ``top_k`` most likely bins."""
        probs = torch.softmax(params["logits"].float(), dim=-1)
        if self.top_k:
            top, index = probs.topk(self.top_k, dim=-1)
            return (top * index.float()).sum(-1) / top.sum(-1)
        return (probs * torch.arange(self.n_bins, device=probs.device)).sum(-1)

    def predict(self, params: dict, context: BinContext | None = None) -> torch.Tensor:
        """Prediction on the ``log1p(cp10k)`` scale (needs the cell's observed values)."""
        if context is None:
            raise ValueError("The binned head needs the cell's observed values to predict.")
        table = bin_value_table(context, self.n_bins)
        expected = self.expected_bin(params).clamp(0, self.n_bins - 1)
        low = expected.floor().long().clamp(max=self.n_bins - 2)
        frac = expected - low
        return table.gather(1, low) * (1 - frac) + table.gather(1, low + 1) * frac


def zinb_log_prob(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor
) -> torch.Tensor:
    r"""Log-likelihood of counts under a zero-inflated negative binomial.

    With :math:`\pi = \sigma(\text{zi\_logits})` and NB mean :math:`\mu`, inverse dispersion
    :math:`\theta`:

    .. math::
        \log p(0) &= \log\big(\pi + (1-\pi)\,(\tfrac{\theta}{\theta+\mu})^\theta\big) \\
        \log p(x>0) &= \log(1-\pi) + \log\Gamma(x+\theta) - \log\Gamma(\theta)
            - \log\Gamma(x+1) + \theta \log\tfrac{\theta}{\theta+\mu}
            + x \log\tfrac{\mu}{\theta+\mu}
    """
    log_theta_mu = torch.log(theta + mu + _EPS)
    nb_zero = theta * (torch.log(theta + _EPS) - log_theta_mu)
    log_zero = F.softplus(-zi_logits + nb_zero) - F.softplus(-zi_logits)
    log_positive = (
        -F.softplus(zi_logits)
        + nb_zero
        + x * (torch.log(mu + _EPS) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )
    return torch.where(x < _EPS, log_zero, log_positive)


class ZINBHead(nn.Module):
    r"""Zero-inflated negative binomial on raw counts, scaled by the cell's library size.

    .. math:: x \sim \mathrm{ZINB}\big(\mu = L \cdot e^{r} / 10^4,\ \theta_g,\ \pi = \sigma(z)\big)

    ``r`` (log rate per 10k counts) and ``z`` come from the hidden state; the inverse
    dispersion :math:`\theta_g` is learned per gene. The prediction is
    :math:`\log(1 + (1-\pi)\,e^{r})`, the expected count per 10k on the log1p scale.
    """

    def __init__(self, d_model: int, n_tokens: int = 1, **kwargs) -> None:
        super().__init__()
        self.mlp = _mlp(d_model, 2)
        self.log_theta = nn.Parameter(torch.zeros(n_tokens))

    def forward(self, hidden: torch.Tensor, gene_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Log rate per 10k, zero-inflation logit and per-gene inverse dispersion."""
        out = self.mlp(hidden).float()
        return {
            "log_rate": out[..., 0].clamp(-15, 15),
            "zi_logits": out[..., 1],
            "theta": self.log_theta[gene_ids].float().exp(),
        }

    def token_loss(self, params: dict, targets: TokenTargets) -> torch.Tensor:
        """Per-token negative log-likelihood."""
        mu = params["log_rate"].exp() * targets.library_size.unsqueeze(-1) / 1e4
        return -zinb_log_prob(targets.counts.float(), mu, params["theta"], params["zi_logits"])

    def predict(self, params: dict, context: BinContext | None = None) -> torch.Tensor:
        """Prediction on the ``log1p(cp10k)`` scale."""
        return torch.log1p(torch.sigmoid(-params["zi_logits"]) * params["log_rate"].exp())


def hurdle_log_prob(
    y: torch.Tensor, gate_logits: torch.Tensor, positive: torch.distributions.Distribution
) -> torch.Tensor:
    r"""Log-likelihood under a hurdle model: a point mass at 0 and a density on :math:`y > 0`.

    .. math::
        \log p(0) = \log(1 - \sigma(g)), \qquad
        \log p(y>0) = \log \sigma(g) + \log f(y)
    """
    safe_y = torch.where(y > 0, y, torch.ones_like(y))
    log_positive = F.logsigmoid(gate_logits) + positive.log_prob(safe_y)
    return torch.where(y > 0, log_positive, F.logsigmoid(-gate_logits))


class HurdleHead(nn.Module):
    r"""Hurdle ("point-gamma") head on normalised expression :math:`y = \log(1 + 10^4 x / L)`.

    A gate gives :math:`P(y > 0) = \sigma(g)`; the positive part :math:`f` is a gamma
    (shape :math:`k`, mean :math:`m`) or a log-normal (:math:`\mu, s`) density and is scored on
    non-zero targets only:

    .. math::
        \ell = -[y>0]\,\big(\log\sigma(g) + \log f(y)\big) - [y=0]\,\log(1-\sigma(g))

    The prediction is :math:`\sigma(g)\,\mathbb{E}_f[y]` with :math:`\mathbb{E}_f[y] = m`
    (gamma) or :math:`e^{\mu + s^2/2}` (log-normal). Modelling the log1p scale keeps the
    positive part's log-likelihood (and its gradients) on the scale of the gate's, which the
    raw :math:`10^4 x / L` scale (values in the hundreds) does not.
    """

    def __init__(
        self, d_model: int, positive: Literal["gamma", "lognormal"] = "gamma", **kwargs
    ) -> None:
        super().__init__()
        if positive not in ("gamma", "lognormal"):
            raise ValueError(f"positive must be 'gamma' or 'lognormal', got {positive!r}.")
        self.positive = positive
        self.mlp = _mlp(d_model, 3)

    def forward(self, hidden: torch.Tensor, gene_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gate logit and the two parameters of the positive part."""
        out = self.mlp(hidden).float()
        return {
            "gate_logits": out[..., 0],
            "a": out[..., 1].clamp(-8, 4),
            "b": out[..., 2].clamp(-7, 7),
        }

    def positive_distribution(self, params: dict) -> torch.distributions.Distribution:
        """The density of the positive part."""
        if self.positive == "gamma":
            mean, shape = params["a"].exp(), params["b"].exp()
            return torch.distributions.Gamma(shape, shape / mean, validate_args=False)
        return torch.distributions.LogNormal(params["a"], params["b"].exp(), validate_args=False)

    def token_loss(self, params: dict, targets: TokenTargets) -> torch.Tensor:
        """Per-token negative log-likelihood."""
        y = targets.log_expression.float()
        return -hurdle_log_prob(y, params["gate_logits"], self.positive_distribution(params))

    def predict(self, params: dict, context: BinContext | None = None) -> torch.Tensor:
        """Prediction on the ``log1p(cp10k)`` scale."""
        if self.positive == "gamma":
            positive_mean = params["a"].exp()
        else:
            positive_mean = (params["a"] + 0.5 * (2 * params["b"]).exp()).exp()
        return torch.sigmoid(params["gate_logits"]) * positive_mean


def make_head(likelihood: Likelihood, d_model: int, **kwargs) -> nn.Module:
    """Build the head for ``likelihood`` (``"mse"``, ``"binned"``, ``"zinb"``, ``"hurdle"``)."""
    heads = {"mse": MSEHead, "binned": BinnedHead, "zinb": ZINBHead, "hurdle": HurdleHead}
    if likelihood not in heads:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")
    return heads[likelihood](d_model, **kwargs)
