"""Import of scGPT checkpoints, on synthetic state dicts with scGPT's key names and shapes."""

import json
import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from scformer_scvi import SCFormer

D, HEADS, LAYERS, FF, BINS = 16, 2, 2, 32, 11
GENES = [f"G{i}" for i in range(20)]


def scgpt_checkpoint(layout: str = "flash") -> tuple[dict, dict, dict]:
    """State dict, vocab.json and args.json of a small scGPT ``TransformerModel``."""
    tokens = ["<pad>", *GENES[::-1], "<cls>", "<eoc>"]  # scGPT order differs from ours
    vocab = {token: i for i, token in enumerate(tokens)}
    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    state = {
        "encoder.embedding.weight": rand(len(tokens), D),
        "encoder.enc_norm.weight": rand(D),
        "encoder.enc_norm.bias": rand(D),
        "value_encoder.linear1.weight": rand(D, 1),
        "value_encoder.linear1.bias": rand(D),
        "value_encoder.linear2.weight": rand(D, D),
        "value_encoder.linear2.bias": rand(D),
        "value_encoder.norm.weight": rand(D),
        "value_encoder.norm.bias": rand(D),
    }
    attention = {
        "flash": ("self_attn.Wqkv.weight", "self_attn.Wqkv.bias"),
        "flash2": ("self_attn._impl.Wqkv.weight", "self_attn._impl.Wqkv.bias"),
        "torch": ("self_attn.in_proj_weight", "self_attn.in_proj_bias"),
    }[layout]
    for i in range(LAYERS):
        prefix = f"transformer_encoder.layers.{i}."
        state[prefix + attention[0]] = rand(3 * D, D)
        state[prefix + attention[1]] = rand(3 * D)
        out = "self_attn._impl.out_proj" if layout == "flash2" else "self_attn.out_proj"
        state.update(
            {
                f"{prefix}{out}.weight": rand(D, D),
                f"{prefix}{out}.bias": rand(D),
                f"{prefix}linear1.weight": rand(FF, D),
                f"{prefix}linear1.bias": rand(FF),
                f"{prefix}linear2.weight": rand(D, FF),
                f"{prefix}linear2.bias": rand(D),
                f"{prefix}norm1.weight": rand(D),
                f"{prefix}norm1.bias": rand(D),
                f"{prefix}norm2.weight": rand(D),
                f"{prefix}norm2.bias": rand(D),
            }
        )
    args = {
        "embsize": D,
        "nheads": HEADS,
        "nlayers": LAYERS,
        "d_hid": FF,
        "n_bins": BINS,
        "input_emb_style": "continuous",
        "mask_value": -1,
        "pad_value": -2,
        "dropout": 0.2,
        "cell_emb_style": "cls",
    }
    return state, vocab, args


def write(tmp_path, state, vocab, args, name="best_model.pt"):
    torch.save(state, tmp_path / name)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "args.json").write_text(json.dumps(args))
    return tmp_path / name, tmp_path / "vocab.json", tmp_path / "args.json"


