import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scformer_scvi.data import GeneVocab


def test_special_tokens_come_first_and_genes_follow():
    vocab = GeneVocab(["CD3E", "MS4A1", "LYZ"])
    assert (vocab.pad_id, vocab.cls_id, vocab.mask_id) == (0, 1, 2)
    assert vocab["CD3E"] == 3 and vocab["LYZ"] == 5
    assert len(vocab) == 6 and vocab.n_genes == 3
    np.testing.assert_array_equal(vocab.lookup(["LYZ", "NOPE", "CD3E", "<pad>"]), [5, -1, 3, -1])


def test_json_round_trip_keeps_ids_and_md5(tmp_path):
    vocab = GeneVocab(["A", "B", "C"])
    vocab.save(tmp_path / "v.json")
    loaded = GeneVocab.load(tmp_path / "v.json")
    assert loaded == vocab and loaded.md5 == vocab.md5
    assert loaded.tokens == ["<pad>", "<cls>", "<mask>", "A", "B", "C"]


def test_md5_depends_on_order():
    assert GeneVocab(["A", "B"]).md5 != GeneVocab(["B", "A"]).md5


def test_tampered_file_is_refused(tmp_path):
    GeneVocab(["A", "B", "C"]).save(tmp_path / "v.json")
    payload = json.loads((tmp_path / "v.json").read_text())
    payload["genes"] = ["A", "C", "B"]
    (tmp_path / "v.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="checksum mismatch"):
        GeneVocab.load(tmp_path / "v.json")


def test_duplicate_and_empty_genes_are_rejected():
    with pytest.raises(ValueError, match="duplicated"):
        GeneVocab(["A", "B", "A"])
    with pytest.raises(ValueError, match="empty or NaN"):
        GeneVocab(["A", ""])


def test_from_anndata_uses_var_names_or_a_column():
    adata = ad.AnnData(
        np.ones((2, 3), dtype=np.float32),
        var=pd.DataFrame({"symbol": ["X1", "X2", "X3"]}, index=["ENSG1", "ENSG2", "ENSG3"]),
    )
    assert GeneVocab.from_anndata(adata).genes == ["ENSG1", "ENSG2", "ENSG3"]
    assert GeneVocab.from_anndata(adata, gene_key="symbol").genes == ["X1", "X2", "X3"]
    with pytest.raises(KeyError, match="not a column of adata.var"):
        GeneVocab.from_anndata(adata, gene_key="gene_symbols")


def test_extend_appends_without_changing_existing_ids():
    vocab = GeneVocab(["A", "B"])
    bigger = vocab.extend(["B", "C", "D"])
    assert [bigger[g] for g in ("A", "B")] == [vocab["A"], vocab["B"]]
    assert bigger.genes == ["A", "B", "C", "D"]
