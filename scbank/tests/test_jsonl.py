"""The JSON-lines layout: export, then import, gives back the same bank exactly."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from bank_helpers import dense, make_adata, new_bank

from scbank import DataBank, InvalidInputError


@pytest.fixture
def exported(tmp_path):
    bank = new_bank(tmp_path / "src.scb")
    bank.append_anndata(make_adata(30, [f"g{i}" for i in range(12)], seed=1, prefix="a"), "a")
    bank.append_anndata(make_adata(70, [f"g{i}" for i in range(6, 30)], seed=2, prefix="b"), "b")
    bank.append_anndata(make_adata(20, ["z1", "g3"], seed=3, prefix="c"), "c")
    bank.remove_study("a")  # leaves genes without cells and a gap in cell ids
    emb = np.random.default_rng(0).normal(size=(3, 4))  # float64, some cells only
    bank.write_dense_table("emb", emb, cell_ids=[31, 110, 60])
    out = tmp_path / "export"
    bank.export_jsonl(out)
    return bank, out


def test_export_layout_is_human_readable(exported):
    bank, out = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "manifest.json",
            "gene.vocab.json",
            "studytable.jsonl",
            "cellmeta.jsonl",
            "gene.annotation.jsonl",
            "X.datatable.jsonl",
            "layers.counts.datatable.jsonl",
            "obsm.X_pca.datatable.jsonl",
            "obsm.guides.datatable.jsonl",
            "obsm.emb.datatable.jsonl",
        ]
    )
    vocab = json.loads((out / "gene.vocab.json").read_text())
    assert vocab["0"] == "g0"
    assert len(vocab) == bank.n_vars
    first = json.loads((out / "X.datatable.jsonl").read_text().splitlines()[0])
    assert first["id"] == 30
    assert set(first) == {"id", "genes", "expressions"}
    cell = json.loads((out / "cellmeta.jsonl").read_text().splitlines()[0])
    assert cell["study_id"] == "b"
    assert cell["obs_name"] == "b0"
    assert cell["cell_type"] in "BTNK"
    meta = json.loads((out / "manifest.json").read_text())
    assert meta["main_table"] == "X"
    assert meta["studies"] == ["b", "c"]


def test_round_trip_is_exact(exported, tmp_path):
    bank, out = exported
    back = DataBank.from_jsonl(out, tmp_path / "back.scb")
    assert back.verify().ok
    pd.testing.assert_frame_equal(back.obs, bank.obs)
    pd.testing.assert_frame_equal(back.var, bank.var)
    pd.testing.assert_frame_equal(back.studies, bank.studies)
    assert (back.X[:] != bank.X[:]).nnz == 0
    assert (back.layers["counts"][:] != bank.layers["counts"][:]).nnz == 0
    np.testing.assert_array_equal(back.obsm["X_pca"][:], bank.obsm["X_pca"][:])
    assert back.obsm["emb"].dtype == np.float64
    np.testing.assert_array_equal(back.obsm["emb"][:], bank.obsm["emb"][:])  # NaN-aware
    for sid in ("b", "c"):
        x, y = back.study(sid).to_memory(), bank.study(sid).to_memory()
        pd.testing.assert_frame_equal(x.obs, y.obs)
        pd.testing.assert_frame_equal(x.var, y.var)
        np.testing.assert_array_equal(dense(x.obsm["guides"]), dense(y.obsm["guides"]))
        assert x.uns == y.uns
    # appending afterwards continues the id sequences of the original
    back.append_anndata(make_adata(5, ["g0", "new"], seed=4, prefix="d"), "d")
    assert back.obs["cell_id"].iloc[-1] == 124
    assert back.var.loc["new", "gene_id"] == bank.n_vars


def test_tampered_export_is_refused(exported, tmp_path):
    _, out = exported
    with open(out / "cellmeta.jsonl", "a") as f:
        f.write("{}\n")
    with pytest.raises(InvalidInputError, match=r"cellmeta\.jsonl"):
        DataBank.from_jsonl(out, tmp_path / "bad.scb")


def test_export_refuses_non_empty_directory(exported):
    bank, out = exported
    with pytest.raises(InvalidInputError, match="not empty"):
        bank.export_jsonl(out)


def test_studies_survive_as_anndata(exported, tmp_path):
    bank, _ = exported
    path = tmp_path / "c.h5ad"
    bank.study("c").to_memory().write_h5ad(path)
    assert ad.read_h5ad(path).var_names.tolist() == ["z1", "g3"]
