"""Streaming minibatches: shuffled by row group and within a bounded buffer, split by shard.

One epoch is a permutation of all row groups of the streamed table (seeded by ``seed`` and
``epoch``, the same on every rank and worker). Concatenating those row groups gives the
epoch's cell stream; shard ``k`` of ``S = world_size * num_workers`` takes the contiguous slice
``[N*k//S, N*(k+1)//S)`` of it, so shards are disjoint, cover every cell exactly once, and their
sizes differ by at most one cell. Each shard reads its row groups in stream order into a buffer
of about ``buffer_size`` cells, shuffles the buffer (seeded by ``seed``, ``epoch`` and the
shard) and emits full batches; the remainder is carried into the next fill.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import _obs
from ._errors import CorruptBankError
from ._reader import Reader
from ._tables import index_column, list_columns


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
        np.random.default_rng([seed, epoch]).permutation(len(units))
        if shuffle
        else np.arange(len(units))
    )
    shard = rank * num_workers + worker_id
    rng = np.random.default_rng([seed, epoch, shard])
    plan = shard_plan(units[:, 3], order, shard, world_size * num_workers)
    buffer: list[tuple[sp.csr_matrix, np.ndarray, pd.DataFrame]] = []
    buffered = 0
    for i, (unit, r0, r1) in enumerate(plan):
        x, ids, obs = _read_unit(reader, table, units[unit], dtypes, gene_ids)
        buffer.append((x[r0:r1], ids[r0:r1], obs.iloc[r0:r1]))
        buffered += r1 - r0
        last = i == len(plan) - 1
        if buffered >= max(buffer_size, batch_size) or last:
            x, ids, obs = _concat(buffer)
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
            buffer = [(x[rest], ids[rest], obs.iloc[rest])] if len(rest) else []
            buffered = len(rest)


def _read_unit(
    reader: Reader,
    table: str,
    unit: np.ndarray,
    dtypes: dict[str, Any],
    gene_ids: np.ndarray | None,
) -> tuple[sp.csr_matrix, np.ndarray, pd.DataFrame]:
    """Read one row group: counts (CSR), cell ids and the requested obs columns."""
    s, p, rg, n = (int(v) for v in unit)
    study = reader.manifest.studies[s]
    entry = study.tables[table].files[p]
    assert entry.cell_id_min is not None
    part = reader.part(entry)
    data = part.read_row_group(rg, ["gene_ids", "values"])
    if data.num_rows != n:
        raise CorruptBankError(
            f"{entry.path}: row group {rg} has {data.num_rows} rows, expected {n}", (entry.path,)
        )
    offsets, (indices, values) = list_columns(data, [index_column(None), "values"])
    x = sp.csr_matrix((values, indices, offsets), shape=(n, len(reader.vocab)))
    if gene_ids is not None:
        x = x[:, gene_ids]
    first = entry.cell_id_min + rg * reader.manifest.layout.row_group_size
    ids = np.arange(first, first + n, dtype=np.int64)
    obs = pd.DataFrame(index=pd.RangeIndex(n))
    if dtypes:
        meta = reader.part(study.cellmeta[p])
        present = [c for c in dtypes if c in meta.parquet.schema_arrow.names]
        obs = _obs.conform(meta.read_row_group(rg, present).to_pandas(), dtypes)
    return x, ids, obs


def _concat(
    blocks: list[tuple[sp.csr_matrix, np.ndarray, pd.DataFrame]],
) -> tuple[sp.csr_matrix, np.ndarray, pd.DataFrame]:
    if len(blocks) == 1:
        return blocks[0]
    return (
        sp.vstack([b[0] for b in blocks], format="csr"),
        np.concatenate([b[1] for b in blocks]),
        pd.concat([b[2] for b in blocks], ignore_index=True),
    )
