"""A task model initialised from a pretrained one (fine-tuning with new heads and new batches)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scformer_scvi.data import GeneVocab
from scformer_scvi.data._perturbation import parse_perturbations
from scformer_scvi.model import SCFormer
from scformer_scvi.model.base._transfer import (
    BATCH,
    TOKEN,
    init_kwargs,
    row_tensors,
)

logger = logging.getLogger(__name__)


def model_from_pretrained(
    reference: SCFormer, adata: AnnData, setup_kwargs: dict, **module_overrides
) -> tuple[SCFormer, dict[str, list[str]]]:
    """Set ``adata`` up as a new task and start its model from ``reference``'s weights.

    Unlike :meth:`~scformer_scvi.SCFormer.load_query_data`, which maps a query onto the
    reference's own setup, the task may register other columns (a batch key, a label key,
    perturbations) and other objective weights (``module_overrides``, e.g. ``dar_weight``).
    The architecture and the vocabulary come from the reference. Weights move as follows:

    - the transformer, embeddings, value heads and cell-embedding statistics are copied;
    - gene tokens keep their ids; tokens the task adds (perturbed genes the vocabulary lacks)
      start at the mean gene embedding;
    - batch parameters (batch token, domain norm) are copied when the task's batches are the
      reference's, otherwise every batch starts at the mean of the reference's batch rows
      (what the reference uses for an unseen batch);
    - the classifier and the batch discriminator are copied only when their categories are
      the reference's; otherwise, like heads the reference does not have (perturbation), they
      start fresh.

    Parameters
    ----------
    reference
        The pretrained model.
    adata
        The task's cells (raw counts).
    setup_kwargs
        Arguments of :meth:`~scformer_scvi.SCFormer.setup_anndata` for the task.
    **module_overrides
        Module options that differ from the reference's (objective weights).

    Returns
    -------
    The task model and a report: which tensors were ``copied``, ``averaged`` (batch rows
    started at the reference's mean), ``fresh`` (new initialisation) or ``unused``.
    """
    cls = type(reference)
    cls.setup_anndata(adata, **setup_kwargs)
    vocab: GeneVocab = reference.vocab_
    if setup_kwargs.get("perturbation_key"):
        labels = adata.obs[setup_kwargs["perturbation_key"]].astype(str).unique()
        parsed = parse_perturbations(
            np.asarray(labels),
            setup_kwargs.get("control_label", "control"),
            setup_kwargs.get("perturbation_sep", "+"),
        )
        vocab = vocab.extend([gene for genes in parsed.values() for gene in genes])
    kwargs = {**init_kwargs(reference.init_params_), **module_overrides}
    model = cls(adata, vocab=vocab, **kwargs)
    report = _transfer_weights(reference, model)
    model.pretrained_ = True
    logger.info(
        "Initialised from the pretrained model: %d tensors copied, %d averaged, %d fresh.",
        len(report["copied"]),
        len(report["averaged"]),
        len(report["fresh"]),
    )
    return model, report


def _same_categories(reference: SCFormer, model: SCFormer, registry_key: str) -> bool:
    def categories(m: SCFormer) -> tuple[str | None, list[str]]:
        field = m.registry_["field_registries"][registry_key]["state_registry"]
        key = m.registry_["setup_args"][f"{registry_key}_key"]
        return key, [str(c) for c in np.asarray(field["categorical_mapping"])]

    return categories(reference) == categories(model)


def _transfer_weights(reference: SCFormer, model: SCFormer) -> dict[str, list[str]]:
    source = reference.module.state_dict()
    state = model.module.state_dict()
    kinds = row_tensors(model.module)
    same = {
        "batch": _same_categories(reference, model, REGISTRY_KEYS.BATCH_KEY),
        "labels": _same_categories(reference, model, REGISTRY_KEYS.LABELS_KEY),
    }
    head_of = {"discriminator.": "batch", "classifier.": "labels"}
    n_special = len(reference.vocab_.special_tokens)
    report: dict[str, list[str]] = {"copied": [], "averaged": [], "fresh": [], "unused": []}
    problems = []
    for key, target in state.items():
        old = source.get(key)
        kind = kinds.get(key)
        head = next((g for prefix, g in head_of.items() if key.startswith(prefix)), None)
        if old is None or (head is not None and not same[head]):
            report["fresh"].append(key)
        elif kind == TOKEN and old.shape[1:] == target.shape[1:]:
            rows = target.clone()
            rows[: old.shape[0]] = old
            rows[old.shape[0] :] = old[n_special:].mean(dim=0)
            state[key] = rows
            report["copied"].append(key)
        elif kind == BATCH and not same["batch"]:
            state[key] = old.mean(dim=0).expand_as(target).clone()
            report["averaged"].append(key)
        elif old.shape == target.shape:
            state[key] = old
            report["copied"].append(key)
        else:
            problems.append(f"{key}: pretrained {tuple(old.shape)} vs task {tuple(target.shape)}")
    if problems:
        raise ValueError(
            "The pretrained weights do not fit the task model: " + "; ".join(problems) + "."
        )
    report["unused"] = sorted(set(source) - set(state))
    model.module.load_state_dict(state)
    return report


def report_frame(report: dict[str, list[str]]) -> pd.DataFrame:
    """The transfer report as a table (one row per tensor)."""
    rows = [(name, how) for how, names in report.items() for name in names]
    return pd.DataFrame(rows, columns=["tensor", "initialisation"])
