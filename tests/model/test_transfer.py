import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import torch

from scformer_scvi import SCFormer
from scformer_scvi.tools import knn_label_transfer
from tests.conftest import TINY_MODEL, TINY_TRAIN

LABELS = "cell_ontology_class"


@pytest.fixture(scope="module")
def reference(_baron_small):
    """A tiny reference on three donors, with every kind of per-row parameter."""
    adata = _baron_small[_baron_small.obs["donor"] != "human4"].copy()
    SCFormer.setup_anndata(adata, batch_key="donor", labels_key=LABELS)
    model = SCFormer(
        adata, **TINY_MODEL, likelihood="zinb", batch_token=True, domain_norm=True, dar_weight=0.1
    )
    model.train(max_epochs=1, **TINY_TRAIN)
    return model


@pytest.fixture
def query(_baron_small):
    """The fourth donor (a new batch), a tenth of its genes renamed (new genes), no labels."""
    adata = _baron_small[_baron_small.obs["donor"] == "human4"].copy()
    adata.var_names = [f"{g}_new" if i % 10 == 0 else g for i, g in enumerate(adata.var_names)]
    del adata.obs[LABELS]
    return adata


def token_tensors(model):
    module = model.module
    return {
        "embedding": module.embedding.gene.weight,
        "gep_theta": module.gep_head.log_theta,
        "mvc_theta": module.mvc_head.log_theta,
    }


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def test_frozen_expansion_keeps_old_rows_bitwise_after_training(baron_small):
    SCFormer.setup_anndata(baron_small)
    model = SCFormer(baron_small, **TINY_MODEL, likelihood="zinb")
    model.train(max_epochs=1, **TINY_TRAIN)
    n_old = len(model.vocab_)
    added = model.expand_vocab(["NEW1", "NEW2", baron_small.var_names[0]], freeze_old=True)
    assert list(added.index) == ["NEW1", "NEW2"] and (added["init"] == "mean").all()
    assert len(model.vocab_) == n_old + 2
    assert all(t.shape[0] == n_old + 2 for t in token_tensors(model).values())
    before = {k: v.detach().clone() for k, v in token_tensors(model).items()}
    encoder_before = model.module.encoder.layers[0].ffn[0].weight.detach().clone()
    model.train(max_epochs=2, plan_kwargs={"weight_decay": 0.1}, **TINY_TRAIN)
    for name, tensor in token_tensors(model).items():
        assert torch.equal(tensor.detach()[:n_old], before[name][:n_old]), name
    assert not torch.equal(model.module.encoder.layers[0].ffn[0].weight, encoder_before)
    # Without freezing the same training moves the old rows.
    model.expand_vocab(["NEW3"], freeze_old=False)
    weight = model.module.embedding.gene.weight.detach().clone()
    model.train(max_epochs=1, **TINY_TRAIN)
    assert not torch.equal(model.module.embedding.gene.weight[:n_old], weight[:n_old])


def test_expanded_model_saves_and_loads(reference, tmp_path):
    adata = reference.adata
    model = SCFormer.load_query_data(adata.copy(), reference, freeze=False)
    model.expand_vocab(["NEWGENE"])
    model.save(tmp_path / "m")
    loaded = SCFormer.load(tmp_path / "m", model.adata)
    assert loaded.vocab_ == model.vocab_ and "NEWGENE" in loaded.vocab_
    for key, value in model.module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )


def test_new_tokens_start_from_orthologs(reference, tmp_path):
    genes = reference.vocab_.genes
    table = pd.DataFrame(
        {"human": [genes[0], genes[1], "NOT_IN_VOCAB"], "mouse": ["m0", "m1", "m2"]}
    )
    path = tmp_path / "orthologs.csv"
    table.to_csv(path, index=False)
    model = SCFormer.load_query_data(reference.adata.copy(), reference, freeze=False)
    with pytest.warns(UserWarning, match=r"1 of 3 new genes have no ortholog .*'m2'"):
        added = model.expand_vocab(["m0", "m1", "m2"], init_from=path)
    assert list(added["init"]) == [f"ortholog:{genes[0]}", f"ortholog:{genes[1]}", "mean"]
    weight = model.module.embedding.gene.weight.detach()
    ids = model.vocab_.lookup(["m0", "m1", genes[0], genes[1]])
    assert torch.equal(weight[ids[0]], weight[ids[2]]) and torch.equal(
        weight[ids[1]], weight[ids[3]]
    )
    theta = model.module.gep_head.log_theta.detach()
    assert theta[ids[0]] == theta[ids[2]]
    gene_rows = weight[3 : len(reference.vocab_)]
    torch.testing.assert_close(weight[model.vocab_["m2"]], gene_rows.mean(dim=0))


