import torch

from scformer_scvi.module import SCFormerModule
from scformer_scvi.nn import SelfAttention


def test_padding_keys_get_no_attention():
    torch.manual_seed(0)
    attention = SelfAttention(16, 4).eval()
    x = torch.randn(1, 5, 16)
    padded = torch.cat([x, torch.randn(1, 3, 16) * 100], dim=1)
    mask = torch.tensor([[False] * 5 + [True] * 3])
    out_alone = attention(x, torch.zeros(1, 5, dtype=torch.bool))
    out_padded = attention(padded, mask)[:, :5]
    torch.testing.assert_close(out_padded, out_alone, atol=1e-5, rtol=1e-5)


def test_cell_embedding_ignores_padding_for_both_styles():
    torch.manual_seed(0)
    for style in ("mean", "cls"):
        module = SCFormerModule(
            n_tokens=50, pad_id=0, d_model=16, n_heads=2, n_layers=2, cell_embedding=style
        ).eval()
        genes = torch.tensor([[1, 7, 9, 12]])
        bins = torch.tensor([[0, 3, 5, 1]])
        alone = module.inference(genes, bins, torch.zeros(1, 4, dtype=torch.bool))["z"]
        padded = module.inference(
            torch.cat([genes, torch.zeros(1, 6, dtype=torch.long)], dim=1),
            torch.cat([bins, torch.zeros(1, 6, dtype=torch.long)], dim=1),
            torch.tensor([[False] * 4 + [True] * 6]),
        )["z"]
        torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_masked_values_are_hidden_from_the_model():
    torch.manual_seed(0)
    module = SCFormerModule(n_tokens=50, pad_id=0, d_model=16, n_heads=2, n_layers=1).eval()
    genes = torch.tensor([[1, 7, 9, 12]])
    mask = torch.tensor([[False, True, False, False]])
    no_pad = torch.zeros(1, 4, dtype=torch.bool)
    outputs = [
        module.inference(genes, torch.tensor([[0, b, 5, 1]]), no_pad, mask)["hidden"]
        for b in (3, 40)
    ]
    torch.testing.assert_close(outputs[0], outputs[1])  # the masked bin cannot leak


def test_loss_counts_only_masked_tokens():
    torch.manual_seed(0)
    module = SCFormerModule(n_tokens=50, pad_id=0, d_model=16, n_heads=2, n_layers=1)
    tensors = {
        "gene_ids": torch.tensor([[1, 7, 9, 12]]),
        "bins": torch.tensor([[0, 3, 50, 1]]),
        "padding_mask": torch.zeros(1, 4, dtype=torch.bool),
        "mlm_mask": torch.tensor([[False, True, False, False]]),
    }
    _, generative, loss = module(tensors)
    expected = (generative["value"][0, 1] - 3 / 50) ** 2
    torch.testing.assert_close(loss.extra_metrics["gep_mse"], expected.detach())
