"""Streaming minibatches: shuffled by part and row group, then within a bounded buffer.

One epoch's order is seeded by ``seed`` and ``epoch`` and is the same on every rank and worker:
the part files of the streamed table are put in random order and taken in windows of
``WINDOW_PARTS`` parts, and the row groups of each window are interleaved at random.
Concatenating the row groups in that order gives the epoch's cell stream; shard ``k`` of
``S = world_size * num_workers`` takes the contiguous slice ``[N*k//S, N*(k+1)//S)`` of it, so
shards are disjoint, cover every cell exactly once, and their sizes differ by at most one cell.
A shard reads its row groups in stream order into a buffer of about ``buffer_size`` cells,
shuffles the buffer (seeded by ``seed``, ``epoch`` and the shard) and emits full batches; the
remainder is carried into the next fill. Windows keep memory flat: a shard only ever needs the
parquet footers of about one window of parts, whatever the size of the bank.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from . import _obs
from ._errors import CorruptBankError
from ._manifest import FileEntry
from ._reader import Reader
from ._tables import PartFile, index_column, list_columns

#: Part files whose row groups are interleaved (8 parts of 65536 cells: ~0.5M cells).
WINDOW_PARTS = 8


def _units(reader: Reader, table: str) -> np.ndarray:
    """One row per row group of ``table``: (study, part, row group, n_rows)."""
    r = reader.manifest.layout.row_group_size
    out = []
    for s, study in enumerate(reader.manifest.studies):
        for p, f in enumerate(study.tables[table].files):
            assert f.n_rows is not None
            n_rg = -(-f.n_rows // r)
            sizes = np.full(n_rg, r)
            sizes[-1] = f.n_rows - r * (n_rg - 1)
            out.append(
                np.column_stack([np.full(n_rg, s), np.full(n_rg, p), np.arange(n_rg), sizes])
            )
    return np.concatenate(out) if out else np.zeros((0, 4), dtype=np.int64)


def epoch_order(units: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shuffled unit order: parts in random order, row groups mixed within windows of parts."""
    _, part = np.unique(units[:, :2], axis=0, return_inverse=True)
    rank = np.empty(part.max() + 1, dtype=np.int64)
    rank[rng.permutation(len(rank))] = np.arange(len(rank))
    return np.lexsort((rng.random(len(units)), rank[part] // WINDOW_PARTS))


class _Files:
    """A small LRU of open part files (their parquet footers are the memory that matters)."""

    def __init__(self, reader: Reader, capacity: int) -> None:
        self._root, self._capacity = reader.root, capacity
        self._open: OrderedDict[str, PartFile] = OrderedDict()

    def get(self, entry: FileEntry) -> PartFile:
        """Return the reader of ``entry``; opening it may close the least recently used."""
        part = self._open.pop(entry.path, None) or PartFile(self._root, entry)
        self._open[entry.path] = part
        if len(self._open) > self._capacity:
            self._open.popitem(last=False)
        return part


def shard_plan(
    sizes: np.ndarray, order: np.ndarray, shard: int, n_shards: int
) -> list[tuple[int, int, int]]:
    """List ``(unit, first row, end row)`` of the units (in stream ``order``) that a shard reads."""
    n = int(sizes.sum())
    lo, hi = n * shard // n_shards, n * (shard + 1) // n_shards
    ends = np.cumsum(sizes[order])
    starts = ends - sizes[order]
    plan = []
    for k in range(int(np.searchsorted(ends, lo, side="right")), len(order)):
        if starts[k] >= hi:
            break
        plan.append((int(order[k]), max(lo - starts[k], 0), min(hi, ends[k]) - starts[k]))
    return plan


def iter_batches(
    reader: Reader,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    worker_id: int,
    num_workers: int,
    columns: Sequence[str],
    genes: Sequence[str] | None,
    table: str,
    buffer_size: int,
    drop_last: bool,
) -> Iterator[dict[str, Any]]:
    """Yield ``{"X": csr, "obs": DataFrame, "cell_id": ids}`` (see DataBank.iter_batches)."""
    if batch_size < 1 or buffer_size < 1:
        raise ValueError("batch_size and buffer_size must be positive")
    if not (0 <= rank < world_size and 0 <= worker_id < num_workers):
        raise ValueError(
            f"need 0 <= rank < world_size and 0 <= worker_id < num_workers, got rank={rank}, "
            f"world_size={world_size}, worker_id={worker_id}, num_workers={num_workers}"
        )
    m = reader.manifest
    lacking = [s.study_id for s in m.studies if table not in s.tables]
    if lacking:
        raise KeyError(f"studies {lacking} have no table {table!r}; stream another table")
    dtypes = reader.obs_dtypes()
    unknown = [c for c in columns if c not in dtypes]
    if unknown:
        raise KeyError(f"unknown obs column(s) {unknown}; available: {list(dtypes)}")
    dtypes = {c: dtypes[c] for c in columns}
    gene_ids = None if genes is None else reader.vocab.ids(list(genes))
    units = _units(reader, table)
    order = (
        epoch_order(units, np.random.default_rng([seed, epoch]))
        if shuffle and len(units)
        else np.arange(len(units))
    )
    shard = rank * num_workers + worker_id
    rng = np.random.default_rng([seed, epoch, shard])
    plan = shard_plan(units[:, 3], order, shard, world_size * num_workers)
    buffer = _Buffer(dtypes)
    files = _Files(reader, 2 * WINDOW_PARTS)  # the data and cellmeta parts of one window
    for i, (unit, r0, r1) in enumerate(plan):
        buffer.add(*_read_unit(reader, files, table, units[unit], dtypes, gene_ids, r0, r1))
        last = i == len(plan) - 1
        if buffer.n >= max(buffer_size, batch_size) or last:
            x, ids, obs = buffer.take()
            perm = rng.permutation(len(ids)) if shuffle else np.arange(len(ids))
            n_out = len(ids) if last else len(ids) // batch_size * batch_size
            for start in range(0, n_out, batch_size):
                idx = perm[start : start + batch_size]
                if len(idx) < batch_size and drop_last:
                    break
                yield {
                    "X": x[idx],
                    "obs": obs.iloc[idx].reset_index(drop=True),
                    "cell_id": ids[idx],
                }
            rest = perm[n_out:]
            buffer.carry(x[rest], ids[rest], obs.iloc[rest].reset_index(drop=True))


class _Buffer:
    """Cells read but not yet emitted.

    obs rows stay in Arrow until the buffer is taken, then convert once per study (not once
    per row group): the conversion to pandas costs more than reading the row group.
    """

    def __init__(self, dtypes: dict[str, Any]) -> None:
        self._dtypes = dtypes
        self._blocks: list[tuple[int, sp.csr_matrix, np.ndarray, pa.Table | None]] = []
        self._carried: tuple[sp.csr_matrix, np.ndarray, pd.DataFrame] | None = None
        self.n = 0

    def add(self, study: int, x: sp.csr_matrix, ids: np.ndarray, obs: pa.Table | None) -> None:
        """Add the rows of one row group."""
        self._blocks.append((study, x, ids, obs))
        self.n += len(ids)

    def carry(self, x: sp.csr_matrix, ids: np.ndarray, obs: pd.DataFrame) -> None:
        """Keep rows that were not emitted; they come first at the next :meth:`take`."""
        self._carried = (x, ids, obs) if len(ids) else None
        self.n = len(ids)

    def take(self) -> tuple[sp.csr_matrix, np.ndarray, pd.DataFrame]:
        """Empty the buffer into one CSR matrix, one id array and one obs DataFrame."""
        # Stable sort: groups each study's row groups, keeps bank order when not shuffling.
        blocks = sorted(self._blocks, key=itemgetter(0))
        xs, ids, frames = [b[1] for b in blocks], [b[2] for b in blocks], []
        if self._carried is not None:
            xs.insert(0, self._carried[0])
            ids.insert(0, self._carried[1])
            frames.append(self._carried[2])
        for _, group in groupby(blocks, key=itemgetter(0)):
            tables = [g[3] for g in group]
            if self._dtypes:
                frame = pa.concat_tables(tables).to_pandas()
                frames.append(_obs.conform(frame, self._dtypes))
        all_ids = np.concatenate(ids)
        obs = (
            pd.concat(frames, ignore_index=True)
            if self._dtypes
            else pd.DataFrame(index=pd.RangeIndex(len(all_ids)))
        )
        self._blocks, self._carried, self.n = [], None, 0
        return sp.vstack(xs, format="csr"), all_ids, obs


def _read_unit(
    reader: Reader,
    files: _Files,
    table: str,
    unit: np.ndarray,
    dtypes: dict[str, Any],
    gene_ids: np.ndarray | None,
    r0: int,
    r1: int,
) -> tuple[int, sp.csr_matrix, np.ndarray, pa.Table | None]:
    """Read rows ``r0:r1`` of one row group: study, counts, cell ids and obs columns."""
    s, p, rg, n = (int(v) for v in unit)
    study = reader.manifest.studies[s]
    entry = study.tables[table].files[p]
    assert entry.cell_id_min is not None
    data = files.get(entry).read_row_group(rg, ["gene_ids", "values"])
    if data.num_rows != n:
        raise CorruptBankError(
            f"{entry.path}: row group {rg} has {data.num_rows} rows, expected {n}", (entry.path,)
        )
    offsets, (indices, values) = list_columns(data, [index_column(None), "values"])
    x = sp.csr_matrix((values, indices, offsets), shape=(n, len(reader.vocab)))[r0:r1]
    if gene_ids is not None:
        x = x[:, gene_ids]
    first = entry.cell_id_min + rg * reader.manifest.layout.row_group_size
    obs = None
    if dtypes:
        meta = files.get(study.cellmeta[p])
        present = [c for c in dtypes if c in meta.parquet.schema_arrow.names]
        obs = meta.read_row_group(rg, present).slice(r0, r1 - r0)
    return s, x, np.arange(first + r0, first + r1, dtype=np.int64), obs
