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