def test_symbol_rule_fills_in_what_the_ortholog_table_lacks(reference):
    genes = reference.vocab_.genes
    table = pd.DataFrame({"human": [genes[0], genes[2]], "mouse": ["m0", genes[1].lower()]})
    new = ["m0", genes[1].lower(), genes[3].lower(), "m2"]
    model = SCFormer.load_query_data(reference.adata.copy(), reference, freeze=False)
    with pytest.warns(UserWarning, match=r"1 of 4 new genes have no ortholog .*'m2'"):
        added = model.expand_vocab(new, init_from=[table, "symbol"])
    # The table comes first: genes[1].lower() takes its ortholog there, not its symbol match.
    assert list(added["init"]) == [
        f"ortholog:{genes[0]}",
        f"ortholog:{genes[2]}",
        f"symbol:{genes[3]}",
        "mean",
    ]
    weight = model.module.embedding.gene.weight.detach()
    assert torch.equal(weight[model.vocab_[genes[3].lower()]], weight[model.vocab_[genes[3]]])
    model = SCFormer.load_query_data(reference.adata.copy(), reference, freeze=False)
    with pytest.warns(UserWarning, match="1 of 4 new genes"):
        added = model.expand_vocab(new, init_from=["symbol", table])
    assert added.loc[genes[1].lower(), "init"] == f"symbol:{genes[1]}"
    with pytest.raises(ValueError, match="init_from='mean' initialises every gene"):
        model.expand_vocab(["m9"], init_from=[table, "mean"])


def test_ortholog_table_without_usable_columns_is_refused(reference):
    model = SCFormer.load_query_data(reference.adata.copy(), reference, freeze=False)
    table = pd.DataFrame({"a": ["x", "y"], "b": ["m0", "m1"]})
    with pytest.raises(ValueError, match="names genes of the model's vocabulary"):
        model.expand_vocab(["m0"], init_from=table)
    with pytest.raises(KeyError, match="source_column='human'"):
        model.expand_vocab(["m0"], init_from=table, source_column="human")
    with pytest.raises(FileNotFoundError):
        model.expand_vocab(["m0"], init_from="no_such_table.csv")


def test_query_with_new_batch_and_genes_trains_and_predicts(reference, query):
    ref_state = snapshot(reference)
    model = SCFormer.load_query_data(query, reference, freeze=True)
    n_tokens, n_batch = len(reference.vocab_), reference.summary_stats.n_batch
    assert len(model.vocab_) == n_tokens + int(
        np.sum([g.endswith("_new") for g in query.var_names])
    )
    assert model.summary_stats.n_batch == n_batch + 1
    assert model.module.batch_embedding.weight.shape[0] == n_batch + 1
    trainable = {n for n, p in model.module.named_parameters() if p.requires_grad}
    assert trainable == {
        "embedding.gene.weight",
        "gep_head.log_theta",
        "mvc_head.log_theta",
        "batch_embedding.weight",
        "discriminator.4.weight",
        "discriminator.4.bias",
    }
    # New batch rows start at the reference's fallback for unseen batches.
    torch.testing.assert_close(
        model.module.batch_embedding.weight[-1], ref_state["batch_embedding.weight"].mean(dim=0)
    )
    model.train(max_epochs=1, **TINY_TRAIN)
    state = model.module.state_dict()
    for key, value in ref_state.items():
        if key.startswith("cell_norm.num_batches"):
            continue
        assert torch.equal(state[key][: value.shape[0]], value), key
    assert not torch.equal(
        state["batch_embedding.weight"][-1], ref_state["batch_embedding.weight"].mean(0)
    )
    # the new batch learned its own embedding statistics; the reference batches kept theirs
    assert not torch.equal(
        state["cell_norm.running_mean"][-1], ref_state["cell_norm.running_mean"].mean(0)
    )
    labels = model.predict()
    assert labels.shape == (query.n_obs,)
    assert set(labels) <= set(reference._label_categories())
    soft = model.predict(query, soft=True)
    assert list(soft.columns) == list(reference._label_categories())
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-5)
    assert (soft.idxmax(axis=1).to_numpy() == labels).all()


