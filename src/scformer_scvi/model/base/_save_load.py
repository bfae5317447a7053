"""Saving and loading models without pickle: safetensors weights + JSON metadata."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anndata
import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from safetensors.torch import load_file, save_file
from scvi.model._utils import parse_device_args

from scformer_scvi.data import GeneVocab

logger = logging.getLogger(__name__)

_FORMAT = "scformer-scvi-model"
_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
VOCAB_FILE = "vocab.json"
ADATA_FILE = "adata.h5ad"


def to_json(obj: Any) -> Any:
    """Encode registries, histories and indices as JSON values, tagging numpy/pandas objects."""
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": to_json(obj.tolist()), "dtype": str(obj.dtype)}
    if isinstance(obj, pd.DataFrame):
        split = obj.to_dict(orient="split")
        split["index_name"] = obj.index.name
        return {"__dataframe__": to_json(split)}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise TypeError(f"Cannot store a {type(obj).__name__} in model metadata: {obj!r}")


def from_json(obj: Any) -> Any:
    """Inverse of :func:`to_json`."""
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__ndarray__" in obj:
        return np.array(obj["__ndarray__"], dtype=obj["dtype"])
    if "__dataframe__" in obj:
        split = obj["__dataframe__"]
        frame = pd.DataFrame(split["data"], index=split["index"], columns=split["columns"])
        frame.index.name = split["index_name"]
        return frame
    return {k: from_json(v) for k, v in obj.items()}


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    """Refuse to load unless every tensor is present, known, and of the expected shape."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(found))
        if found[k].shape != expected[k].shape
    ]
    problems = [
        f"{label} ({len(items)}): {', '.join(items)}"
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", misshaped),
        )
        if items
    ]
    if problems:
        raise ValueError(
            "The checkpoint does not match the model, nothing was loaded.\n  "
            + "\n  ".join(problems)
            + "\nCheck that the model directory and the scformer-scvi version belong together."
        )


class SafeSaveLoadMixin:
    """``save`` / ``load`` with the scvi-tools signatures, never unpickling anything.

    A model directory holds ``model.safetensors`` (weights), ``model.json`` (registry, init
    parameters, training history and other ``*_`` attributes, all as JSON), ``vocab.json``
    (the gene vocabulary with its md5) and optionally ``adata.h5ad``.
    """

    def save(
        self,
        dir_path: str | Path,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        **anndata_write_kwargs,
    ) -> None:
        """Save the model to ``dir_path``.

        Parameters
        ----------
        dir_path
            Directory to write (created if needed).
        prefix
            Prefix for every file name, to keep several models in one directory.
        overwrite
            Replace existing files; otherwise refuse when the model files exist.
        save_anndata
            Also write the model's AnnData as ``adata.h5ad``.
        **anndata_write_kwargs
            Passed to :meth:`anndata.AnnData.write_h5ad`.
        """
        paths = _paths(dir_path, prefix)
        if paths["meta"].exists() and not overwrite:
            raise FileExistsError(
                f"{paths['meta']} already exists. Pass overwrite=True to replace it, or choose "
                "another directory."
            )
        paths["meta"].parent.mkdir(parents=True, exist_ok=True)
        attributes = {k: v for k, v in vars(self).items() if k.endswith("_") and k != "vocab_"}
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "model_name": type(self).__name__,
            "vocab_md5": self.vocab_.md5,
            "attributes": to_json(attributes),
        }
        weights = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(weights, paths["weights"])
        self.vocab_.save(paths["vocab"])
        # The metadata file goes last: its presence means the directory is complete.
        paths["meta"].write_text(json.dumps(meta), encoding="utf-8")
        if save_anndata:
            self.adata.write_h5ad(paths["adata"], **anndata_write_kwargs)

    @classmethod
    def load(
        cls,
        dir_path: str | Path,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
    ):
        """Load a model saved by :meth:`save`.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            Data to attach, set up with the saved arguments. Its genes are matched to the saved
            vocabulary by name. ``None`` uses the saved ``adata.h5ad`` if there is one, else the
            model is loaded without data.
        accelerator, device
            Where to put the model (as in scvi-tools).
        prefix
            File-name prefix used when saving.
        """
        paths = _paths(dir_path, prefix)
        for key in ("meta", "weights", "vocab"):
            if not paths[key].is_file():
                raise FileNotFoundError(
                    f"{paths[key]} not found: {dir_path} is not a complete {cls.__name__} model "
                    "directory (expected model.json, model.safetensors and vocab.json)."
                )
        meta = json.loads(paths["meta"].read_text(encoding="utf-8"))
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{paths['meta']} is not an scformer-scvi model file.")
        if meta["model_name"] != cls.__name__:
            raise ValueError(
                f"{dir_path} holds a {meta['model_name']} model; load it with that class."
            )
        vocab = GeneVocab.load(paths["vocab"])
        if vocab.md5 != meta["vocab_md5"]:
            raise ValueError(
                f"{paths['vocab']} does not belong to this model (md5 {vocab.md5} vs "
                f"{meta['vocab_md5']} recorded with the weights)."
            )
        attributes = from_json(meta["attributes"])
        registry = attributes.pop("registry_")
        init_params = attributes.pop("init_params_")

        if adata is None and paths["adata"].is_file():
            adata = anndata.read_h5ad(paths["adata"])
        if adata is not None:
            cls.setup_anndata(adata, source_registry=registry, **registry["setup_args"])

        kwargs = {k: v for group in init_params["kwargs"].values() for k, v in group.items()}
        model = cls(adata, registry=registry, vocab=vocab, **init_params["non_kwargs"], **kwargs)
        for name, value in attributes.items():
            setattr(model, name, value)

        weights = load_file(paths["weights"])
        check_state_dict(model.module.state_dict(), weights)
        model.module.load_state_dict(weights)
        _, _, torch_device = parse_device_args(
            accelerator=accelerator, devices=device, return_device="torch"
        )
        model.to_device(torch_device)
        model.module.eval()
        return model


def _paths(dir_path: str | Path, prefix: str | None) -> dict[str, Path]:
    root = Path(dir_path)
    prefix = prefix or ""
    if "/" in prefix or "\\" in prefix or ".." in prefix:
        raise ValueError(f"prefix={prefix!r} must be a plain file-name prefix.")
    return {
        "weights": root / f"{prefix}{WEIGHTS_FILE}",
        "meta": root / f"{prefix}{META_FILE}",
        "vocab": root / f"{prefix}{VOCAB_FILE}",
        "adata": root / f"{prefix}{ADATA_FILE}",
    }
