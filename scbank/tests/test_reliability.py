"""Crash safety, locking, reader isolation and corruption reports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from bank_helpers import CHUNK, dense, make_adata, new_bank

from scbank import BankLockedError, CorruptBankError, DataBank, ScBankError

WRITER = textwrap.dedent(
    """
    import sys
    from scbank import DataBank
    bank = DataBank.open(sys.argv[1], mode="a")
    bank.append_anndata(sys.argv[2], "late", chunk_size=32)
    """
)


def _start_paused_writer(bank: Path, h5ad: Path, tmp_path: Path, pause_at: str):
    """Run a real append in a subprocess that stops at ``pause_at`` (see scbank._faults)."""
    signal_file = tmp_path / f"paused-{pause_at.replace(':', '-')}"
    env = {**os.environ, "SCBANK_PAUSE_AT": pause_at, "SCBANK_PAUSE_FILE": str(signal_file)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(bank), str(h5ad)], env=env)
    deadline = time.monotonic() + 60
    while not signal_file.exists():
        assert proc.poll() is None, "the writer exited before reaching the pause point"
        assert time.monotonic() < deadline, "the writer never reached the pause point"
        time.sleep(0.05)
    return proc


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {".lock"}


@pytest.fixture
def bank_and_input(bank_path, write_h5ad):
    bank = new_bank(bank_path)
    bank.append_anndata(make_adata(80, seed=1), "early", chunk_size=CHUNK)
    return bank, write_h5ad(make_adata(300, seed=2, prefix="late"), "late")


def test_sigkill_mid_append_keeps_previous_generation(bank_and_input, tmp_path):
    bank, h5ad = bank_and_input
    before_files = _files(bank.path)
    reader = DataBank.open(bank.path)
    x_before = reader.X[:]
    # pause after the 3rd part file is complete: the append is really half-way
    writer = _start_paused_writer(bank.path, h5ad, tmp_path, "part-written:3")
    try:
        partial = _files(bank.path) - before_files
        assert any(p.startswith("tables/X/late/") for p in partial)
        # a second writer gets a clear error instead of interleaving
        other = DataBank.open(bank.path, mode="a", lock_timeout=0.2)
        with pytest.raises(BankLockedError, match=f"pid {writer.pid}"):
            other.remove_study("early")
        # readers see one consistent generation throughout
        during = DataBank.open(bank.path)
        assert during.generation == reader.generation == 2
        assert (during.X[:] != x_before).nnz == 0
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    after = DataBank.open(bank.path, mode="a", lock_timeout=5)
    assert after.generation == 2
    assert list(after.studies.index) == ["early"]
    assert after.verify().ok
    # the OS released the dead writer's lock; its files are orphans that vacuum() collects,
    # with generation 1's manifest and (empty) vocabulary
    gen1_vocab = DataBank.open(bank.path, generation=1)._manifest.vocab.path
    removed = after.vacuum()
    assert set(removed) == partial | {"manifests/gen-000001.json", gen1_vocab}
    after.append_anndata(h5ad, "late", chunk_size=CHUNK)
    assert after.n_obs == 380
    assert after.verify().ok


def test_sigkill_before_manifest_swap(bank_and_input, tmp_path):
    bank, h5ad = bank_and_input
    writer = _start_paused_writer(bank.path, h5ad, tmp_path, "before-commit")
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    # generation 3 was fully written but never committed
    assert (bank.path / "manifests" / "gen-000003.json").is_file()
    reopened = DataBank.open(bank.path, mode="a")
    assert reopened.generation == 2
    assert reopened.verify().ok
    assert 3 not in reopened.history.index
    with pytest.raises(ScBankError, match="never committed"):
        DataBank.open(bank.path, generation=3)
    reopened.append_anndata(h5ad, "late")
    assert DataBank.open(bank.path).generation == 3


def test_reader_keeps_its_generation_while_others_write(bank_path):
    writer = new_bank(bank_path)
    writer.append_anndata(make_adata(50, seed=1), "a")
    reader = DataBank.open(bank_path)
    rows_before = reader.X[[0, 49]]
    writer.append_anndata(make_adata(50, seed=2, prefix="b"), "b")
    writer.remove_study("a")
    assert reader.generation == 2
    assert reader.n_obs == 50
    assert (reader.X[[0, 49]] != rows_before).nnz == 0
    assert list(reader.obs["study_id"].unique()) == ["a"]
    assert DataBank.open(bank_path).generation == 4


def test_stale_handle_writes_on_top_of_newest_generation(bank_path):
    first = new_bank(bank_path)
    second = DataBank.open(bank_path, mode="a")
    first.append_anndata(make_adata(20, seed=1), "a")
    second.append_anndata(make_adata(20, seed=2, prefix="b"), "b")  # must not lose "a"
    assert list(DataBank.open(bank_path).studies.index) == ["a", "b"]


def test_read_only_handle_refuses_writes(two_studies):
    bank, _ = two_studies
    with pytest.raises(ScBankError, match="read-only"):
        bank.remove_study("study_a")


@pytest.fixture
def corruptible(tmp_path):
    bank = new_bank(tmp_path / "c.scb", random_access=False)
    a = make_adata(150, seed=3)
    bank.append_anndata(a, "s", chunk_size=CHUNK)
    return DataBank.open(bank.path), a


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _values_offset(path: Path, row_group: int) -> int:
    """A byte inside the ``values`` column chunk of a row group."""
    column = pq.ParquetFile(path).metadata.row_group(row_group).column(2)
    assert column.path_in_schema.startswith("values")
    return column.data_page_offset + column.total_compressed_size // 2


def test_flipped_byte_is_reported_by_verify_and_reads(corruptible):
    bank, _ = corruptible
    part = bank._manifest.study("s").tables["X"].files[1]
    _flip_byte(bank.path / part.path, _values_offset(bank.path / part.path, 1))
    report = bank.verify(raise_on_error=False)
    assert report.bad_files == [part.path]
    assert "MD5" in str(report)
    with pytest.raises(CorruptBankError) as err:
        bank.verify()
    assert err.value.paths == (part.path,)
    with pytest.raises(CorruptBankError, match=part.path):
        bank.X[:]
    with pytest.raises(CorruptBankError, match=part.path):
        list(bank.iter_batches(32, shuffle=False))


def test_truncated_and_missing_files_are_named(corruptible, tmp_path):
    bank, _ = corruptible
    study = bank._manifest.study("s")
    x_part, meta_part = study.tables["X"].files[0], study.cellmeta[2]
    with open(bank.path / x_part.path, "r+b") as f:
        f.truncate(x_part.bytes // 2)
    (bank.path / meta_part.path).unlink()
    report = bank.verify(raise_on_error=False)
    assert set(report.bad_files) == {x_part.path, meta_part.path}
    assert "truncated" in str(report)
    assert "missing" in str(report)
    with pytest.raises(CorruptBankError, match=x_part.path):
        bank.X[[0]]
    with pytest.raises(CorruptBankError, match=meta_part.path):
        bank.obs  # noqa: B018


def test_truncated_twin_is_named_on_read(bank_path):
    bank = new_bank(bank_path)
    bank.append_anndata(make_adata(40), "s")
    twin = bank._manifest.study("s").tables["X"].files[0].twin
    with open(bank.path / twin.path, "r+b") as f:
        f.truncate(100)
    fresh = DataBank.open(bank.path)
    with pytest.raises(CorruptBankError, match=twin.path):
        fresh.X[[1]]
    assert fresh.verify(raise_on_error=False).bad_files == [twin.path]


def test_corrupt_vocabulary_is_named(corruptible):
    bank, _ = corruptible
    vocab = bank._manifest.vocab
    _flip_byte(bank.path / vocab.path, 5)
    fresh = DataBank.open(bank.path)
    with pytest.raises(CorruptBankError, match="vocab"):
        fresh.var  # noqa: B018
    assert fresh.verify(raise_on_error=False).bad_files == [vocab.path]


def test_reads_after_corruption_elsewhere_still_work(corruptible):
    bank, a = corruptible
    part = bank._manifest.study("s").tables["X"].files[2]  # rows 128..149
    _flip_byte(bank.path / part.path, _values_offset(bank.path / part.path, 0))
    with pytest.raises(CorruptBankError, match=part.path):
        bank.X[[140]]
    np.testing.assert_array_equal(dense(bank.X[:100]), dense(a.X[:100]))