def test_head_and_knn_prediction_averages_the_head_and_the_vote(reference, query):
    cells = np.arange(60)
    head = reference.predict(indices=cells, soft=True)
    both = reference.predict(indices=cells, soft=True, method="head+knn", k=5)
    labels = reference.adata.obs[LABELS].astype(str).to_numpy()
    votes = knn_label_transfer(
        reference.get_latent_representation(),
        labels,
        reference.get_latent_representation(indices=cells),
        k=5,
        soft=True,
    ).reindex(columns=head.columns, fill_value=0.0)
    assert both.index.equals(head.index) and list(both.columns) == list(head.columns)
    np.testing.assert_allclose(both.to_numpy(), (head.to_numpy() + votes.to_numpy()) / 2, rtol=1e-6)
    np.testing.assert_allclose(both.sum(axis=1), 1.0, rtol=1e-5)
    hard = reference.predict(indices=cells, method="head+knn", k=5)
    np.testing.assert_array_equal(hard, both.idxmax(axis=1).to_numpy())
    # With one neighbour, a training cell's vote is its own label: half the probability mass,
    # so the combined prediction gives every training cell its label back.
    np.testing.assert_array_equal(
        reference.predict(indices=cells, method="head+knn", k=1), labels[cells]
    )
    with pytest.raises(ValueError, match="method must be 'head' or 'head\\+knn'"):
        reference.predict(method="vote")
    with pytest.raises(ValueError, match="knn_reference= goes with method='head\\+knn'"):
        reference.predict(knn_reference=reference)
    mapped = SCFormer.load_query_data(query.copy(), reference, freeze=True)
    with pytest.raises(ValueError, match="a query without labels"):
        mapped.predict(method="head+knn")
    # A mapped query embeds into the reference's space: the reference's labelled cells vote.
    combined = mapped.predict(soft=True, method="head+knn", k=5, knn_reference=reference)
    votes = knn_label_transfer(
        reference.get_latent_representation(),
        labels,
        mapped.get_latent_representation(),
        k=5,
        soft=True,
    ).reindex(columns=combined.columns, fill_value=0.0)
    expected = (mapped.predict(soft=True).to_numpy() + votes.to_numpy()) / 2
    np.testing.assert_allclose(combined.to_numpy(), expected, rtol=1e-6)


def test_freeze_modes(reference, query):
    embeddings_only = SCFormer.load_query_data(query.copy(), reference, freeze="embeddings_only")
    trainable = {n for n, p in embeddings_only.module.named_parameters() if p.requires_grad}
    assert {"embedding.gene.weight", "embedding.value.weight", "embedding.norm.weight"} <= trainable
    assert not any(
        n.startswith(("encoder.", "classifier.", "mvc_cell", "gep_head.mlp")) for n in trainable
    )
    full = SCFormer.load_query_data(query.copy(), reference, freeze=False)
    assert all(p.requires_grad for p in full.module.parameters())
    same = reference.adata[:40].copy()
    with pytest.raises(ValueError, match="leaves nothing to train"):
        SCFormer.load_query_data(same, reference, freeze=True)
    with pytest.raises(ValueError, match="freeze must be"):
        SCFormer.load_query_data(same, reference, freeze="all")


def test_labelled_query_with_a_new_cell_type_trains_its_row(reference, baron_small):
    adata = baron_small[baron_small.obs["donor"] == "human4"].copy()
    labels = adata.obs[LABELS].astype(str).to_numpy()
    labels[:5] = "new type"
    adata.obs[LABELS] = labels
    model = SCFormer.load_query_data(adata, reference, freeze=True)
    n_labels = reference.summary_stats.n_labels
    out = model.module.classifier[-1]
    assert out.weight.shape[0] == n_labels + 1 and out.weight.requires_grad
    assert model.module.weights["classification"] > 0
    before = out.weight.detach().clone()
    model.train(max_epochs=1, **TINY_TRAIN)
    assert torch.equal(out.weight[:n_labels], before[:n_labels])
    assert not torch.equal(out.weight[n_labels:], before[n_labels:])
    assert "new type" in model._label_categories()


