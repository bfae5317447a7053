import torch

from scformer_scvi.nn import DomainBatchNorm


def _separately(x, batches, n_batch):
    """Reference: one BatchNorm1d per batch, each fed only its own cells."""
    out = torch.empty_like(x)
    norms = [torch.nn.BatchNorm1d(x.shape[1], affine=False) for _ in range(n_batch)]
    for b, norm in enumerate(norms):
        rows = batches == b
        out[rows] = norm.train()(x[rows])
    return out, norms


def test_mixed_minibatch_equals_one_batch_norm_per_batch():
    torch.manual_seed(0)
    x = torch.randn(40, 8) * 3 + 1
    batches = torch.randint(0, 3, (40,))
    norm = DomainBatchNorm(3, 8).train()
    expected, references = _separately(x, batches, 3)
    torch.testing.assert_close(norm(x, batches), expected)
    for b, reference in enumerate(references):
        torch.testing.assert_close(norm.running_mean[b], reference.running_mean)
        torch.testing.assert_close(norm.running_var[b], reference.running_var)
    # inference: each cell with its batch's running statistics, whatever else is in the batch
    norm.eval()
    alone = torch.cat([norm(x[i : i + 1], batches[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(norm(x, batches), alone)


def test_shifted_batches_are_aligned():
    torch.manual_seed(1)
    x = torch.randn(200, 4)
    batches = torch.arange(200) % 2
    shifted = x + 10 * batches.unsqueeze(1)
    norm = DomainBatchNorm(2, 4)
    for _ in range(100):  # let the running statistics converge
        norm.train()(shifted, batches)
    out = norm.eval()(shifted, batches)
    for b in (0, 1):
        assert out[batches == b].mean(0).abs().max() < 0.05


def test_pooled_std_is_the_root_mean_variance_over_batches():
    torch.manual_seed(2)
    batches = torch.arange(4000) % 2
    x = torch.randn(4000, 3) * (1 + 2 * batches).unsqueeze(1)  # sd 1 in batch 0, 3 in batch 1
    norm = DomainBatchNorm(2, 3)
    for _ in range(100):  # let the running statistics converge
        norm.train()(x, batches)
    torch.testing.assert_close(norm.pooled_std(), torch.full((3,), 5.0**0.5), rtol=0.05, atol=0)


def test_unseen_batch_and_single_cells_use_running_statistics():
    norm = DomainBatchNorm(2, 3)
    norm.running_mean.copy_(torch.tensor([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]]))
    norm.running_var.copy_(torch.tensor([[1.0, 1.0, 1.0], [9.0, 9.0, 9.0]]))
    x = torch.ones(1, 3)
    unseen = norm.eval()(x, torch.tensor([5]))
    torch.testing.assert_close(unseen, (x - torch.tensor([1.0, 2.0, 3.0])) / (5.0 + 1e-5) ** 0.5)
    before = norm.running_mean.clone()
    # training: a batch with one cell in the minibatch, and an unseen batch, update nothing
    single = norm.train()(torch.ones(2, 3), torch.tensor([0, 7]))
    torch.testing.assert_close(norm.running_mean, before)
    torch.testing.assert_close(single[0], (x[0] - before[0]) / (1 + 1e-5) ** 0.5)


def test_frozen_batches_keep_their_statistics():
    norm = DomainBatchNorm(3, 2)
    norm.n_frozen = 2
    before = norm.running_mean.clone()
    norm.train()(torch.randn(30, 2) + 5, torch.arange(30) % 3)
    torch.testing.assert_close(norm.running_mean[:2], before[:2])
    assert not torch.equal(norm.running_mean[2], before[2])
