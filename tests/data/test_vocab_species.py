import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scformer_scvi.data import GeneVocab


def test_case_insensitive_matching_for_mouse_symbols():
    human = GeneVocab(["GCG", "INS", "Ins"], case_sensitive=False)
    np.testing.assert_array_equal(
        human.lookup(["Gcg", "INS", "Ins", "ins", "Sst"]), [3, 4, 5, -1, -1]
    )
    # "ins" folds to both "INS" and "Ins": ambiguous, so unknown.
    assert (GeneVocab(["GCG"]).lookup(["Gcg"]) == -1).all()  # exact by default
    assert (GeneVocab(["GCG"]).lookup(["Gcg"], case_sensitive=False) == 3).all()
    restored = GeneVocab.from_dict(human.to_dict())
    assert restored.case_sensitive is False and restored.md5 == human.md5
    assert human.extend(["Sst"]).case_sensitive is False


def test_coverage_counts_known_genes_and_naming():
    vocab = GeneVocab(["GCG", "INS", "SST"])
    report = vocab.coverage(["GCG", "Ins", "ENSG00000115263", "PPY"])
    assert report["n_genes"] == 4 and report["n_known"] == 1 and report["fraction"] == 0.25
    assert report["unknown"] == ["Ins", "ENSG00000115263", "PPY"]
    assert report["n_case_only"] == 0 and report["vocab_naming"] == "symbol"
    assert vocab.coverage(["Ins"], case_sensitive=False)["n_case_only"] == 1
    ensembl = vocab.coverage(["ENSG00000115263", "ENSMUSG00000000385.3"])
    assert ensembl["naming"] == "ensembl" and ensembl["n_known"] == 0


def test_suggest_gene_key_finds_the_symbol_column():
    vocab = GeneVocab(["GCG", "INS", "SST"])
    var = pd.DataFrame(
        {"symbol": ["GCG", "INS", "XYZ"], "biotype": ["protein_coding"] * 3},
        index=["ENSG00000115263", "ENSG00000254647", "ENSG00000000001"],
    )
    adata = ad.AnnData(X=np.zeros((2, 3), dtype=np.float32), var=var)
    assert vocab.suggest_gene_key(adata) == "symbol"
    adata.var["symbol"] = ["a", "b", "c"]
    with pytest.raises(ValueError, match="No var column nor var_names shares a gene"):
        vocab.suggest_gene_key(adata)
