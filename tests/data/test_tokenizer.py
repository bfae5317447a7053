import numpy as np
import pytest
import scipy.sparse as sp

from scformer_scvi.data import GeneVocab, Tokenizer, mask_tokens


@pytest.fixture
def counts(baron_small):
    return sp.csr_matrix(baron_small.X), list(baron_small.var_names)


def make_tokenizer(genes, **kwargs):
    vocab = GeneVocab(genes)
    return vocab, Tokenizer(vocab.lookup(genes), vocab.pad_id, vocab.cls_id, **kwargs)


def test_structure_cls_first_contiguous_padding_max_length(counts):
    X, genes = counts
    vocab, tokenizer = make_tokenizer(genes, max_seq_len=64)
    tokens = tokenizer(X)
    assert (tokens.gene_ids[:, 0] == vocab.cls_id).all()
    assert tokens.gene_ids.shape[1] <= 64
    nnz = np.diff(X.indptr)
    np.testing.assert_array_equal(tokens.lengths, 1 + np.minimum(nnz, 63))
    # padding only after the last real token: the mask is non-decreasing along each row
    assert (np.diff(tokens.padding_mask.astype(int), axis=1) >= 0).all()
    assert (tokens.gene_ids[tokens.padding_mask] == vocab.pad_id).all()
    assert (tokens.gene_ids[~tokens.padding_mask] != vocab.pad_id).all()
    # the batch is padded to its own longest cell, not to max_seq_len
    assert tokens.gene_ids.shape[1] == tokens.lengths.max()


def test_tokens_carry_the_cells_values(counts):
    X, genes = counts
    vocab, tokenizer = make_tokenizer(genes, max_seq_len=1000)
    tokens = tokenizer(X[:20])
    dense = X[:20].toarray()
    for i in range(20):
        real = ~tokens.padding_mask[i]
        real[0] = False
        columns = tokens.gene_ids[i, real] - len(vocab.special_tokens)
        np.testing.assert_array_equal(tokens.values[i, real], dense[i, columns])
        assert set(columns) == set(np.flatnonzero(dense[i]))
    np.testing.assert_allclose(tokens.library_size, dense.sum(axis=1))


def test_inference_keeps_top_expressed_genes_deterministically(counts):
    X, genes = counts
    _, tokenizer = make_tokenizer(genes, max_seq_len=11)
    first, second = tokenizer(X), tokenizer(X)
    np.testing.assert_array_equal(first.gene_ids, second.gene_ids)
    dense = X.toarray()
    for i in range(X.shape[0]):
        kept = first.values[i, 1 : first.lengths[i]]
        expressed = np.sort(dense[i][dense[i] > 0])[::-1]
        np.testing.assert_array_equal(np.sort(kept)[::-1], expressed[: kept.size])


def test_tokens_of_a_cell_do_not_depend_on_its_minibatch(counts):
    X, genes = counts
    _, tokenizer = make_tokenizer(genes, max_seq_len=50, n_zero_genes=10)
    together = tokenizer(X[:30])
    for i in (0, 7, 29):
        alone = tokenizer(X[i])
        n = alone.lengths[0]
        np.testing.assert_array_equal(alone.gene_ids[0, :n], together.gene_ids[i, :n])
        np.testing.assert_array_equal(alone.bins[0, :n], together.bins[i, :n])


def test_training_subsamples_randomly_among_expressed_genes(counts):
    X, genes = counts
    vocab, tokenizer = make_tokenizer(genes, max_seq_len=21)
    a = tokenizer(X, np.random.default_rng(0))
    b = tokenizer(X, np.random.default_rng(1))
    long_cells = np.diff(X.indptr) > 20
    assert not np.array_equal(a.gene_ids[long_cells], b.gene_ids[long_cells])
    dense = X.toarray()
    columns = a.gene_ids[:, 1:] - len(vocab.special_tokens)
    real = ~a.padding_mask[:, 1:]
    rows = np.broadcast_to(np.arange(X.shape[0])[:, None], columns.shape)
    assert (dense[rows[real], columns[real]] > 0).all()


