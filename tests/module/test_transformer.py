import pytest
import torch

from scformer_scvi.module import SCFormerModule
from scformer_scvi.nn import SelfAttention


@pytest.mark.parametrize("attention", ["sdpa", "linear"])
def test_padding_keys_get_no_attention(attention):
    torch.manual_seed(0)
    layer = SelfAttention(16, 4, attention).eval()
    x = torch.randn(1, 5, 16)
    padded = torch.cat([x, torch.randn(1, 3, 16) * 100], dim=1)
    mask = torch.tensor([[False] * 5 + [True] * 3])
    out_alone = layer(x, torch.zeros(1, 5, dtype=torch.bool))
    out_padded = layer(padded, mask)[:, :5]
    torch.testing.assert_close(out_padded, out_alone, atol=1e-5, rtol=1e-5)


def test_explicit_attention_weights_match_sdpa():
    torch.manual_seed(0)
    layer = SelfAttention(16, 4).eval()
    x = torch.randn(3, 7, 16)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[1, 4:] = True
    out, weights = layer(x, mask, return_weights=True)
    torch.testing.assert_close(out, layer(x, mask), atol=1e-5, rtol=1e-5)
    assert weights.shape == (3, 4, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 7))
    assert (weights[1, :, :, 4:] == 0).all()


def tiny_module(**kwargs):
    return SCFormerModule(n_tokens=50, pad_id=0, d_model=16, n_heads=2, n_layers=2, **kwargs)


def inputs(genes, bins):
    genes, bins = torch.tensor(genes), torch.tensor(bins)
    return {
        "gene_ids": genes,
        "bins": bins,
        "counts": bins.float(),
        "library_size": torch.full((genes.shape[0],), 100.0),
    }


@pytest.mark.parametrize("style", ["mean", "cls", "weighted"])
@pytest.mark.parametrize("batch_token", [False, True])
def test_cell_embedding_ignores_padding(style, batch_token):
    torch.manual_seed(0)
    module = tiny_module(cell_embedding=style, batch_token=batch_token, n_batch=2).eval()
    alone = module.inference(
        **inputs([[1, 7, 9, 12]], [[0, 3, 5, 1]]),
        padding_mask=torch.zeros(1, 4, dtype=torch.bool),
        batch_index=torch.tensor([[1]]),
    )["z"]
    padded = module.inference(
        **inputs([[1, 7, 9, 12, 0, 0, 0]], [[0, 3, 5, 1, 0, 0, 0]]),
        padding_mask=torch.tensor([[False] * 4 + [True] * 3]),
        batch_index=torch.tensor([[1]]),
    )["z"]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoding", ["binned", "continuous", "count_classes", "scaling"])
def test_masked_values_are_hidden_from_the_model(encoding):
    torch.manual_seed(0)
    module = tiny_module(value_encoding=encoding).eval()
    mask = torch.tensor([[False, True, False, False]])
    no_pad = torch.zeros(1, 4, dtype=torch.bool)
    outputs = [
        module.inference(
            **inputs([[1, 7, 9, 12]], [[0, b, 5, 1]]), padding_mask=no_pad, value_mask=mask
        )["hidden"]
        for b in (3, 40)
    ]
    torch.testing.assert_close(outputs[0], outputs[1])  # the masked value cannot leak


def test_gep_loss_counts_only_masked_tokens():
    torch.manual_seed(0)
    module = tiny_module(mvc_weight=0.0)
    tensors = {
        "gene_ids": torch.tensor([[1, 7, 9, 12]]),
        "bins": torch.tensor([[0, 3, 50, 1]]),
        "values": torch.tensor([[0.0, 2.0, 30.0, 1.0]]),
        "library_size": torch.tensor([33.0]),
        "padding_mask": torch.zeros(1, 4, dtype=torch.bool),
        "mlm_mask": torch.tensor([[False, True, False, False]]),
    }
    _, generative, loss = module(tensors)
    expected = (generative["gep"]["mean"][0, 1] - torch.log1p(torch.tensor(2.0 / 33 * 1e4))) ** 2
    torch.testing.assert_close(loss.extra_metrics["gep_loss"], expected.detach())
