"""Adversarial batch removal (DAR)."""

import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from scformer_scvi import SCFormer
from scformer_scvi.module import SCFormerModule
from scformer_scvi.nn import grad_reverse
from tests.conftest import TINY_MODEL, TINY_TRAIN


def test_gradient_reversal_flips_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    (grad_reverse(x, 0.5) * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * torch.arange(3.0).expand(4, 3))


def test_discriminator_gradient_reaching_the_encoder_is_reversed():
    torch.manual_seed(0)
    module = SCFormerModule(
        n_tokens=30,
        pad_id=0,
        n_batch=2,
        d_model=16,
        n_heads=2,
        n_layers=1,
        gep_weight=0.0,
        mvc_weight=0.0,
        dar_weight=1.0,
    )
    tensors = {
        "gene_ids": torch.randint(3, 30, (8, 6)),
        "bins": torch.randint(0, 51, (8, 6)),
        "values": torch.rand(8, 6) * 5,
        "library_size": torch.full((8,), 100.0),
        "padding_mask": torch.zeros(8, 6, dtype=torch.bool),
        "mlm_mask": torch.zeros(8, 6, dtype=torch.bool),
        "batch": torch.tensor([0, 1] * 4).reshape(-1, 1),
    }

    module.eval()  # no dropout: the same forward pass every time

    def gradients(scale):
        module.zero_grad()
        inference, generative = module(tensors, compute_loss=False)
        module.loss(tensors, inference, generative, dar_scale=scale).loss.backward()
        encoder = module.encoder.layers[0].ffn[0].weight.grad.clone()
        return encoder, module.discriminator[0].weight.grad.clone()

    reversed_encoder, discriminator = gradients(1.0)
    # the same loss without reversal: scale -1 undoes the sign flip
    plain_encoder, plain_discriminator = gradients(-1.0)
    assert reversed_encoder.abs().sum() > 0
    torch.testing.assert_close(reversed_encoder, -plain_encoder)
    torch.testing.assert_close(discriminator, plain_discriminator)  # it learns to predict
    warmup_start, _ = gradients(0.0)
    assert warmup_start.abs().sum() == 0  # no push on the encoder before the warm-up


def test_dar_needs_batches(baron_small):
    SCFormer.setup_anndata(baron_small)
    with pytest.raises(ValueError, match="needs at least two batches: pass batch_key="):
        SCFormer(baron_small, dar_weight=1.0, **TINY_MODEL)


def batch_predictability(latent, batches):
    classifier = LogisticRegression(max_iter=2000)
    return cross_val_score(classifier, latent, batches, cv=4).mean()


def with_technical_batch(adata):
    """Split real cells into two batches; the second loses 100 genes and has 50 amplified.

    A batch effect that is purely technical (no biology differs between the batches), so any
    batch information left in the embedding is what batch removal should remove.
    """
    rng = np.random.default_rng(1)
    second = rng.random(adata.n_obs) < 0.5
    counts = adata.X.toarray()
    lost = rng.choice(adata.n_vars, 100, replace=False)
    amplified = rng.choice(np.setdiff1d(np.arange(adata.n_vars), lost), 50, replace=False)
    counts[np.ix_(second, lost)] = 0
    counts[np.ix_(second, amplified)] *= 4
    adata.X = sp.csr_matrix(counts)
    adata.obs["technical_batch"] = np.where(second, "B", "A")
    return adata[counts.sum(axis=1) > 0].copy()


def test_dar_makes_the_batch_harder_to_predict(baron_small):
    adata = with_technical_batch(baron_small)
    SCFormer.setup_anndata(adata, batch_key="technical_batch")
    scores = {}
    for dar_weight in (0.0, 1.0):
        scvi.settings.seed = 0
        model = SCFormer(adata, dar_weight=dar_weight, **TINY_MODEL)
        model.train(max_epochs=15, lr=3e-3, plan_kwargs={"dar_warmup_ratio": 0.2}, **TINY_TRAIN)
        scores[dar_weight] = batch_predictability(
            model.get_latent_representation(), adata.obs["technical_batch"]
        )
    assert "dar_loss_train" in model.history
    assert scores[0.0] > 0.7  # without DAR the embedding carries the batch
    assert scores[1.0] < scores[0.0] - 0.05, scores
