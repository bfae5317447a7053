"""An interrupted run resumed from its last checkpoint ends with the uninterrupted weights."""

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from scformer_scvi.cli import (
    DataConfig,
    ModelConfig,
    ObjectivesConfig,
    OptimizerConfig,
    TrainerConfig,
    pretrain,
)
from tests.conftest import TINY_MODEL


class StopAfterEpochs(Callback):
    """Simulate an interruption: stop once ``epochs`` epochs have run."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine, two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(h5ad, output_dir, resume=None, callbacks=()):
    return pretrain(
        output_dir=str(output_dir),
        data=DataConfig(h5ad=[str(h5ad)], batch_key="donor", batch_size=32, train_size=0.8),
        model=ModelConfig(**TINY_MODEL, batch_token=True),
        objectives=ObjectivesConfig(mvc_zero_fraction=0.2),
        optimizer=OptimizerConfig(lr=3e-3, warmup_ratio=0.2),
        trainer=TrainerConfig(
            max_epochs=4, accelerator="cpu", enable_progress_bar=False, loggers=["csv"]
        ),
        seed=3,
        resume=resume,
        extra_callbacks=callbacks,
    )


def test_resumed_run_matches_the_uninterrupted_run(baron_small, tmp_path):
    h5ad = tmp_path / "cells.h5ad"
    baron_small.write_h5ad(h5ad)
    full = run(h5ad, tmp_path / "full")

    interrupted = run(h5ad, tmp_path / "resumed", callbacks=[StopAfterEpochs(2)])
    assert interrupted.trainer.current_epoch == 2
    checkpoint = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)  # nothing but tensors and plain values
    assert "scformer_resume_state" in state

    resumed = run(h5ad, tmp_path / "resumed", resume="last")
    assert resumed.trainer.current_epoch == 4
    assert resumed.trainer.global_step == full.trainer.global_step
    reference = full.module.state_dict()
    for name, value in resumed.module.state_dict().items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=1e-6, msg=name)
    # the weights moved after the interruption (the test is not vacuous)
    moved = [
        not torch.equal(interrupted_value, reference[name])
        for name, interrupted_value in interrupted.module.state_dict().items()
        if interrupted_value.is_floating_point()
    ]
    assert np.mean(moved) > 0.5
