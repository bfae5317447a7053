"""Domain-specific batch normalisation of cell embeddings, chosen per cell."""

from __future__ import annotations

import torch
from torch import nn


class DomainBatchNorm(nn.Module):
    """Standardise each cell's embedding with the statistics of its own batch.

    Every batch (domain) keeps its own running mean and variance per dimension, like a
    separate :class:`torch.nn.BatchNorm1d` without affine parameters. In training, the cells
    of a batch are standardised with their minibatch's statistics, which update that batch's
    running ones; minibatches may mix batches (scGPT's DSBN needs one batch per minibatch). A
    batch with a single cell in the minibatch uses its running statistics. At inference every
    cell uses its batch's running statistics, so its embedding depends on that cell alone.

    Per-batch standardisation removes what shifts or scales a whole batch in embedding space;
    it also removes real differences in cell-type composition between batches, the known cost
    of this kind of correction.

    A batch index at or beyond ``n_batch`` (a batch never seen in training) uses the mean of
    the known batches' statistics. The running statistics of the first ``n_frozen`` batches
    never change (a query model keeps its reference's; only its new batches learn theirs).

    Parameters
    ----------
    n_batch
        Number of batches.
    n_features
        Width of the embedding.
    momentum
        Weight of a minibatch's statistics in the running ones.
    eps
        Added to the variance.
    """

    def __init__(
        self, n_batch: int, n_features: int, momentum: float = 0.1, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.n_frozen = 0
        self.register_buffer("running_mean", torch.zeros(n_batch, n_features))
        self.register_buffer("running_var", torch.ones(n_batch, n_features))

    def _running(self, batch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        known = (batch_index < self.running_mean.shape[0]).unsqueeze(-1)
        rows = batch_index.clamp(max=self.running_mean.shape[0] - 1)
        mean = torch.where(known, self.running_mean[rows], self.running_mean.mean(0))
        var = torch.where(known, self.running_var[rows], self.running_var.mean(0))
        return mean, var

    def forward(self, x: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """Standardised ``x`` (cells x features); ``batch_index`` holds each cell's batch."""
        mean, var = self._running(batch_index)
        if self.training:
            n_batch = self.running_mean.shape[0]
            index = batch_index.clamp(max=n_batch)  # row n_batch: batches never seen
            counts = torch.bincount(index, minlength=n_batch + 1).to(x.dtype).unsqueeze(-1)
            sums = x.new_zeros(n_batch + 1, x.shape[1]).index_add(0, index, x)
            batch_mean = sums / counts.clamp(min=1)
            centred = x - batch_mean[index]
            squares = x.new_zeros(n_batch + 1, x.shape[1]).index_add(0, index, centred**2)
            batch_var = squares / counts.clamp(min=1)  # biased, as BatchNorm normalises
            present = counts.squeeze(-1) >= 2
            present[: self.n_frozen] = False  # frozen batches always use running statistics
            present[n_batch] = False  # unseen batches keep the fallback
            own = present[index].unsqueeze(-1)
            mean = torch.where(own, batch_mean[index], mean)
            var = torch.where(own, batch_var[index], var)
            with torch.no_grad():
                unbiased = batch_var * counts / (counts - 1).clamp(min=1)
                update, m = present[:n_batch], self.momentum
                self.running_mean[update] += m * (
                    batch_mean[:n_batch][update] - self.running_mean[update]
                )
                self.running_var[update] += m * (
                    unbiased[:n_batch][update] - self.running_var[update]
                )
        return (x - mean) / torch.sqrt(var + self.eps)

    def pooled_std(self) -> torch.Tensor:
        """Each feature's standard deviation within a batch, pooled over the batches.

        The root of the batches' mean running variance: the spread the norm assumes for a
        batch it has never seen.
        """
        return torch.sqrt(self.running_var.mean(0) + self.eps)

    @torch.no_grad()
    def set_statistics(self, batch: int, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Replace the running statistics of one batch (e.g. estimated from all its cells)."""
        if not self.n_frozen <= batch < self.running_mean.shape[0]:
            raise IndexError(
                f"Batch {batch} is not a trainable batch of this norm (batches "
                f"{self.n_frozen}..{self.running_mean.shape[0] - 1})."
            )
        self.running_mean[batch] = mean.to(self.running_mean)
        self.running_var[batch] = var.to(self.running_var)
