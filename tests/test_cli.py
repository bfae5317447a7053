"""The ``scformer`` command line: configs, errors, and pretrain -> embed -> finetune end to end."""

import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import scbank
from scformer_scvi import SCFormer
from scformer_scvi.cli import main, parse
from scformer_scvi.cli._trainer import is_rank_zero
from scformer_scvi.train import RecordSeenCells

TINY = {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_seq_len": 64}
TRAINER = {"accelerator": "cpu", "enable_progress_bar": False, "max_epochs": 2}


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine, two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def h5ad(baron_small, tmp_path) -> Path:
    path = tmp_path / "cells.h5ad"
    baron_small.write_h5ad(path)
    return path


def write_yaml(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_config_round_trip(h5ad, tmp_path):
    config = write_yaml(
        tmp_path / "in.yaml",
        {
            "data": {"h5ad": [str(h5ad)], "batch_key": "donor", "batch_size": 16},
            "model": {**TINY, "likelihood": "hurdle", "head_kwargs": {"positive": "lognormal"}},
            "optimizer": {"lr": 5e-4, "betas": [0.9, 0.95]},
            "trainer": {
                "precision": "bf16-mixed",
                "callbacks": [
                    {
                        "class_path": "scformer_scvi.train.RecordSeenCells",
                        "init_args": {"dirpath": str(tmp_path / "audit")},
                    }
                ],
            },
        },
    )
    argv = ["pretrain", "--config", config, "--output_dir", "out", "--trainer.devices", "2"]
    name, options, resolved = parse([*argv, "--resume", "last"])
    assert name == "pretrain"
    assert options.data.batch_size == 16 and options.data.train_size == 0.9  # given / default
    assert options.model.likelihood == "hurdle" and options.model.n_layers == 1
    assert options.optimizer.betas == (0.9, 0.95)
    assert options.trainer.devices == 2 and options.trainer.precision == "bf16-mixed"
    assert isinstance(options.trainer.callbacks[0], RecordSeenCells)
    assert options.resume == "last"

    recorded = yaml.safe_load(resolved)
    assert "resume" not in recorded and "overwrite" not in recorded  # run control, not config
    assert recorded["trainer"]["devices"] == 2 and recorded["model"]["head_kwargs"]
    again = write_yaml(tmp_path / "resolved.yaml", recorded)
    _, options_again, resolved_again = parse(["pretrain", "--config", again])
    assert resolved_again == resolved
    assert options_again.model == options.model and options_again.data == options.data


def test_bad_configs_are_refused_with_the_fix(h5ad, tmp_path, capsys):
    unknown = write_yaml(tmp_path / "u.yaml", {"data": {"h5ad": [str(h5ad)], "batchsize": 3}})
    with pytest.raises(SystemExit):
        main(["pretrain", "--config", unknown, "--output_dir", str(tmp_path / "o")])
    assert "data.batchsize" in capsys.readouterr().err

    missing = write_yaml(tmp_path / "m.yaml", {"data": {"h5ad": [str(tmp_path / "no.h5ad")]}})
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--config", missing, "--output_dir", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "no.h5ad does not exist" in capsys.readouterr().err

    both = write_yaml(tmp_path / "b.yaml", {"data": {"h5ad": [str(h5ad)], "bank": "x.scb"}})
    with pytest.raises(SystemExit):
        main(["pretrain", "--config", both, "--output_dir", str(tmp_path / "o")])
    assert "exactly one data source" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        main(["embed", "--model", str(tmp_path), "--input", str(h5ad), "--output", "x.h5ad"])
    assert "not a model directory" in capsys.readouterr().err


def test_pretrain_embed_and_finetune_end_to_end(baron_small, h5ad, tmp_path):
    config = write_yaml(
        tmp_path / "pretrain.yaml",
        {
            "data": {"h5ad": [str(h5ad)], "batch_key": "donor", "batch_size": 32},
            "model": {**TINY, "gene_init": "pca"},
            "trainer": {**TRAINER, "loggers": ["csv", "tensorboard"]},
        },
    )
    run = tmp_path / "run"
    main(["pretrain", "--config", config, "--output_dir", str(run)])
    for path in ("config.yaml", "checkpoints/last.ckpt", "model/model.safetensors", "run.json"):
        assert (run / path).is_file(), path
    assert list((run / "logs" / "tensorboard").rglob("events.out.tfevents.*"))
    metrics = pd.read_csv(next((run / "logs" / "csv").rglob("metrics.csv")))
    assert {"train_loss", "validation_loss", "lr-AdamW/pg1"} <= set(metrics.columns)
    history = pd.read_csv(run / "history.csv", index_col=0)
    assert len(history) == 2 and history["validation_loss"].notna().all()
    with pytest.raises(SystemExit):  # a second run does not silently mix into the first
        main(["pretrain", "--config", config, "--output_dir", str(run)])

    # embed an AnnData and a bank (written back as a dense table)
    model = SCFormer.load(run / "model")
    embed = ["embed", "--model", str(run / "model"), "--input"]
    main([*embed, str(h5ad), "--output", str(tmp_path / "embedded.h5ad")])
    embedded = ad.read_h5ad(tmp_path / "embedded.h5ad")
    expected = model.get_latent_representation(baron_small)
    np.testing.assert_allclose(embedded.obsm["X_scFormer"], expected, atol=1e-5)
    bank = scbank.DataBank.create(tmp_path / "cells.scb")
    cells = baron_small.copy()
    cells.obs["donor"] = cells.obs["donor"].astype(str)
    bank.append_anndata(cells, "baron")
    main([*embed, str(bank.path), "--bank_table", "scformer", "--output", str(tmp_path / "b.h5ad")])
    stored = scbank.DataBank.open(bank.path).obsm["scformer"][np.arange(cells.n_obs)]
    np.testing.assert_allclose(stored, expected, atol=1e-5)
    assert ad.read_h5ad(tmp_path / "b.h5ad").obsm["X_scFormer"].shape == expected.shape

    # fine-tune: a cell-type head, then perturbation prediction, from the pretrained model
    finetune = ["finetune", "--pretrained", str(run / "model")]
    data = {"h5ad": [str(h5ad)], "batch_key": "donor", "batch_size": 32, "train_size": 0.8}
    annotation = write_yaml(
        tmp_path / "annotation.yaml",
        {
            "task": {"name": "annotation"},
            "data": {**data, "labels_key": "cell_ontology_class"},
            "trainer": TRAINER,
        },
    )
    main([*finetune, "--config", annotation, "--output_dir", str(tmp_path / "annotation")])
    predictions = pd.read_csv(tmp_path / "annotation" / "predictions.csv", index_col=0)
    assert set(predictions["split"]) == {"train", "validation"}
    report = pd.read_csv(tmp_path / "annotation" / "init_report.csv")
    how = dict(zip(report["tensor"], report["initialisation"], strict=True))
    assert how["encoder.layers.0.attn.qkv.weight"] == "copied"
    assert how["classifier.0.weight"] == "fresh"
    tuned = SCFormer.load(tmp_path / "annotation" / "model")
    name = "encoder.layers.0.attn.qkv.weight"
    assert not torch.equal(tuned.module.state_dict()[name], model.module.state_dict()[name])
    assert tuned.predict(baron_small).shape == (baron_small.n_obs,)

    perturbed = baron_small.copy()
    genes = list(perturbed.var_names[:2])
    labels = ["control", genes[0], genes[1], "+".join(genes), "OFFPANEL"]
    perturbed.obs["perturbation"] = np.random.default_rng(0).choice(labels, perturbed.n_obs)
    perturbed.write_h5ad(tmp_path / "perturbed.h5ad")
    perturbation = write_yaml(
        tmp_path / "perturbation.yaml",
        {
            "task": {"name": "perturbation", "perturbation_key": "perturbation"},
            "data": {**data, "h5ad": [str(tmp_path / "perturbed.h5ad")]},
            "trainer": {**TRAINER, "max_epochs": 1},
        },
    )
    main([*finetune, "--config", perturbation, "--output_dir", str(tmp_path / "perturbation")])
    tuned = SCFormer.load(tmp_path / "perturbation" / "model")
    assert "OFFPANEL" in tuned.vocab_.genes  # an off-panel perturbed gene got a token
    predicted = tuned.predict_perturbation([genes[0], "OFFPANEL"], perturbed, n_cells=10)
    assert np.isfinite(np.asarray(predicted.X)).all()


def test_console_script_help():
    script = Path(sys.executable).parent / "scformer"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "scformer_scvi.cli"]
    result = subprocess.run(
        [*command, "finetune", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--task.name {integration,annotation,perturbation}" in result.stdout
    assert "--trainer.precision" in result.stdout and "--print_config" in result.stdout


@pytest.mark.parametrize(
    ("env", "writes"),
    [
        ({}, True),
        ({"LOCAL_RANK": "1", "SLURM_PROCID": "0"}, False),  # Lightning's child under SLURM
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),  # torchrun
        ({"RANK": "4", "LOCAL_RANK": "0"}, False),  # torchrun, second node
        ({"SLURM_PROCID": "5"}, False),  # srun task
    ],
)
def test_only_global_rank_zero_writes_outputs(monkeypatch, env, writes):
    for variable in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    assert is_rank_zero() is writes