def load(paths, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Imported scGPT weights", UserWarning)
        return SCFormer.from_scgpt_checkpoint(*paths, **kwargs)


@pytest.mark.parametrize("layout", ["flash", "flash2", "torch"])
def test_every_tensor_of_the_scgpt_layout_is_mapped(tmp_path, layout):
    state, vocab, args = scgpt_checkpoint(layout)
    with pytest.warns(UserWarning, match="post-norm"):
        model = SCFormer.from_scgpt_checkpoint(*write(tmp_path, state, vocab, args))
    report = model.scgpt_import_report_
    assert set(report["mapped"]) == set(state)
    assert report["unexpected"] == report["missing"] == report["misshaped"] == []
    assert "special token '<eoc>' not imported (unused)" in report["notes"]
    ours = model.module.state_dict()
    qkv = "self_attn._impl.Wqkv" if layout == "flash2" else "self_attn.Wqkv"
    source = {"torch": "self_attn.in_proj_weight"}.get(layout, f"{qkv}.weight")
    for i in range(LAYERS):
        prefix = f"transformer_encoder.layers.{i}."
        assert torch.equal(ours[f"encoder.layers.{i}.attn.qkv.weight"], state[prefix + source])
        assert torch.equal(
            ours[f"encoder.layers.{i}.ffn.3.weight"], state[prefix + "linear2.weight"]
        )
        assert torch.equal(ours[f"encoder.layers.{i}.norm_ffn.bias"], state[prefix + "norm2.bias"])
    normed = F.layer_norm(
        state["encoder.embedding.weight"],
        (D,),
        state["encoder.enc_norm.weight"],
        state["encoder.enc_norm.bias"],
    )
    genes = ours["embedding.gene.weight"]
    for token in ("G0", "G7", "<cls>"):
        torch.testing.assert_close(genes[model.vocab_[token]], normed[vocab[token]])
    assert not genes[model.vocab_.pad_id].any()
    value = state["value_encoder.linear2.weight"] @ F.relu(
        state["value_encoder.linear1.weight"][:, 0] * 3.0 + state["value_encoder.linear1.bias"]
    )
    value = F.layer_norm(
        value + state["value_encoder.linear2.bias"],
        (D,),
        state["value_encoder.norm.weight"],
        state["value_encoder.norm.bias"],
    )
    torch.testing.assert_close(ours["embedding.value.weight"][3], value)
    assert ours["embedding.value.weight"].shape == (BINS + 1, D)  # bins + the mask value
    assert model.module.cell_embedding == "cls"


def test_a_misshaped_tensor_is_refused_with_its_name(tmp_path):
    state, vocab, args = scgpt_checkpoint()
    state["transformer_encoder.layers.1.self_attn.Wqkv.weight"] = torch.zeros(3 * D, D + 1)
    with pytest.raises(ValueError, match=r"mis-shaped \(1\).*layers\.1\.self_attn\.Wqkv\.weight"):
        load(write(tmp_path, state, vocab, args))


def test_unmappable_tensors_are_refused_unless_not_strict(tmp_path):
    state, vocab, args = scgpt_checkpoint()
    state["decoder.fc.0.weight"] = torch.zeros(D, D)
    del state["transformer_encoder.layers.0.linear1.bias"]
    paths = write(tmp_path, state, vocab, args)
    with pytest.raises(ValueError, match="would be dropped.*decoder.fc.0.weight") as error:
        load(paths)
    assert "encoder.layers.0.ffn.0.bias" in str(error.value)
    assert "strict=False" in str(error.value)
    with pytest.warns(UserWarning, match="(?s)dropped tensors:.*decoder.fc.0.weight"):
        model = load(paths, strict=False)
    assert model.scgpt_import_report_["unexpected"] == ["decoder.fc.0.weight"]


def test_imported_model_embeds_data_and_saves(tmp_path, baron_small):
    state, vocab, args = scgpt_checkpoint()
    wrapped = {"model_state_dict": {f"module.{k}": v for k, v in state.items()}}
    paths = write(tmp_path, wrapped, vocab, args)
    counts = sp.random(30, len(GENES), density=0.3, format="csr", random_state=0) * 10
    counts.data = np.ceil(counts.data)
    adata = ad.AnnData(X=counts.astype(np.float32))
    adata.var_names = GENES
    adata = adata[np.asarray(adata.X.sum(axis=1)).ravel() > 0].copy()
    SCFormer.setup_anndata(adata)
    model = load(paths, adata=adata, max_seq_len=16)
    latent = model.get_latent_representation()
    assert latent.shape == (adata.n_obs, D) and np.isfinite(latent).all()
    model.save(tmp_path / "imported")
    loaded = SCFormer.load(tmp_path / "imported", adata)
    assert loaded.scgpt_import_report_["mapped"] == model.scgpt_import_report_["mapped"]
    np.testing.assert_array_equal(loaded.get_latent_representation(), latent)


class NotATensor:
    pass


def test_pickled_objects_are_never_loaded(tmp_path):
    state, vocab, args = scgpt_checkpoint()
    state["evil"] = NotATensor()
    with pytest.raises(ValueError, match="weights_only=True"):
        load(write(tmp_path, state, vocab, args))
    with pytest.raises(ValueError, match="lacks"):
        load(write(tmp_path, scgpt_checkpoint()[0], vocab, {"embsize": D}))
