"""Fixtures of the scbank tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

# pytest's importlib mode names this file "scbank.tests.conftest" and first binds "scbank" to
# the distribution *folder* (a namespace package without the code). Drop that binding so that
# `import scbank` gets the installed library.
if getattr(sys.modules.get("scbank"), "__file__", None) is None:
    sys.modules.pop("scbank", None)
# importlib mode puts no test folder on sys.path; the tests import their helpers from here.
sys.path.insert(0, str(Path(__file__).parent))

import anndata as ad
import pytest
from bank_helpers import CHUNK, make_adata, new_bank

from scbank import DataBank


@pytest.fixture
def bank_path(tmp_path: Path) -> Path:
    return tmp_path / "test.scb"


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataBank, list[ad.AnnData]]:
    """A bank with two studies whose gene panels overlap only partly (read-only: shared)."""
    a = make_adata(150, [f"g{i}" for i in range(40)], seed=1, prefix="a")
    b = make_adata(100, [f"g{i}" for i in range(25, 70)], seed=2, prefix="b")
    bank = new_bank(tmp_path_factory.mktemp("two") / "two.scb")
    bank.append_anndata(a, "study_a", chunk_size=CHUNK)
    bank.append_anndata(b, "study_b", chunk_size=CHUNK)
    return DataBank.open(bank.path), [a, b]


@pytest.fixture
def write_h5ad(tmp_path: Path) -> Callable[[ad.AnnData, str], Path]:
    def write(a: ad.AnnData, name: str) -> Path:
        path = tmp_path / f"{name}.h5ad"
        a.write_h5ad(path)
        return path

    return write
