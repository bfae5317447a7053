"""Bad input gets a clear error and leaves the bank exactly as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from bank_helpers import make_adata, new_bank

from scbank import DataBank, InvalidInputError


def _snapshot(root: Path) -> tuple[int, dict[str, bytes]]:
    files = {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != ".lock"
    }
    return DataBank.open(root).generation, files


@pytest.fixture
def bank(bank_path):
    b = new_bank(bank_path)
    b.append_anndata(make_adata(40, seed=1), "existing")
    return b


def _with_x(x):
    a = make_adata(40, seed=5, prefix="n")
    a.X = x
    return a


def _bad_value(value, layer=False):
    a = make_adata(40, seed=5, prefix="n")
    m = sp.csr_matrix(a.layers["counts"] if layer else a.X)
    m.data[-1] = value  # in the last chunk: some parts are already written when it is found
    if layer:
        a.layers["counts"] = m
    else:
        a.X = m
    return a


def _rename(axis, names):
    a = make_adata(40, seed=5, prefix="n")
    setattr(a, f"{axis}_names", names)  # AnnData only warns about duplicates
    return a


def _mixed_column():
    a = make_adata(40, seed=5, prefix="n")
    a.obs["mixed"] = [1, "a"] * 20
    return a


def _reserved_column():
    a = make_adata(40, seed=5, prefix="n")
    a.obs["study_id"] = "x"
    return a


GENES = [f"g{i}" for i in range(40)]
CASES = {
    "duplicate study": (lambda: make_adata(40, seed=5), {"study_id": "existing"}, "already exists"),
    "NaN count": (lambda: _bad_value(np.nan), {}, "NaN or infinite"),
    "inf count": (lambda: _bad_value(np.inf), {}, "NaN or infinite"),
    "negative count": (lambda: _bad_value(-1.0), {}, "negative"),
    "negative layer": (lambda: _bad_value(-2.0, layer=True), {}, r"layers\.counts.*negative"),
    "NaN dense X": (lambda: _with_x(np.full((40, 40), np.nan, np.float32)), {}, "NaN"),
    "duplicate cell": (lambda: _rename("obs", ["c"] * 40), {}, "duplicated cell names"),
    "empty gene": (lambda: _rename("var", ["", *GENES[1:]]), {}, "empty or non-string gene"),
    "duplicate gene": (lambda: _rename("var", ["g1", *GENES[1:]]), {}, "duplicated gene"),
    "reserved column": (_reserved_column, {}, "reserved"),
    "unstorable column": (_mixed_column, {}, "column 'mixed' cannot be stored"),
    "unsafe layer": (lambda: make_adata(40, seed=5), {"layers": ["../x"]}, "invalid layer name"),
    "missing layer": (lambda: make_adata(40, seed=5), {"layers": ["nope"]}, "not a matrix"),
    "bad obsm": (lambda: make_adata(40, seed=5), {"obsm": ["nope"]}, "not a 2-d numeric"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_study_is_refused_and_bank_unchanged(bank, case, write_h5ad):
    make, kwargs, message = CASES[case]
    before = _snapshot(bank.path)
    a = make()
    source = write_h5ad(a, "bad") if case == "NaN count" else a  # also the streaming path
    kwargs = {"study_id": "new", "chunk_size": 16, **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        bank.append_anndata(source, **kwargs)
    assert _snapshot(bank.path) == before


@pytest.mark.parametrize(
    "study_id", ["../evil", "a/b", "", ".hidden", "a b", "x..y", "ü", "a\\b", "-x", "x" * 200]
)
def test_unsafe_study_ids_are_refused(bank, study_id):
    before = _snapshot(bank.path)
    with pytest.raises(InvalidInputError, match="invalid study id"):
        bank.append_anndata(make_adata(10, seed=5), study_id)
    assert _snapshot(bank.path) == before


def test_csc_h5ad_gets_a_fix_suggestion(bank, write_h5ad):
    a = make_adata(20, seed=5)
    a.X = sp.csc_matrix(a.X)
    before = _snapshot(bank.path)
    with pytest.raises(InvalidInputError, match=r"tocsr\(\)"):
        bank.append_anndata(write_h5ad(a, "csc"), "csc")
    assert _snapshot(bank.path) == before


def test_dense_table_errors(bank):
    before = _snapshot(bank.path)
    with pytest.raises(InvalidInputError, match="invalid table name"):
        bank.write_dense_table("a/b", np.zeros((40, 2)))
    with pytest.raises(InvalidInputError, match="one unique cell id per row"):
        bank.write_dense_table("emb", np.zeros((39, 2)))
    with pytest.raises(InvalidInputError, match="one unique cell id per row"):
        bank.write_dense_table("emb", np.zeros((2, 2)), cell_ids=[1, 1])
    with pytest.raises(InvalidInputError, match="not in generation"):
        bank.write_dense_table("emb", np.zeros((1, 2)), cell_ids=[999])
    with pytest.raises(InvalidInputError, match="2-d numeric"):
        bank.write_dense_table("emb", np.zeros(40))
    with pytest.raises(InvalidInputError, match="2-d numeric"):
        bank.write_dense_table("emb", np.zeros((40, 2), dtype=bool))
    with pytest.raises(InvalidInputError, match="exists"):
        bank.write_dense_table("X_pca", np.zeros((40, 2)))
    assert _snapshot(bank.path) == before


def test_create_refuses_non_empty_directory(tmp_path):
    (tmp_path / "x").write_text("hi")
    with pytest.raises(Exception, match="not empty"):
        DataBank.create(tmp_path)
    with pytest.raises(ValueError, match="multiple"):
        DataBank.create(tmp_path / "new", row_group_size=10, part_size=25)
