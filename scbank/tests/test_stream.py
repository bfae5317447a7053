"""Streaming minibatches: complete disjoint shards, deterministic order, matching data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from bank_helpers import dense, union_matrix


def _epoch(bank, world_size=1, num_workers=1, **kw):
    """Cell ids per shard, in the order they were yielded."""
    out = {}
    for rank in range(world_size):
        for worker in range(num_workers):
            batches = bank.iter_batches(
                32,
                rank=rank,
                world_size=world_size,
                worker_id=worker,
                num_workers=num_workers,
                buffer_size=64,
                **kw,
            )
            out[rank, worker] = np.concatenate([b["cell_id"] for b in batches])
    return out


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(("world_size", "num_workers"), [(1, 1), (2, 1), (3, 2), (4, 5)])
def test_shards_are_disjoint_and_complete(two_studies, shuffle, world_size, num_workers):
    bank, _ = two_studies
    shards = _epoch(bank, world_size, num_workers, shuffle=shuffle, seed=3)
    every = np.concatenate(list(shards.values()))
    assert len(every) == bank.n_obs
    np.testing.assert_array_equal(np.sort(every), bank.obs["cell_id"].to_numpy())
    sizes = [len(v) for v in shards.values()]
    assert max(sizes) - min(sizes) <= 1  # uneven splits differ by at most one cell


def test_unshuffled_stream_is_bank_order(two_studies):
    bank, _ = two_studies
    batches = list(bank.iter_batches(32, shuffle=False, buffer_size=64))
    assert [len(b["cell_id"]) for b in batches] == [32] * 7 + [26]
    np.testing.assert_array_equal(np.concatenate([b["cell_id"] for b in batches]), np.arange(250))


def test_deterministic_per_seed_and_epoch(two_studies):
    bank, _ = two_studies
    first = _epoch(bank, 2, 2, seed=7, epoch=1)
    again = _epoch(bank, 2, 2, seed=7, epoch=1)
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
    other_epoch = _epoch(bank, 2, 2, seed=7, epoch=2)
    assert any(not np.array_equal(first[k], other_epoch[k]) for k in first)
    # shuffled: the order mixes row groups and studies
    order = first[0, 0]
    assert not np.array_equal(order, np.sort(order))


def test_batches_carry_matching_rows_obs_and_genes(two_studies):
    bank, studies = two_studies
    expected = union_matrix(bank, studies)
    genes = ["g69", "g0", "g30"]
    cols = [69, 0, 30]
    obs = bank.obs.set_index("cell_id")
    seen = 0
    for b in bank.iter_batches(
        40, seed=1, columns=["cell_type", "study_id", "n_genes"], buffer_size=64
    ):
        ids = b["cell_id"]
        assert b["cell_id"].dtype == np.int64
        np.testing.assert_array_equal(dense(b["X"]), dense(expected[ids]))
        assert b["X"].dtype == np.float32
        want = obs.loc[ids, ["cell_type", "study_id", "n_genes"]].reset_index(drop=True)
        pd.testing.assert_frame_equal(b["obs"], want)
        seen += len(ids)
    assert seen == 250
    for b in bank.iter_batches(100, seed=1, genes=genes):
        np.testing.assert_array_equal(dense(b["X"]), dense(expected[b["cell_id"]][:, cols]))


def test_layer_stream_and_drop_last(two_studies):
    bank, studies = two_studies
    counts = [s.copy() for s in studies]
    for c in counts:
        c.X = c.layers["counts"]
    expected = union_matrix(bank, counts)
    batches = list(bank.iter_batches(64, layer="counts", drop_last=True, seed=2))
    assert [len(b["cell_id"]) for b in batches] == [64] * 3
    for b in batches:
        np.testing.assert_array_equal(dense(b["X"]), dense(expected[b["cell_id"]]))


def test_bad_arguments(two_studies):
    bank, _ = two_studies
    with pytest.raises(ValueError, match="rank"):
        next(bank.iter_batches(8, rank=2, world_size=2))
    with pytest.raises(KeyError, match="unknown obs column"):
        next(bank.iter_batches(8, columns=["nope"]))
    with pytest.raises(KeyError, match="no table"):
        next(bank.iter_batches(8, layer="nope"))