def test_unlabeled_query_saves_and_reloads_with_classification_off(reference, query, tmp_path):
    model = SCFormer.load_query_data(query, reference, freeze=True)
    assert model.module.weights["classification"] == 0.0
    model.save(tmp_path / "q")
    loaded = SCFormer.load(tmp_path / "q", query)
    assert loaded.module.weights["classification"] == 0.0
    np.testing.assert_array_equal(loaded.predict(query), model.predict(query))


def test_predict_needs_a_classifier(baron_small):
    SCFormer.setup_anndata(baron_small)
    model = SCFormer(baron_small, **TINY_MODEL)
    model.is_trained_ = True
    with pytest.raises(ValueError, match="no classification head"):
        model.predict()


def test_fine_tuning_an_unlabelled_model_for_annotation(baron_small):
    SCFormer.setup_anndata(baron_small, batch_key="donor")
    pretrained = SCFormer(baron_small, **TINY_MODEL)
    pretrained.train(max_epochs=1, **TINY_TRAIN)
    assert pretrained.module.classifier is None
    tuned = SCFormer.load_query_data(
        baron_small.copy(), pretrained, freeze=False, labels_key=LABELS
    )
    assert tuned.module.classifier is not None
    encoder = "encoder.layers.0.attn.qkv.weight"
    assert torch.equal(tuned.module.state_dict()[encoder], pretrained.module.state_dict()[encoder])
    tuned.train(max_epochs=1, **TINY_TRAIN)
    assert "classification_loss_train" in tuned.history
    assert set(tuned.predict()) <= set(baron_small.obs[LABELS].astype(str))
    with pytest.raises(KeyError, match="labels_key='nope'"):
        SCFormer.load_query_data(baron_small.copy(), pretrained, labels_key="nope")


def test_balanced_class_weights_even_out_the_classes(baron_small):
    SCFormer.setup_anndata(baron_small, labels_key=LABELS)
    model = SCFormer(baron_small, **TINY_MODEL)
    weights = np.asarray(model._class_weights("balanced"))
    labels = baron_small.obs[LABELS].astype(str)
    counts = labels.value_counts().reindex(model._label_categories()).to_numpy()
    # every class present carries the same total weight, and the mean cell weight is 1
    np.testing.assert_allclose(weights * counts, np.full(counts.size, counts.sum() / counts.size))
    np.testing.assert_allclose((weights * counts).sum(), labels.size)
    chosen = model._class_weights({"T cell": 5.0, "mast cell": 0})
    assert chosen[list(model._label_categories()).index("T cell")] == 5.0
    assert sorted(set(chosen)) == [0.0, 1.0, 5.0]
    with pytest.raises(ValueError, match=r"not registered: \['neuron'\]"):
        model._class_weights({"neuron": 2.0})
    with pytest.raises(ValueError, match="non-negative"):
        model._class_weights({"T cell": -1.0})
    with pytest.raises(ValueError, match="'balanced', a mapping"):
        model._class_weights("inverse")


def test_class_weight_reaches_the_classification_loss(baron_small):
    SCFormer.setup_anndata(baron_small, labels_key=LABELS)
    model = SCFormer(baron_small, **TINY_MODEL)
    ignored = dict.fromkeys(model._label_categories(), 0.0)
    model.train(max_epochs=1, class_weight=ignored, **TINY_TRAIN)
    model.train(max_epochs=1, class_weight="balanced", **TINY_TRAIN)  # history accumulates
    ignored_loss, balanced_loss = model.history["classification_loss_train"].to_numpy(float).ravel()
    assert ignored_loss == 0.0 and balanced_loss > 0.0


def test_class_weight_needs_a_classification_head(baron_small):
    SCFormer.setup_anndata(baron_small)
    model = SCFormer(baron_small, **TINY_MODEL)
    with pytest.raises(ValueError, match="trains no classification head"):
        model.train(max_epochs=1, class_weight="balanced", **TINY_TRAIN)


