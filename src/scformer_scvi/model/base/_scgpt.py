"""Import of scGPT checkpoints (``best_model.pt`` + ``vocab.json`` + ``args.json``).

scGPT's ``TransformerModel`` and scFormer share the overall design (gene + value token
embeddings, a transformer encoder, masked-value heads), so the pretrained encoder transfers; the
heads differ in shape and are trained afresh. What maps (scGPT key -> ours):

- ``encoder.embedding.weight`` + ``encoder.enc_norm.*`` -> ``embedding.gene.weight``: scGPT
  normalises each gene embedding on its own (a function of the gene alone), so the layer norm
  is applied to the table once; rows are reordered by gene name into our vocabulary
  (``<pad>`` and ``<cls>`` included).
- ``value_encoder.*`` -> ``embedding.value.weight``: scGPT feeds bin numbers to its value
  encoder (``input_style="binned"``), an MLP + layer norm (``continuous``) or an embedding +
  layer norm (``category``); its output for each bin and for the mask value is tabulated into
  our binned value embedding.
- ``transformer_encoder.layers.<i>.``: ``self_attn.Wqkv`` (flash-attn 1.x),
  ``self_attn._impl.Wqkv`` (scGPT's flash-attn 2 wrapper) or ``self_attn.in_proj_weight``
  (torch) -> ``encoder.layers.<i>.attn.qkv`` (the same q/k/v-by-head layout),
  ``self_attn.out_proj`` -> ``attn.out``, ``linear1``/``linear2`` -> ``ffn.0``/``ffn.3``,
  ``norm1``/``norm2`` -> ``norm_attn``/``norm_ffn``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from anndata import AnnData
from safetensors.torch import load_file
from scvi import settings

from scformer_scvi.data import GeneVocab

_LAYER = re.compile(r"^transformer_encoder\.layers\.(\d+)\.(.+)$")
_LAYER_KEYS = {  # scGPT name inside a layer -> ours
    "self_attn.Wqkv.weight": "attn.qkv.weight",
    "self_attn.Wqkv.bias": "attn.qkv.bias",
    "self_attn._impl.Wqkv.weight": "attn.qkv.weight",
    "self_attn._impl.Wqkv.bias": "attn.qkv.bias",
    "self_attn.in_proj_weight": "attn.qkv.weight",
    "self_attn.in_proj_bias": "attn.qkv.bias",
    "self_attn.out_proj.weight": "attn.out.weight",
    "self_attn.out_proj.bias": "attn.out.bias",
    "self_attn._impl.out_proj.weight": "attn.out.weight",
    "self_attn._impl.out_proj.bias": "attn.out.bias",
    "linear1.weight": "ffn.0.weight",
    "linear1.bias": "ffn.0.bias",
    "linear2.weight": "ffn.3.weight",
    "linear2.bias": "ffn.3.bias",
    "norm1.weight": "norm_attn.weight",
    "norm1.bias": "norm_attn.bias",
    "norm2.weight": "norm_ffn.weight",
    "norm2.bias": "norm_ffn.bias",
}
_GENE_KEYS = ("encoder.embedding.weight", "encoder.enc_norm.weight", "encoder.enc_norm.bias")
_VALUE_KEYS = {
    "continuous": (
        "value_encoder.linear1.weight",
        "value_encoder.linear1.bias",
        "value_encoder.linear2.weight",
        "value_encoder.linear2.bias",
        "value_encoder.norm.weight",
        "value_encoder.norm.bias",
    ),
    "category": (
        "value_encoder.embedding.weight",
        "value_encoder.enc_norm.weight",
        "value_encoder.enc_norm.bias",
    ),
}
# Our tensors that are expected from a checkpoint; the others have no scGPT counterpart.
_CORE = re.compile(r"^(embedding\.gene\.weight|embedding\.value\.weight|encoder\.layers\..+)$")
_CELL_EMBEDDING = {"cls": "cls", "avg-pool": "mean", "w-pool": "weighted"}


class ScGPTMixin:
    """``from_scgpt_checkpoint``: start a model from pretrained scGPT weights."""

    @classmethod
    def from_scgpt_checkpoint(
        cls,
        state_dict_path: str | Path,
        vocab_json: str | Path,
        args_json: str | Path,
        adata: AnnData | None = None,
        strict: bool = True,
        **model_kwargs,
    ):
        """Build a model from an scGPT checkpoint (e.g. ``scGPT_human``).

        The encoder (gene and value embeddings, transformer blocks) is imported as described
        in this module's docstring; scGPT's heads (``decoder``, ``mvc_decoder``,
        ``cls_decoder``, ``grad_reverse_discriminator``) and batch modules (``batch_encoder``,
        ``dsbn``) have other shapes or meanings than ours and are not imported. Every
        checkpoint tensor is accounted for: with ``strict=True`` (default) any tensor that
        would be dropped, any expected tensor that is missing and any tensor of the wrong
        shape stops the import with a list of them all; ``strict=False`` drops them and warns
        with the list. The report is kept as ``model.scgpt_import_report_``.

        Architecture differences that no weight mapping can remove are reported in a warning
        (and in the report), not refused: the imported model is a warm start to fine-tune,
        not a numerical copy of scGPT. scFormer blocks are pre-norm
        (``x + attn(norm(x))``) with a GELU feed-forward and a final layer norm; scGPT's are
        post-norm (``norm(x + attn(x))``) with ReLU by default, and its ``pre_norm`` variant
        adds the residual to the normalised input. Our embedding layer normalises the sum of
        gene and value embeddings, scGPT normalises each before adding them. The final layer
        norm, the embedding norm, the heads and the cell-embedding statistics start fresh.

        Tensors are read with ``torch.load(weights_only=True)`` (``.pt``/``.pth``) or from
        safetensors; nothing is unpickled.

        Parameters
        ----------
        state_dict_path
            scGPT state dict (``best_model.pt``, optionally wrapped as
            ``{"model_state_dict": ...}`` and/or with DDP ``module.`` prefixes).
        vocab_json
            scGPT's ``vocab.json`` (token -> id).
        args_json
            scGPT's ``args.json`` (``embsize``, ``nheads``, ``nlayers``, ``d_hid``,
            ``n_bins``, ``input_emb_style``, ...).
        adata
            Data already registered with :meth:`setup_anndata` (batch, labels); ``None``
            builds the model without data.
        strict
            Refuse (``True``) or drop with a warning (``False``) unmappable, missing and
            mis-shaped tensors.
        **model_kwargs
            Other constructor arguments (``max_seq_len``, ``likelihood``, ...).

        Returns
        -------
        The model, usable for embedding before any training (``pretrained_`` is ``True``).
        """
        args = _read_args(args_json)
        token_ids = _read_vocab(vocab_json)
        state = _read_state_dict(state_dict_path)
        style = args.get("input_emb_style", "continuous")
        if style not in _VALUE_KEYS:
            raise ValueError(
                f"input_emb_style={style!r} cannot be imported: only 'continuous' and "
                "'category' value encoders (applied to bin numbers) have a binned equivalent."
            )
        specials = [t for t in token_ids if t.startswith("<") and t.endswith(">")]
        genes = sorted((t for t in token_ids if t not in specials), key=token_ids.get)
        vocab = GeneVocab(genes)
        kwargs = {
            "d_model": int(args["embsize"]),
            "n_heads": int(args["nheads"]),
            "n_layers": int(args["nlayers"]),
            "d_ff": int(args["d_hid"]),
            "n_bins": int(args.get("n_bins", 51)),
            "dropout": float(args.get("dropout", 0.1)),
            "value_encoding": "binned",
            "cell_embedding": _CELL_EMBEDDING.get(args.get("cell_emb_style", "cls"), "mean"),
            **model_kwargs,
        }
        if kwargs.get("value_encoding") != "binned":
            raise ValueError("scGPT value encoders import into value_encoding='binned' only.")
        if adata is None:
            model = cls(None, registry=_registry_without_data(cls, genes), vocab=vocab, **kwargs)
        else:
            model = cls(adata, vocab=vocab, **kwargs)

        converted, report = _convert(state, token_ids, vocab, args, model.module.state_dict())
        report["notes"] += [
            f"special token {t!r} not imported (unused)"
            for t in specials
            if t not in ("<pad>", "<cls>")
        ]
        problems = _problems(report)
        if problems and strict:
            raise ValueError(
                "The scGPT checkpoint does not map completely onto scFormer; nothing was "
                "loaded.\n  " + "\n  ".join(problems) + "\nPass strict=False to import the "
                "rest and drop these (the dropped heads are trained afresh when fine-tuning)."
            )
        if problems:
            _warn("scGPT import dropped tensors:\n  " + "\n  ".join(problems))
        model.module.load_state_dict(converted)
        report["architecture"] = _architecture_differences(args)
        _warn(
            "Imported scGPT weights into a different architecture (fine-tune before use):\n  "
            + "\n  ".join(report["architecture"])
        )
        model.scgpt_import_report_ = report
        model.pretrained_ = True
        return model


# ------------------------------------------------------------------------------- reading
def _read_json(path: str | Path, what: str) -> object:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} {path} is not valid JSON: {error}") from None


def _read_args(path: str | Path) -> dict:
    args = _read_json(path, "scGPT args file")
    required = ("embsize", "nheads", "nlayers", "d_hid")
    missing = [k for k in required if not isinstance(args, dict) or k not in args]
    if missing:
        raise ValueError(f"scGPT args file {path} lacks {missing} (expected scGPT's args.json).")
    return args


def _read_vocab(path: str | Path) -> dict[str, int]:
    vocab = _read_json(path, "scGPT vocabulary")
    if not isinstance(vocab, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()
    ):
        raise ValueError(f"scGPT vocabulary {path} must map token names to integer ids.")
    if len(set(vocab.values())) != len(vocab) or min(vocab.values(), default=0) < 0:
        raise ValueError(f"scGPT vocabulary {path} has repeated or negative ids.")
    return vocab


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scGPT checkpoint {path} not found.")
    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # any failure: say why, in the user's terms
            raise ValueError(
                f"{path} is not a plain tensor state dict readable with weights_only=True "
                f"({type(error).__name__}: {error}). Re-save it as a state dict of tensors."
            ) from None
    for wrapper in ("model_state_dict", "state_dict"):
        if isinstance(state, Mapping) and set(state) == {wrapper}:
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"{path} does not hold a state dict (names -> tensors).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _registry_without_data(cls, genes: list[str]) -> dict:
    """The registry ``setup_anndata`` gives a one-cell AnnData over ``genes``."""
    counts = sp.csr_matrix((np.ones(1, np.float32), ([0], [0])), shape=(1, len(genes)))
    dummy = AnnData(X=counts, var={"gene": genes})
    dummy.var_names = genes
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Category .* fewer than 3 cells", UserWarning)
        cls.setup_anndata(dummy)
    manager = cls._get_most_recent_anndata_manager(dummy, required=True)
    cls._setup_adata_manager_store.pop(manager.adata_uuid, None)
    return manager.registry


# ------------------------------------------------------------------------------- mapping
def _convert(
    state: dict[str, torch.Tensor],
    token_ids: dict[str, int],
    vocab: GeneVocab,
    args: dict,
    target: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict]:
    """Our state dict filled from ``state``, and what happened to every tensor."""
    report = {"mapped": {}, "unexpected": [], "missing": [], "misshaped": [], "notes": []}
    converted = dict(target)
    used: set[str] = set()

    def put(ours: str, value: torch.Tensor, sources: tuple[str, ...]) -> None:
        used.update(sources)
        if ours not in target:
            report["unexpected"].extend(sources)
        elif value.shape != target[ours].shape:
            shapes = f"{tuple(value.shape)} vs {tuple(target[ours].shape)}"
            report["misshaped"].append(f"{', '.join(sources)} -> {ours}: {shapes}")
        else:
            converted[ours] = value.to(target[ours].dtype)
            for source in sources:
                report["mapped"][source] = ours

    def tensors(keys: tuple[str, ...], shapes: tuple[tuple[int, ...], ...]) -> list | None:
        absent = [k for k in keys if k not in state]
        if absent:
            report["missing"].extend(absent)
            return None
        bad = [
            f"{k}: {tuple(state[k].shape)} vs expected {shape}"
            for k, shape in zip(keys, shapes, strict=True)
            if -1 not in shape and tuple(state[k].shape) != shape
        ]
        used.update(keys)
        report["misshaped"].extend(bad)
        return None if bad else [state[k].float() for k in keys]

    d_model = int(args["embsize"])
    gene = tensors(_GENE_KEYS, ((-1, d_model), (d_model,), (d_model,)))
    if gene is not None:
        table = F.layer_norm(gene[0], (d_model,), gene[1], gene[2])
        rows = target["embedding.gene.weight"].clone().float()
        ours = [vocab.cls_id, *range(len(vocab.special_tokens), len(vocab))]
        theirs = [token_ids.get("<cls>", -1), *(token_ids[g] for g in vocab.genes)]
        known = np.asarray(theirs) >= 0
        if max(theirs) >= table.shape[0]:
            report["misshaped"].append(
                f"encoder.embedding.weight: {table.shape[0]} rows but vocab.json has id "
                f"{max(theirs)}"
            )
        else:
            rows[np.asarray(ours)[known]] = table[np.asarray(theirs)[known]]
            rows[vocab.pad_id] = 0.0
            put("embedding.gene.weight", rows, _GENE_KEYS)

    style = args.get("input_emb_style", "continuous")
    n_bins = int(args.get("n_bins", 51))
    mask_value = float(args.get("mask_value", -1))
    if style == "continuous":
        shapes = ((d_model, 1), (d_model,), (d_model, d_model), (d_model,), (d_model,), (d_model,))
        value = tensors(_VALUE_KEYS[style], shapes)
        if value is not None:
            w1, b1, w2, b2, nw, nb = value
            x = torch.cat([torch.arange(n_bins, dtype=torch.float32), torch.tensor([mask_value])])
            hidden = F.linear(F.relu(F.linear(x[:, None], w1, b1)), w2, b2)
            put(
                "embedding.value.weight",
                F.layer_norm(hidden, (d_model,), nw, nb),
                _VALUE_KEYS[style],
            )
    else:
        value = tensors(_VALUE_KEYS[style], ((-1, d_model), (d_model,), (d_model,)))
        if value is not None:
            mask_row = int(mask_value) if mask_value >= 0 else n_bins + 1  # scGPT's default
            rows = torch.cat([value[0][:n_bins], value[0][mask_row : mask_row + 1]])
            put(
                "embedding.value.weight",
                F.layer_norm(rows, (d_model,), value[1], value[2]),
                _VALUE_KEYS[style],
            )

    for key, tensor in state.items():
        match = _LAYER.match(key)
        if match and match.group(2) in _LAYER_KEYS:
            put(f"encoder.layers.{match.group(1)}.{_LAYER_KEYS[match.group(2)]}", tensor, (key,))
    report["unexpected"] += sorted(set(state) - used)
    provided = set(report["mapped"].values())
    report["missing"] += sorted(
        k
        for k in target
        if _CORE.match(k) and k not in provided and not any(k in m for m in report["misshaped"])
    )
    report["initialised"] = sorted(k for k in target if not _CORE.match(k))
    return converted, report


def _problems(report: dict) -> list[str]:
    return [
        f"{label} ({len(report[key])}): {', '.join(report[key])}"
        for key, label in (
            ("unexpected", "no scFormer counterpart, would be dropped"),
            ("missing", "expected but missing"),
            ("misshaped", "mis-shaped"),
        )
        if report[key]
    ]


def _architecture_differences(args: dict) -> list[str]:
    pre_norm = bool(args.get("pre_norm", False))
    return [
        (
            "norm placement: scGPT pre_norm adds the residual to the normalised input"
            if pre_norm
            else "norm placement: scGPT blocks are post-norm, scFormer blocks pre-norm"
        ),
        "feed-forward activation: scGPT ReLU, scFormer GELU",
        "scFormer's final layer norm after the last block has no scGPT counterpart (fresh)",
        "embedding: scGPT adds separately normalised gene and value embeddings (imported "
        "normalised); scFormer also normalises their sum (fresh layer norm)",
        "heads (masked value, MVC, classifier, discriminator) are not imported (fresh)",
    ]


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=settings.warnings_stacklevel)
