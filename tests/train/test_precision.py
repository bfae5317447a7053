"""Precision choice: "auto" takes bfloat16 only where it is native; emulated bfloat16 warns."""

import warnings

import pytest
import torch

from scformer_scvi import SCFormer
from scformer_scvi.train import native_bf16, resolve_precision, with_trainer_defaults
from tests.conftest import TINY_MODEL, TINY_TRAIN


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Pretend a CPU-only machine with or without native bfloat16."""

    def set_native(native: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)

    return set_native


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_cpu(cpu_bf16, native):
    cpu_bf16(native)
    assert native_bf16() is native and native_bf16("cpu") is native
    assert resolve_precision("auto") == ("bf16-mixed" if native else "32")
    assert resolve_precision("auto", accelerator="cpu") == ("bf16-mixed" if native else "32")


def test_emulated_bf16_warns_and_is_kept(cpu_bf16):
    cpu_bf16(False)
    with pytest.warns(UserWarning, match="no native bfloat16.*precision='auto'"):
        assert resolve_precision("bf16-mixed", accelerator="cpu") == "bf16-mixed"


def test_native_or_other_precisions_do_not_warn(cpu_bf16):
    cpu_bf16(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16-mixed") == "bf16-mixed"
    cpu_bf16(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("32") == "32" and resolve_precision(32) == 32
        assert resolve_precision(None) is None


def test_train_resolves_auto(baron_small, cpu_bf16):
    cpu_bf16(False)
    SCFormer.setup_anndata(baron_small)
    model = SCFormer(baron_small, **TINY_MODEL)
    model.train(max_epochs=1, precision="auto", **TINY_TRAIN)
    assert model.trainer.precision == "32-true"


def test_trainer_defaults_clip_and_resolve_without_touching_the_caller(cpu_bf16):
    cpu_bf16(False)
    given = {"precision": "auto", "max_steps": 3}
    resolved = with_trainer_defaults(given, "cpu")
    assert resolved == {"gradient_clip_val": 1.0, "precision": "32", "max_steps": 3}
    assert given == {"precision": "auto", "max_steps": 3}
    assert with_trainer_defaults({"gradient_clip_val": None}, "cpu") == {"gradient_clip_val": None}
