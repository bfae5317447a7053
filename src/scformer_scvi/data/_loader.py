"""Minibatches of tokenized cells for scvi-tools' data splitter and data loader."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from scvi.dataloaders import AnnDataLoader, DataSplitter

from ._tokenizer import Tokenizer, mask_tokens

X_KEY = "X"

# scvi-tools hands minibatch rows over as torch sparse CSR tensors (which avoids densifying the
# count matrix); torch warns once that this layout is in beta, which is noise for our read-only use.
warnings.filterwarnings(
    "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
)
warnings.filterwarnings(
    "ignore", message="Sparse invariant checks are implicitly", category=UserWarning
)


def _to_scipy_csr(X: torch.Tensor | np.ndarray | sp.spmatrix) -> sp.csr_matrix:
    if isinstance(X, torch.Tensor) and X.layout is torch.sparse_csr:
        return sp.csr_matrix(
            (X.values().numpy(), X.col_indices().numpy(), X.crow_indices().numpy()),
            shape=tuple(X.shape),
        )
    if isinstance(X, torch.Tensor):
        X = X.to_dense().numpy()
    return sp.csr_matrix(X)


class TokenizeCollate:
    """Collate function: a minibatch of count rows -> token tensors (+ MLM mask in training).

    scvi-tools' :class:`~scvi.dataloaders.AnnDataLoader` hands over a whole minibatch as a dict
    of arrays; this replaces the count matrix ``X`` with the tokenizer's arrays and keeps the
    other registry keys (batch, labels, ...) as tensors.

    Parameters
    ----------
    tokenizer
        Maps the count rows to token sequences.
    mask_ratio
        Fraction of gene tokens whose value is hidden (0 for inference: no ``mlm_mask``).
    stochastic
        Random gene subsampling / zero genes (training) instead of the deterministic choice.
        Randomness is drawn from torch's generator, so ``scvi.settings.seed`` (and torch's
        per-worker seeding) makes it reproducible.
    """

    def __init__(self, tokenizer: Tokenizer, mask_ratio: float = 0.0, stochastic: bool = False):
        self.tokenizer = tokenizer
        self.mask_ratio = mask_ratio
        self.stochastic = stochastic

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        """Tokenize one minibatch."""
        batch = dict(batch)
        counts = _to_scipy_csr(batch.pop(X_KEY))
        rng = None
        if self.stochastic or self.mask_ratio > 0:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        tokens = self.tokenizer(counts, rng if self.stochastic else None)
        out = {key: torch.as_tensor(np.asarray(value)) for key, value in batch.items()}
        out["gene_ids"] = torch.from_numpy(tokens.gene_ids)
        out["bins"] = torch.from_numpy(tokens.bins)
        out["values"] = torch.from_numpy(tokens.values)
        out["padding_mask"] = torch.from_numpy(tokens.padding_mask)
        out["library_size"] = torch.from_numpy(tokens.library_size)
        if self.mask_ratio > 0:
            out["mlm_mask"] = torch.from_numpy(
                mask_tokens(tokens.padding_mask, self.mask_ratio, rng)
            )
        return out


class TokenizedDataLoader(AnnDataLoader):
    """:class:`~scvi.dataloaders.AnnDataLoader` that yields tokenized cells.

    Rows are read sparse (no densification of the count matrix) and turned into tokens by
    ``collate_fn``, a :class:`TokenizeCollate`.
    """

    def __init__(self, adata_manager, *, collate_fn: TokenizeCollate, **kwargs) -> None:
        kwargs["load_sparse_tensor"] = True
        super().__init__(adata_manager, collate_fn=collate_fn, **kwargs)


class TokenizedDataSplitter(DataSplitter):
    """:class:`~scvi.dataloaders.DataSplitter` whose loaders are :class:`TokenizedDataLoader`."""

    data_loader_cls = TokenizedDataLoader