def test_unlabelled_cells_train_everything_but_the_head(baron_small, tmp_path):
    hidden = (baron_small.obs["donor"] == "human4").to_numpy()
    labels = baron_small.obs[LABELS].astype(str)
    baron_small.obs[LABELS] = np.where(hidden, "Unknown", labels)
    SCFormer.setup_anndata(baron_small, labels_key=LABELS, unlabeled_category="Unknown")
    model = SCFormer(baron_small, **TINY_MODEL)
    categories = list(model._label_categories())
    unknown = categories.index("Unknown")
    weights = model._class_weights(None)
    assert weights[unknown] == 0.0 and sum(weights) == len(categories) - 1
    balanced = np.asarray(model._class_weights("balanced"))
    counts = labels[~hidden].value_counts()
    for label, count in counts.items():  # balanced over the labelled cells only
        weight = balanced[categories.index(label)]
        np.testing.assert_allclose(weight * count, (~hidden).sum() / counts.size)
    assert balanced[unknown] == 0.0
    with pytest.raises(ValueError, match=r"not registered: \['Unknown'\]"):
        model._class_weights({"Unknown": 1.0})
    model.train(max_epochs=1, **TINY_TRAIN)
    assert "Unknown" not in set(model.predict())
    soft = model.predict(soft=True)
    assert "Unknown" not in soft.columns and soft.shape[1] == len(categories) - 1
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-5)
    model.save(tmp_path / "m")
    loaded = SCFormer.load(tmp_path / "m", baron_small)
    pd.testing.assert_frame_equal(loaded.predict(soft=True), soft)


def test_unlabeled_category_needs_labels(baron_small):
    with pytest.raises(ValueError, match="no labels_key was given"):
        SCFormer.setup_anndata(baron_small, unlabeled_category="Unknown")
    SCFormer.setup_anndata(baron_small)
    pretrained = SCFormer(baron_small, **TINY_MODEL)
    with pytest.raises(ValueError, match="goes with labels_key"):
        SCFormer.load_query_data(baron_small, pretrained, unlabeled_category="Unknown")


def test_fine_tuning_with_unlabelled_query_cells(baron_small):
    """scANVI-style: the held-out donor's cells train with the others, without labels."""
    SCFormer.setup_anndata(baron_small, batch_key="donor")
    pretrained = SCFormer(baron_small, **TINY_MODEL)
    pretrained.train(max_epochs=1, **TINY_TRAIN)
    hidden = (baron_small.obs["donor"] == "human4").to_numpy()
    adata = baron_small.copy()
    adata.obs[LABELS] = np.where(hidden, "Unknown", adata.obs[LABELS].astype(str))
    tuned = SCFormer.load_query_data(
        adata, pretrained, freeze=False, labels_key=LABELS, unlabeled_category="Unknown"
    )
    assert tuned.registry_["setup_args"]["unlabeled_category"] == "Unknown"
    tuned.train(max_epochs=1, class_weight="balanced", **TINY_TRAIN)
    assert set(tuned.predict(indices=np.flatnonzero(hidden))) <= set(
        baron_small.obs[LABELS].astype(str)
    )


def _tuned_without_human4(baron_small) -> tuple[SCFormer, ad.AnnData]:
    """A pretrained model fine-tuned on three donors, and the fourth donor's cells."""
    SCFormer.setup_anndata(baron_small, batch_key="donor")
    pretrained = SCFormer(baron_small, **TINY_MODEL, domain_norm=True, batch_token=True)
    pretrained.train(max_epochs=1, **TINY_TRAIN)
    held_out = (baron_small.obs["donor"] == "human4").to_numpy()
    tuned = SCFormer.load_query_data(
        baron_small[~held_out].copy(), pretrained, freeze=False, labels_key=LABELS
    )
    tuned.train(max_epochs=2, **TINY_TRAIN)
    return tuned, baron_small[held_out].copy()