def test_zero_genes_are_unexpressed_distinct_and_after_expressed(counts):
    X, genes = counts
    vocab, tokenizer = make_tokenizer(genes, max_seq_len=400, n_zero_genes=16)
    dense = X.toarray()
    for rng in (None, np.random.default_rng(0)):
        tokens = tokenizer(X, rng)
        for i in range(0, X.shape[0], 17):
            n_expr = int((dense[i] > 0).sum())
            zero_ids = tokens.gene_ids[i, 1 + n_expr : tokens.lengths[i]]
            assert zero_ids.size == 16 and np.unique(zero_ids).size == 16
            assert (dense[i, zero_ids - len(vocab.special_tokens)] == 0).all()
            assert (tokens.values[i, 1 + n_expr : tokens.lengths[i]] == 0).all()
            assert (tokens.bins[i, 1 + n_expr : tokens.lengths[i]] == 0).all()


def test_unknown_genes_are_ignored_and_all_unknown_is_an_error(counts):
    X, genes = counts
    vocab = GeneVocab(genes[:100])
    tokenizer = Tokenizer(vocab.lookup(genes), vocab.pad_id, vocab.cls_id, max_seq_len=1000)
    tokens = tokenizer(X)
    real = ~tokens.padding_mask
    real[:, 0] = False
    assert (tokens.gene_ids[real] < len(vocab)).all()
    np.testing.assert_array_equal(tokens.lengths - 1, np.diff(X[:, :100].tocsr().indptr))
    with pytest.raises(ValueError, match="None of the genes is in the model's vocabulary"):
        Tokenizer(np.full(len(genes), -1), vocab.pad_id, vocab.cls_id)


def test_dense_input_equals_sparse_input(counts):
    X, genes = counts
    _, tokenizer = make_tokenizer(genes, max_seq_len=64)
    np.testing.assert_array_equal(tokenizer(X[:10]).gene_ids, tokenizer(X[:10].toarray()).gene_ids)


def test_masking_never_touches_cls_or_padding(counts):
    X, genes = counts
    _, tokenizer = make_tokenizer(genes, max_seq_len=64)
    tokens = tokenizer(X)
    mask = mask_tokens(tokens.padding_mask, 0.25, np.random.default_rng(0))
    assert not mask[:, 0].any()
    assert not (mask & tokens.padding_mask).any()
    n_genes = tokens.lengths - 1
    np.testing.assert_array_equal(
        mask.sum(axis=1), np.maximum(np.rint(0.25 * n_genes), np.minimum(n_genes, 1))
    )
    assert not mask_tokens(tokens.padding_mask, 0.0, np.random.default_rng(0)).any()
    with pytest.raises(ValueError, match="mask_ratio"):
        mask_tokens(tokens.padding_mask, 1.5, np.random.default_rng(0))


def test_forced_genes_are_always_kept_and_flagged(counts):
    X, genes = counts
    vocab = GeneVocab([*genes, "OFF_PANEL_GENE"])
    tokenizer = Tokenizer(vocab.lookup(genes), vocab.pad_id, vocab.cls_id, max_seq_len=8)
    dense = X.toarray()
    cell = int(np.argmax((dense > 0).sum(axis=1)))  # a long cell: truncation happens
    lowest = genes[int(np.argmin(np.where(dense[cell] > 0, dense[cell], np.inf)))]
    unexpressed = genes[int(np.flatnonzero(dense[cell] == 0)[0])]
    forced = [vocab[lowest], vocab[unexpressed], vocab["OFF_PANEL_GENE"]]
    for rng in (None, np.random.default_rng(0)):
        tokens = tokenizer(X[[cell, cell]], rng, forced_ids=np.array([forced, [forced[0], 0, 0]]))
        assert tokens.gene_ids.shape[1] <= 8
        row = tokens.gene_ids[0]
        assert set(forced) <= set(row.tolist())
        assert set(row[tokens.forced[0]].tolist()) == set(forced)
        values = dict(zip(row.tolist(), tokens.values[0].tolist(), strict=True))
        assert values[vocab[lowest]] > 0
        assert values[vocab[unexpressed]] == 0
        assert values[vocab["OFF_PANEL_GENE"]] == 0
        assert row[tokens.forced[1]].tolist() == [forced[0]]  # the second cell: one gene
        assert len(set(row[~tokens.padding_mask[0]].tolist())) == tokens.lengths[0]  # no repeats
