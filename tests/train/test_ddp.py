"""Two CPU processes (DDP, gloo) train from a scBank: disjoint cells per rank, identical weights."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.numpy import load_file

import scbank
from scformer_scvi.cli._trainer import weights_from_checkpoint

BATCH_SIZE = 16
EPOCHS = 2


def make_bank(adata, path, donors):
    bank = scbank.DataBank.create(path)
    for donor in donors:
        part = adata[(adata.obs["donor"] == donor).to_numpy()].copy()
        part.obs["donor"] = part.obs["donor"].astype(str)
        bank.append_anndata(part, donor)
    return scbank.DataBank.open(path)


@pytest.mark.slow
def test_ddp_ranks_read_disjoint_cells_and_end_with_identical_weights(baron_small, tmp_path):
    donors = sorted(baron_small.obs["donor"].astype(str).unique())
    bank = make_bank(baron_small, tmp_path / "train.scb", donors)
    make_bank(baron_small, tmp_path / "validation.scb", donors[:2])
    audit = tmp_path / "audit"
    config = {
        "data": {
            "bank": str(bank.path),
            "validation_bank": str(tmp_path / "validation.scb"),
            "batch_key": "donor",
            "batch_size": BATCH_SIZE,
        },
        "model": {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_seq_len": 64},
        "trainer": {
            "max_epochs": EPOCHS,
            "accelerator": "cpu",
            "devices": 2,
            "strategy": "ddp",
            "enable_progress_bar": False,
            "callbacks": [
                {
                    "class_path": "scformer_scvi.train.RecordSeenCells",
                    "init_args": {"dirpath": str(audit)},
                }
            ],
        },
    }
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(config))
    # A subprocess keeps this pytest process free of process groups; Lightning starts rank 1.
    command = [sys.executable, "-m", "scformer_scvi.cli", "pretrain", "--config", "ddp.yaml"]
    result = subprocess.run(
        [*command, "--output_dir", "run"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    all_cells = set(bank.obs["cell_id"].to_numpy().tolist())
    per_rank = bank.n_obs // 2
    orders = []
    for epoch in range(EPOCHS):
        seen = [np.load(audit / f"rank{rank}_epoch{epoch}.npy") for rank in (0, 1)]
        assert len(seen[0]) == len(seen[1])  # equal steps per rank
        for ids in seen:
            assert len(np.unique(ids)) == len(ids)  # no cell twice on a rank
            assert len(ids) % BATCH_SIZE == 0 and per_rank - len(ids) < BATCH_SIZE
        assert not set(seen[0]) & set(seen[1])  # ranks read disjoint cells
        union = set(seen[0]) | set(seen[1])
        assert union <= all_cells and len(all_cells - union) < 2 * BATCH_SIZE
        orders.append(np.concatenate(seen))
    assert not np.array_equal(orders[0], orders[1])  # every epoch reshuffles

    weights = [load_file(audit / f"rank{rank}.safetensors") for rank in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        np.testing.assert_array_equal(weights[1][name], value, err_msg=name)

    run = tmp_path / "run"
    history = pd.read_csv(run / "history.csv", index_col=0)
    assert len(history) == EPOCHS and {"train_loss", "validation_loss"} <= set(history)
    # the checkpoint holds the final weights (how a sharded FSDP run writes its model)
    saved = load_file(run / "model" / "model.safetensors")
    from_checkpoint = weights_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert saved.keys() == from_checkpoint.keys()
    for name, value in saved.items():
        np.testing.assert_array_equal(from_checkpoint[name].numpy(), value, err_msg=name)
