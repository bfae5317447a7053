"""Turn cells (rows of a count matrix) into padded gene-token sequences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ._binning import bins_from_order, descending_order


def _gene_order_key(token_ids: np.ndarray) -> np.ndarray:
    """Return sort keys giving a fixed pseudo-random order of genes, by vocabulary id alone.

    Used to pick zero genes at inference: keyed by id (not by column position), the choice
    depends neither on the minibatch nor on the order of the AnnData's genes, and being
    pseudo-random it does not always favour the same end of the vocabulary.
    """
    return ((token_ids.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)).astype(
        np.float64
    )


@dataclass
class TokenizedCells:
    """A minibatch of cells as token sequences, all arrays ``(n_cells, seq_len)`` unless noted.

    Position 0 of every cell is the ``<cls>`` token; real tokens follow without gaps, then
    padding. ``seq_len`` is the length of the longest cell in the minibatch.

    Attributes
    ----------
    gene_ids
        Vocabulary ids (``<cls>`` first, ``<pad>`` after the cell's last token).
    values
        Raw counts of the tokens (0 for ``<cls>``, padding and sampled zero genes).
    bins
        Per-cell quantile bins of the values (see :func:`quantile_bins`); 0 for special tokens.
    padding_mask
        ``True`` at padding positions.
    library_size
        ``(n_cells,)`` total counts of each cell over all vocabulary genes of the panel.
    absent_ids
        ``(n_cells, k)`` ids of extra genes the cell does not express (not among its tokens),
        padded with ``<pad>``; queries for predicting expression from the cell embedding. Only
        when requested (``absent_ratio > 0``).
    forced
        ``(n_cells, seq_len)`` boolean, ``True`` at the tokens of the genes the caller required
        (``forced_ids``, e.g. perturbed genes); only when requested.
    """

    gene_ids: np.ndarray
    values: np.ndarray
    bins: np.ndarray
    padding_mask: np.ndarray
    library_size: np.ndarray
    absent_ids: np.ndarray | None = None
    forced: np.ndarray | None = None

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The arrays as the tensors the module reads (keys as the module's inputs)."""
        tensors = {
            "gene_ids": self.gene_ids,
            "bins": self.bins,
            "values": self.values,
            "padding_mask": self.padding_mask,
            "library_size": self.library_size,
            "mvc_zero_ids": self.absent_ids,
            "perturbation_flags": self.forced,
        }
        return {key: torch.from_numpy(value) for key, value in tensors.items() if value is not None}

    @property
    def lengths(self) -> np.ndarray:
        """Number of real tokens per cell, ``<cls>`` included."""
        return (~self.padding_mask).sum(axis=1)


class Tokenizer:
    """Map count-matrix rows to gene-token sequences (vectorised over the minibatch).

    Each cell becomes ``<cls>``, then its expressed genes, then optionally ``n_zero_genes``
    genes of the panel that it does not express. Genes whose column id is ``-1`` (not in the
    vocabulary) are ignored.

    When a cell has more expressed genes than fit in ``max_seq_len - 1`` positions, the kept genes
    are a uniform random subset when an ``rng`` is given (training) and otherwise the
    highest-expressed genes, ties broken by vocabulary id (inference). Zero genes are likewise
    random with an ``rng`` and otherwise taken in a fixed pseudo-random order of vocabulary ids.
    At inference the tokens of a cell therefore depend neither on the other cells of its
    minibatch nor on the order of the genes in the AnnData. Expressed genes take precedence over
    zero genes for the available positions.

    Parameters
    ----------
    column_ids
        Vocabulary id of every column (gene) of the matrices to tokenize, ``-1`` if unknown.
    pad_id, cls_id
        Ids of ``<pad>`` and ``<cls>``.
    max_seq_len
        Maximum number of tokens per cell, ``<cls>`` included.
    n_bins
        Number of value bins, zero bin included.
    n_zero_genes
        Number of non-expressed panel genes added to each cell (when space remains).
    """

    def __init__(
        self,
        column_ids: np.ndarray,
        pad_id: int,
        cls_id: int,
        max_seq_len: int = 512,
        n_bins: int = 51,
        n_zero_genes: int = 0,
    ) -> None:
        column_ids = np.asarray(column_ids, dtype=np.int64)
        if max_seq_len < 2:
            raise ValueError(
                f"max_seq_len must be at least 2 (<cls> + one gene), got {max_seq_len}."
            )
        if n_zero_genes < 0:
            raise ValueError(f"n_zero_genes must be non-negative, got {n_zero_genes}.")
        known = np.flatnonzero(column_ids >= 0)
        if known.size == 0:
            raise ValueError(
                "None of the genes is in the model's vocabulary, so no cell can be tokenized. "
                "Check that gene names use the same convention (symbols vs Ensembl ids) as the "
                "model, or pass gene_key= to setup_anndata to pick the right var column."
            )
        # Columns in vocabulary order: a stable sort by value then keeps tied genes in id order,
        # which makes gene selection independent of the AnnData's gene order.
        self.known_columns = known[np.argsort(column_ids[known], kind="stable")]
        self.known_ids = column_ids[self.known_columns]
        self.pad_id = int(pad_id)
        self.cls_id = int(cls_id)
        self.max_seq_len = int(max_seq_len)
        self.n_bins = int(n_bins)
        self.n_zero_genes = int(n_zero_genes)
        self._zero_gene_key = _gene_order_key(self.known_ids)

    @property
    def n_known_genes(self) -> int:
        """Number of panel genes that are in the vocabulary."""
        return int(self.known_ids.size)

    def token_counts(self, X: sp.spmatrix | np.ndarray) -> np.ndarray:
        """Number of tokens (``<cls>`` included) each row of ``X`` becomes, without tokenizing."""
        X = sp.csr_matrix(X)[:, self.known_columns]
        nnz = np.asarray((X > 0).sum(axis=1)).ravel()
        n_expr = np.minimum(nnz, self.max_seq_len - 1)
        room = np.minimum(self.max_seq_len - 1 - n_expr, self.n_known_genes - nnz)
        return 1 + n_expr + np.minimum(self.n_zero_genes, room)

    def __call__(
        self,
        X: sp.spmatrix | np.ndarray,
        rng: np.random.Generator | None = None,
        absent_ratio: float = 0.0,
        forced_ids: np.ndarray | None = None,
    ) -> TokenizedCells:
        """Tokenize the rows of ``X`` (cells × panel genes, raw counts).

        Parameters
        ----------
        X
            Counts, CSR (preferred) or dense, with the columns ``column_ids`` describes.
        rng
            Source of randomness for gene subsampling and zero genes (training); ``None`` for
            deterministic tokens (inference).
        absent_ratio
            Also pick ``round(absent_ratio * n_tokens)`` non-expressed genes per cell, beyond
            its zero-gene tokens (:attr:`TokenizedCells.absent_ids`).
        forced_ids
            ``(n_cells, k)`` vocabulary ids that must be among each cell's tokens (``<pad>`` or
            ``-1`` for none), e.g. the perturbed genes: they are kept first when a cell is
            truncated, and a gene the cell does not express, or that is not in the panel at
            all, enters with value 0. Their positions are returned as ``forced``.
        """
        X = sp.csr_matrix(X, dtype=np.float32)[:, self.known_columns]
        X.eliminate_zeros()
        X.sort_indices()
        n_cells = X.shape[0]
        budget = self.max_seq_len - 1
        nnz = np.diff(X.indptr)
        rows = np.repeat(np.arange(n_cells), nnz)
        entry_ids = self.known_ids[X.indices]
        by_value = descending_order(rows, X.data)  # ties in vocabulary-id (= column) order
        bins_all = bins_from_order(rows, X.data, by_value, self.n_bins)
        forced = _Forced(rows, entry_ids, forced_ids, n_cells)

        # --- choose which expressed genes to keep (rank within cell < budget): forced first
        expr_budget = budget - forced.n_missing
        if rng is None:
            order = by_value if forced.none else np.lexsort((-X.data, ~forced.expressed, rows))
        else:
            # a random order within each cell: one float sort key, row + [0, 1)
            key = rows + 0.5 * rng.random(X.data.size) + 0.5 * ~forced.expressed
            order = np.argsort(key)
        rank = np.arange(order.size) - X.indptr[rows[order]]
        kept = rank < expr_budget[rows[order]]
        keep = order[kept]
        keep_pos = 1 + rank[kept]
        n_expr = np.minimum(nnz, expr_budget)
        missing_pos = 1 + n_expr[forced.missing_rows] + forced.missing_rank
        n_forced_tokens = n_expr + forced.n_missing

        # --- choose zero genes (not expressed in the cell) for the remaining positions
        n_unexpressed = self.n_known_genes - nnz
        room = budget - n_forced_tokens
        n_zero = np.minimum(self.n_zero_genes, np.minimum(room, n_unexpressed))
        n_absent = np.minimum(
            np.rint(absent_ratio * (n_expr + n_zero)).astype(np.int64), n_unexpressed - n_zero
        )
        excluded = (forced.missing_rows, self._column_of(forced.missing_ids))
        picked_rows, picked_cols, rank = self._unexpressed(X, n_zero + n_absent, rng, excluded)
        as_token = rank < n_zero[picked_rows]
        zero_rows, zero_cols = picked_rows[as_token], picked_cols[as_token]
        zero_pos = 1 + n_forced_tokens[zero_rows] + rank[as_token]

        seq_len = 1 + int((n_forced_tokens + n_zero).max(initial=0))
        gene_ids = np.full((n_cells, seq_len), self.pad_id, dtype=np.int64)
        values = np.zeros((n_cells, seq_len), dtype=np.float32)
        bins = np.zeros((n_cells, seq_len), dtype=np.int64)
        gene_ids[:, 0] = self.cls_id
        kept_rows = rows[keep]
        gene_ids[kept_rows, keep_pos] = self.known_ids[X.indices[keep]]
        values[kept_rows, keep_pos] = X.data[keep]
        bins[kept_rows, keep_pos] = bins_all[keep]
        gene_ids[zero_rows, zero_pos] = self.known_ids[zero_cols]
        gene_ids[forced.missing_rows, missing_pos] = forced.missing_ids
        padding_mask = np.arange(seq_len)[None, :] > (n_forced_tokens + n_zero)[:, None]
        forced_mask = None
        if not forced.none:
            forced_mask = np.zeros((n_cells, seq_len), dtype=bool)
            expressed_kept = forced.expressed[keep]
            forced_mask[kept_rows[expressed_kept], keep_pos[expressed_kept]] = True
            forced_mask[forced.missing_rows, missing_pos] = True
        library_size = np.asarray(X.sum(axis=1), dtype=np.float32).ravel()
        absent_ids = None
        if absent_ratio > 0:
            absent_ids = np.full((n_cells, int(n_absent.max(initial=0))), self.pad_id, np.int64)
            rows_a = picked_rows[~as_token]
            absent_ids[rows_a, rank[~as_token] - n_zero[rows_a]] = self.known_ids[
                picked_cols[~as_token]
            ]
        return TokenizedCells(
            gene_ids, values, bins, padding_mask, library_size, absent_ids, forced_mask
        )

    def _column_of(self, token_ids: np.ndarray) -> np.ndarray:
        """Column (among the known columns) of each token id; -1 if not in the panel."""
        position = np.searchsorted(self.known_ids, token_ids)  # known_ids are sorted
        position = np.minimum(position, self.known_ids.size - 1)
        return np.where(self.known_ids[position] == token_ids, position, -1)

    def _unexpressed(
        self,
        X: sp.csr_matrix,
        n_pick: np.ndarray,
        rng: np.random.Generator | None,
        excluded: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pick ``n_pick[i]`` genes that cell ``i`` does not express (nor ``excluded``).

        Returns rows, columns and the rank of each pick within its cell (0, 1, ...).
        """
        k = int(n_pick.max(initial=0))
        if k == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        n_cells = X.shape[0]
        if rng is None:
            keys = np.broadcast_to(self._zero_gene_key, (n_cells, self.n_known_genes)).copy()
        else:
            keys = rng.random((n_cells, self.n_known_genes))
        keys[X.nonzero()] = np.inf  # expressed genes are not candidates
        if excluded is not None:
            in_panel = excluded[1] >= 0
            keys[excluded[0][in_panel], excluded[1][in_panel]] = np.inf
        n_pick = np.minimum(n_pick, np.isfinite(keys).sum(axis=1))
        candidates = np.argpartition(keys, kth=k - 1, axis=1)[:, :k]
        candidate_keys = np.take_along_axis(keys, candidates, axis=1)
        candidates = np.take_along_axis(candidates, np.argsort(candidate_keys, axis=1), axis=1)
        rank = np.broadcast_to(np.arange(k)[None, :], (n_cells, k))
        chosen = rank < n_pick[:, None]
        rows = np.broadcast_to(np.arange(n_cells)[:, None], (n_cells, k))[chosen]
        return rows, candidates[chosen], rank[chosen]


class _Forced:
    """Where the required genes (``forced_ids``) of each cell are, among its expressed entries."""

    def __init__(
        self,
        rows: np.ndarray,
        entry_ids: np.ndarray,
        forced_ids: np.ndarray | None,
        n_cells: int,
    ) -> None:
        empty = np.zeros(0, dtype=np.int64)
        self.none = forced_ids is None
        self.expressed = np.zeros(rows.size, dtype=bool)
        self.n_missing = np.zeros(n_cells, dtype=np.int64)
        self.missing_rows, self.missing_ids, self.missing_rank = empty, empty, empty
        if self.none:
            return
        forced_ids = np.asarray(forced_ids, dtype=np.int64).reshape(n_cells, -1)
        # cell-specific keys: row * V + id, so membership tests are one np.isin each
        width = int(max(entry_ids.max(initial=0), forced_ids.max(initial=0))) + 1
        valid = forced_ids > 0  # <pad> and -1 are "no gene"; special tokens are never forced
        forced_rows = np.broadcast_to(np.arange(n_cells)[:, None], forced_ids.shape)[valid]
        forced_keys = forced_rows * width + forced_ids[valid]
        entry_keys = rows * width + entry_ids
        self.expressed = np.isin(entry_keys, forced_keys)
        missing = ~np.isin(forced_keys, entry_keys)
        self.missing_rows, self.missing_ids = forced_rows[missing], forced_ids[valid][missing]
        self.n_missing = np.bincount(self.missing_rows, minlength=n_cells)
        starts = np.concatenate([[0], np.cumsum(self.n_missing)[:-1]])
        self.missing_rank = np.arange(self.missing_rows.size) - starts[self.missing_rows]


def mask_tokens(
    padding_mask: np.ndarray, mask_ratio: float, rng: np.random.Generator
) -> np.ndarray:
    """Choose the tokens to mask for masked value prediction.

    In every cell, ``round(mask_ratio * n)`` of its ``n`` gene tokens (at least one when
    ``mask_ratio > 0``) are chosen uniformly at random. ``<cls>`` (position 0) and padding are
    never masked.

    Parameters
    ----------
    padding_mask
        ``(n_cells, seq_len)``, ``True`` at padding.
    mask_ratio
        Fraction of gene tokens to mask, in ``[0, 1]``.
    rng
        Source of randomness.

    Returns
    -------
    ``(n_cells, seq_len)`` boolean, ``True`` where the value is hidden from the model.
    """
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}.")
    eligible = ~padding_mask
    eligible[:, 0] = False
    n_eligible = eligible.sum(axis=1)
    n_mask = np.rint(mask_ratio * n_eligible).astype(np.int64)
    if mask_ratio > 0:
        n_mask = np.maximum(n_mask, np.minimum(n_eligible, 1))
    keys = rng.random(padding_mask.shape)
    keys[~eligible] = np.inf
    key_rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    return key_rank < n_mask[:, None]
