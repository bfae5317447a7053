"""Gradient checkpointing recomputes activations without changing outputs or gradients."""

import pytest
import torch

from scformer_scvi.nn import TransformerEncoder


def forward_backward(encoder: TransformerEncoder, x: torch.Tensor, mask: torch.Tensor, seed: int):
    torch.manual_seed(seed)  # the same dropout masks for both runs
    x = x.clone().requires_grad_(True)
    out = encoder(x, mask)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {name: p.grad.clone() for name, p in encoder.named_parameters()}
    encoder.zero_grad()
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("attention", ["sdpa", "linear"])
def test_checkpointing_gives_the_same_outputs_and_gradients(attention):
    torch.manual_seed(0)
    encoder = TransformerEncoder(16, 2, 2, 32, dropout=0.2, attention=attention).train()
    x = torch.randn(3, 9, 16)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[1, 6:] = True

    plain = forward_backward(encoder, x, mask, seed=1)
    encoder.gradient_checkpointing = True
    recomputed = forward_backward(encoder, x, mask, seed=1)

    torch.testing.assert_close(recomputed[0], plain[0])
    torch.testing.assert_close(recomputed[1], plain[1])
    for name, grad in plain[2].items():
        torch.testing.assert_close(recomputed[2][name], grad, msg=name)


def test_checkpointing_is_off_at_inference_and_for_attention_weights():
    encoder = TransformerEncoder(16, 2, 2, 32, gradient_checkpointing=True).eval()
    x, mask = torch.randn(2, 5, 16), torch.zeros(2, 5, dtype=torch.bool)
    with torch.no_grad():
        out = encoder(x, mask)
    assert not out.requires_grad
    encoder.train()
    out, weights = encoder(x, mask, return_attention=True)  # explicit path, no recomputation
    assert len(weights) == 2 and out.shape == x.shape
