"""Cell-level objectives on the cell embeddings of a minibatch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    r"""In-batch contrastive loss between two views of the same cells (CCE).

    Each cell's first view must pick its own second view among all second views of the
    minibatch: cross-entropy over :math:`\cos(z^1_i, z^2_j) / \tau`, target :math:`j = i`.
    The views differ by dropout (SimCSE-style augmentation).
    """
    similarity = F.normalize(z1.float(), dim=-1) @ F.normalize(z2.float(), dim=-1).T
    target = torch.arange(z1.shape[0], device=z1.device)
    return F.cross_entropy(similarity / temperature, target)


def elastic_similarity_loss(z: torch.Tensor, threshold: float = 0.6) -> torch.Tensor:
    r"""Elastic cell similarity (ECS) over all pairs of distinct cells of the minibatch.

    .. math::
        \ell = \operatorname{mean}_{i \neq j}
        \Big(1 - \big(\max(0, \cos(z_i, z_j)) - t\big)^2\Big)

    Minimising it pushes each positive similarity away from the threshold :math:`t`: pairs
    above it become more similar and pairs below it less, sharpening cell-type structure.
    """
    normed = F.normalize(z.float(), dim=-1)
    similarity = F.relu(normed @ normed.T)
    off_diagonal = ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    return (1 - (similarity[off_diagonal] - threshold) ** 2).mean()


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Energy distance between two samples of vectors (rows).

    .. math:: 2\,\mathbb{E}\lVert x - y\rVert - \mathbb{E}\lVert x - x'\rVert
              - \mathbb{E}\lVert y - y'\rVert

    Zero exactly when the two distributions are equal; used to match the distribution of
    predicted perturbed cells to the observed ones, since control-perturbed pairs are not true
    matches (the same cell is never seen both ways).
    """
    return 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()


def mmd_rbf(
    x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...] = (1, 4, 16)
) -> torch.Tensor:
    r"""Maximum mean discrepancy with a sum of Gaussian kernels (biased estimate).

    .. math:: \mathbb{E}k(x, x') + \mathbb{E}k(y, y') - 2\,\mathbb{E}k(x, y),
              \quad k(a, b) = \sum_s e^{-\lVert a - b\rVert^2 / s}
    """

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        squared = torch.cdist(a, b) ** 2
        return sum(torch.exp(-squared / s) for s in bandwidths).mean()

    return kernel(x, x) + kernel(y, y) - 2 * kernel(x, y)


def grouped_distribution_loss(
    predicted: torch.Tensor, observed: torch.Tensor, groups: torch.Tensor, kind: str
) -> torch.Tensor:
    """Mean of ``energy`` or ``mmd`` distances between predicted and observed cells per group.

    Groups with fewer than two cells are skipped (a distribution needs several cells).
    """
    distance = {"energy": energy_distance, "mmd": mmd_rbf}.get(kind)
    if distance is None:
        raise ValueError(f"distribution_loss must be 'energy' or 'mmd', got {kind!r}.")
    _, group_of = torch.unique(groups, dim=0, return_inverse=True)
    losses = [
        distance(predicted[group_of == g], observed[group_of == g])
        for g in group_of.unique()
        if int((group_of == g).sum()) > 1
    ]
    return torch.stack(losses).mean() if losses else predicted.sum() * 0.0
