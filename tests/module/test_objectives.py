import math

import torch
import torch.nn.functional as F

from scformer_scvi.module import contrastive_loss, elastic_similarity_loss
from scformer_scvi.module._scformer import classification_loss, lookup_with_fallback


def test_contrastive_loss_prefers_matching_views():
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    matched = contrastive_loss(z, z + 0.01 * torch.randn(16, 8))
    shuffled = contrastive_loss(z, z[torch.randperm(16)])
    assert matched < shuffled


def test_elastic_similarity_pushes_away_from_threshold():
    base = torch.tensor([1.0, 0.0])
    at_threshold = torch.stack([base, torch.tensor([0.6, 0.8])])  # cosine 0.6
    far = torch.stack([base, base])  # cosine 1
    assert elastic_similarity_loss(at_threshold, 0.6) > elastic_similarity_loss(far, 0.6)
    assert torch.isclose(elastic_similarity_loss(at_threshold, 0.6), torch.tensor(1.0))


def test_unseen_batch_index_gets_the_mean_row():
    table = torch.arange(6.0).reshape(3, 2)
    rows = lookup_with_fallback(table, torch.tensor([0, 2, 3, 7]))
    torch.testing.assert_close(rows[:2], table[[0, 2]])
    torch.testing.assert_close(rows[2], table.mean(0))
    torch.testing.assert_close(rows[3], table.mean(0))


def test_weighted_classification_loss_by_hand():
    # Cell 0 (class 0) is predicted wrong, p = 1/(1+e^0.5); cell 1 right, p = e/(1+e).
    logits = torch.tensor([[0.0, 0.5], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    loss, accuracy = classification_loss(logits, labels, (3.0, 1.0))
    expected = (3 * math.log(1 + math.exp(0.5)) + math.log(1 + math.exp(-1))) / 4
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    reference = F.cross_entropy(logits, labels, weight=torch.tensor([3.0, 1.0]))
    assert math.isclose(loss.item(), reference.item(), rel_tol=1e-6)
    assert accuracy.item() == 0.5
    # Cells of a weight-0 class neither train nor count in accuracy; all-zero is 0, not NaN.
    loss, accuracy = classification_loss(logits, labels, (0.0, 1.0))
    assert math.isclose(loss.item(), math.log(1 + math.exp(-1)), rel_tol=1e-6)
    assert accuracy.item() == 1.0
    loss, accuracy = classification_loss(logits, labels, (0.0, 0.0))
    assert loss.item() == 0.0 and accuracy.item() == 0.0
