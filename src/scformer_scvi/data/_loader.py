"""Minibatches of tokenized cells for scvi-tools' data splitter and for inference."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS, settings
from scvi.data import AnnDataManager
from scvi.dataloaders import BatchDistributedSampler, DataSplitter
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler

from ._tokenizer import Tokenizer, mask_tokens

# scvi-tools hands minibatch rows over as torch sparse CSR tensors (which avoids densifying the
# count matrix); torch warns once that this layout is in beta, which is noise for our read-only use.
for _message in ("Sparse CSR tensor support is in beta", "Sparse invariant checks are implicitly"):
    warnings.filterwarnings("ignore", message=_message, category=UserWarning)


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

    scvi-tools' dataset hands over a whole minibatch as a dict of arrays; this replaces the
    count matrix ``X`` with the tokenizer's arrays and keeps the other registry keys (batch,
    labels, ...) as tensors.

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
    mvc_zero_fraction
        Share of non-expressed genes among the genes whose value is predicted from the cell
        embedding: for every cell, ``n_masked * f / (1 - f)`` extra non-expressed genes are
        returned as ``mvc_zero_ids``.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        mask_ratio: float = 0.0,
        stochastic: bool = False,
        mvc_zero_fraction: float = 0.0,
    ) -> None:
        if not 0.0 <= mvc_zero_fraction < 1.0:
            raise ValueError(f"mvc_zero_fraction must be in [0, 1), got {mvc_zero_fraction}.")
        self.tokenizer = tokenizer
        self.mask_ratio = mask_ratio
        self.stochastic = stochastic
        self.absent_ratio = mask_ratio * mvc_zero_fraction / (1.0 - mvc_zero_fraction)

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        """Tokenize one minibatch."""
        batch = dict(batch)
        counts = _to_scipy_csr(batch.pop(REGISTRY_KEYS.X_KEY))
        rng = None
        if self.stochastic or self.mask_ratio > 0:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        tokens = self.tokenizer(counts, rng if self.stochastic else None, self.absent_ratio)
        out = {key: torch.as_tensor(np.asarray(value)) for key, value in batch.items()}
        out.update(tokens.to_tensors())
        if self.mask_ratio > 0:
            mask = mask_tokens(tokens.padding_mask, self.mask_ratio, rng)
            out["mlm_mask"] = torch.from_numpy(mask)
        return out


class LengthBucketSampler(Sampler[list[int]]):
    """Shuffled minibatches of cells with similar numbers of tokens.

    The cells are shuffled, cut into pools of ``pool_batches`` minibatches, sorted by length
    within each pool and cut into minibatches, whose order is then shuffled. Minibatches are
    padded to their own longest cell, so grouping similar lengths removes most padding while
    keeping the cell order random at the scale of a pool.

    Parameters
    ----------
    lengths
        Number of tokens of each cell (positions in the dataset).
    batch_size
        Cells per minibatch.
    drop_last
        Drop the last, smaller minibatch of each pool.
    pool_batches
        Minibatches per sorting pool.
    """

    def __init__(
        self, lengths: np.ndarray, batch_size: int, drop_last: bool = False, pool_batches: int = 50
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.pool = batch_size * pool_batches

    def __iter__(self) -> Iterator[list[int]]:
        # torch's generator: reproducible under scvi.settings.seed, like the default sampler
        order = torch.randperm(self.lengths.size).numpy()
        batches = []
        for start in range(0, order.size, self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            for begin in range(0, pool.size, self.batch_size):
                batch = pool[begin : begin + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch.tolist())
        for index in torch.randperm(len(batches)).tolist():
            yield batches[index]

    def __len__(self) -> int:
        full, rest = divmod(self.lengths.size, self.pool)
        per_pool = self.pool // self.batch_size
        last = rest // self.batch_size if self.drop_last else math.ceil(rest / self.batch_size)
        return full * per_pool + last


class TokenizedDataLoader(DataLoader):
    """Data loader of tokenized cells from an AnnData registered with scvi-tools.

    Rows are read sparse (the count matrix is never densified) and tokenized by
    ``collate_fn``. Accepts the arguments scvi-tools' data splitter and ``_make_data_loader``
    pass to :class:`~scvi.dataloaders.AnnDataLoader`.

    Parameters
    ----------
    adata_manager
        Manager of the registered AnnData.
    indices
        Rows to load (all by default).
    batch_size
        Cells per minibatch.
    shuffle
        Shuffle cells every epoch.
    drop_last
        Drop the last incomplete minibatch.
    collate_fn
        The tokenizer collate.
    length_bucketing
        When shuffling, group cells of similar length (:class:`LengthBucketSampler`).
    distributed_sampler
        Split minibatches across DDP ranks (scvi-tools' ``BatchDistributedSampler``).
    data_and_attributes
        Registry keys to load.
    **kwargs
        Passed to :class:`torch.utils.data.DataLoader` (e.g. ``num_workers``).
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int = 128,
        shuffle: bool = False,
        drop_last: bool = False,
        *,
        collate_fn: TokenizeCollate,
        length_bucketing: bool = False,
        distributed_sampler: bool = False,
        data_and_attributes: list[str] | dict | None = None,
        load_sparse_tensor: bool = True,
        **kwargs,
    ) -> None:
        if indices is None:
            indices = np.arange(adata_manager.adata.n_obs)
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        self.indices = indices
        dataset = adata_manager.create_torch_dataset(
            indices=indices, data_and_attributes=data_and_attributes, load_sparse_tensor=True
        )
        if distributed_sampler:
            if length_bucketing:
                raise ValueError("length_bucketing is not supported with distributed training.")
            sampler = BatchDistributedSampler(
                dataset, batch_size=batch_size, drop_last=drop_last, shuffle=shuffle
            )
        elif length_bucketing and shuffle:
            matrix = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
            lengths = collate_fn.tokenizer.token_counts(sp.csr_matrix(matrix[indices]))
            sampler = LengthBucketSampler(lengths, batch_size, drop_last)
        else:
            base = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
            sampler = BatchSampler(base, batch_size=batch_size, drop_last=drop_last)
        kwargs.setdefault("num_workers", settings.dl_num_workers)
        kwargs.setdefault("persistent_workers", settings.dl_persistent_workers)
        kwargs.pop("iter_ndarray", None)
        super().__init__(dataset, sampler=sampler, batch_size=None, collate_fn=collate_fn, **kwargs)


class TokenizedDataSplitter(DataSplitter):
    """:class:`~scvi.dataloaders.DataSplitter` whose loaders are :class:`TokenizedDataLoader`."""

    data_loader_cls = TokenizedDataLoader