def test_training_leaves_exact_batch_statistics(baron_small):
    """After train(), each donor is standardised by its own cells under the final encoder."""
    SCFormer.setup_anndata(baron_small, batch_key="donor")
    models = {}
    for statistics in ("exact", "running"):
        scvi.settings.seed = 0
        models[statistics] = SCFormer(baron_small, **TINY_MODEL, domain_norm=True)
        models[statistics].train(max_epochs=2, batch_statistics=statistics, **TINY_TRAIN)
    exact, running = models["exact"].module.state_dict(), models["running"].module.state_dict()
    for name, weights in exact.items():  # same training: only the statistics differ
        if not name.startswith("cell_norm."):
            torch.testing.assert_close(weights, running[name], msg=name)
    donors = baron_small.obs["donor"].to_numpy()
    norm = models["exact"].module.cell_norm
    latent = {name: model.get_latent_representation() for name, model in models.items()}
    for code, donor in enumerate(baron_small.obs["donor"].cat.categories):
        cells = latent["exact"][donors == donor]
        np.testing.assert_allclose(cells.mean(axis=0), 0.0, atol=1e-4)
        variance = norm.running_var[code].numpy()
        expected = variance / (variance + norm.eps)
        np.testing.assert_allclose(cells.var(axis=0, ddof=1), expected, rtol=1e-3)
        # the momentum averages lag behind the encoder's last state
        assert np.abs(latent["running"][donors == donor].mean(axis=0)).max() > 0.05
    with pytest.raises(ValueError, match="batch_statistics must be 'exact' or 'running'"):
        models["exact"].train(max_epochs=1, batch_statistics="exakt", **TINY_TRAIN)


def test_update_batch_statistics_refits_a_held_out_donor(baron_small):
    """Fine-tuning without a donor leaves its statistics stale; re-estimating fixes them."""
    tuned, cells = _tuned_without_human4(baron_small)
    stale = tuned.get_latent_representation(cells)
    norm = tuned.module.cell_norm
    others = norm.running_mean[:3].clone()
    assert tuned.update_batch_statistics(cells, batch_size=7) == ["human4"]
    refitted = tuned.get_latent_representation(cells)
    # the held-out donor's embeddings are standardised by their own statistics now
    np.testing.assert_allclose(refitted.mean(axis=0), 0.0, atol=1e-4)
    variance = norm.running_var[3].numpy()
    expected = variance / (variance + norm.eps)
    np.testing.assert_allclose(refitted.var(axis=0, ddof=1), expected, rtol=1e-3)
    assert np.abs(stale.mean(axis=0)).max() > 0.05  # they were not before
    torch.testing.assert_close(norm.running_mean[:3], others)  # other donors untouched
    # exact statistics over all cells: independent of the minibatch size
    again = norm.running_mean[3].clone()
    tuned.update_batch_statistics(cells, batch_size=64)
    torch.testing.assert_close(norm.running_mean[3], again)


def test_update_batch_statistics_from_other_batches_ignores_the_cells(baron_small):
    """A donor given the other donors' mean statistics embeds its cells independently of
    which of its cells (which composition) were passed; its own statistics do not."""
    tuned, cells = _tuned_without_human4(baron_small)
    norm = tuned.module.cell_norm
    trained = norm.running_mean[:3].clone(), norm.running_var[:3].clone()
    ductal = (cells.obs[LABELS] == "pancreatic ductal cell").to_numpy()
    assert 2 <= ductal.sum() < len(cells)  # a subset of another composition
    subset = cells[ductal].copy()
    embeddings = {}
    for estimate_from in ("cells", "other_batches"):
        for name, data in (("all", cells), ("ductal", subset)):
            assert tuned.update_batch_statistics(data, estimate_from=estimate_from) == ["human4"]
            embeddings[estimate_from, name] = tuned.get_latent_representation(subset)
    torch.testing.assert_close(norm.running_mean[3], trained[0].mean(0))
    torch.testing.assert_close(norm.running_var[3], trained[1].mean(0))
    torch.testing.assert_close(norm.running_mean[:3], trained[0])  # training donors untouched
    np.testing.assert_array_equal(
        embeddings["other_batches", "all"], embeddings["other_batches", "ductal"]
    )
    shift = np.abs(embeddings["cells", "all"] - embeddings["cells", "ductal"]).max()
    assert shift > 0.1


def test_update_batch_statistics_refuses_what_it_cannot_update(baron_small, reference, query):
    SCFormer.setup_anndata(baron_small)
    plain = SCFormer(baron_small, **TINY_MODEL)
    plain.is_trained_ = True
    with pytest.raises(ValueError, match="domain_norm=True"):
        plain.update_batch_statistics()
    with (
        pytest.warns(UserWarning, match="not seen in training"),
        pytest.raises(ValueError, match="load_query_data"),
    ):
        reference.update_batch_statistics(query)
    with pytest.raises(ValueError, match="'cells' or 'other_batches'"):
        reference.update_batch_statistics(estimate_from="mean")
    with pytest.raises(ValueError, match="every batch"):
        reference.update_batch_statistics(estimate_from="other_batches")
