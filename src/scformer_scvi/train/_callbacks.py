"""Lightning callbacks for long runs: exact resumption and an audit of what each rank trained on."""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import save_file

_CHECKPOINT_KEY = "scformer_resume_state"


class ResumeState(Callback):
    """Store in every checkpoint what Lightning leaves out, so that a resumed run is exact.

    Lightning checkpoints hold the weights, optimizer and learning-rate scheduler states, the
    loop counters (epoch, global step) and the callbacks' states, but not the random number
    generators, and a streamed dataset does not know which epoch it is in. This callback adds

    - the torch RNG state of every rank (CPU, and the current CUDA device's when CUDA is used),
      gathered to the checkpoint; random gene subsets, masking, dropout, the shuffling of
      minibatches and the seeds of dataloader workers all draw from it;
    - numpy's and Python's global RNG states (of rank 0, restored on every rank; scFormer's
      training does not draw from them, user code might);
    - the epoch counter of a streamed training dataset (a scBank), which sets its shuffle.

    Resuming from a checkpoint written at the end of an epoch (``last.ckpt``) then continues
    exactly like the uninterrupted run (tested). A checkpoint written within an epoch (every N
    steps) restores weights, optimizer, schedule and step count, but the interrupted epoch
    starts over on a fresh shuffle, so the data order differs from an uninterrupted run.
    Persistent dataloader workers (``persistent_workers=True``) keep RNG state of their own
    that is not saved.
    """

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Add RNG states (all ranks) and the stream epoch to ``checkpoint``."""
        torch_state = torch.get_rng_state().to(torch.int64)
        if trainer.world_size > 1:  # a collective: every rank dumps the checkpoint
            torch_state = trainer.strategy.all_gather(torch_state).cpu()
        else:
            torch_state = torch_state.unsqueeze(0)
        cuda_state = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda_state = torch.cuda.get_rng_state().to(torch.int64)
            if trainer.world_size > 1:
                cuda_state = trainer.strategy.all_gather(cuda_state.to(pl_module.device)).cpu()
            else:
                cuda_state = cuda_state.unsqueeze(0)
        name, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002
        version, python_state, gauss_next = random.getstate()
        # Plain tensors, lists and numbers only: the checkpoint loads with weights_only=True.
        checkpoint[_CHECKPOINT_KEY] = {
            "world_size": trainer.world_size,
            "torch": torch_state,
            "cuda": cuda_state,
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
            "python": [version, list(python_state), gauss_next],
            "stream_epoch": _stream_epoch(trainer),
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Restore this rank's RNG states and the stream epoch (before the first batch)."""
        state = checkpoint.get(_CHECKPOINT_KEY)
        if state is None:
            warnings.warn(
                "The checkpoint has no RNG state (written without ResumeState); the resumed "
                "run draws other random masks and minibatches than an uninterrupted one.",
                UserWarning,
                stacklevel=2,
            )
            return
        rank = trainer.global_rank
        if state["world_size"] != trainer.world_size:
            warnings.warn(
                f"The checkpoint was written by {state['world_size']} processes and is resumed "
                f"by {trainer.world_size}: cells are sharded differently, so the run does not "
                "continue exactly as it would have.",
                UserWarning,
                stacklevel=2,
            )
        row = rank if rank < state["torch"].shape[0] else 0
        torch.set_rng_state(state["torch"][row].to(torch.uint8))
        if state["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"][row].to(torch.uint8))
        name, keys, position, has_gauss, cached = state["numpy"]
        legacy = (name, keys.numpy().astype(np.uint32), position, has_gauss, cached)
        np.random.set_state(legacy)  # noqa: NPY002 (the global state other code may use)
        version, python_state, gauss_next = state["python"]
        random.setstate((version, tuple(python_state), gauss_next))
        dataset = _stream_dataset(trainer)
        if dataset is not None and state["stream_epoch"] is not None:
            dataset.epoch = state["stream_epoch"]


def _stream_dataset(trainer: pl.Trainer) -> Any:
    """The training dataset that counts its own epochs (a streamed bank), if any."""
    dataset = getattr(trainer.datamodule, "dataset", None)
    return dataset if isinstance(getattr(dataset, "epoch", None), int) else None


def _stream_epoch(trainer: pl.Trainer) -> int | None:
    dataset = _stream_dataset(trainer)
    return None if dataset is None else dataset.epoch


class AverageBuffers(Callback):
    """Average floating-point buffers (batch-norm running statistics) over ranks every epoch.

    Data-parallel training keeps parameters identical on every rank, but not buffers: DDP
    copies rank 0's buffers to the others before each forward pass, and then every rank
    updates its running statistics from its own minibatch. After each training epoch this
    callback replaces them with their mean over ranks, so ranks agree, and checkpoints and
    the final model hold statistics of every rank's cells rather than rank 0's alone. A
    no-op in a single process.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """All-reduce (mean) every floating-point buffer."""
        if trainer.world_size < 2:
            return
        for buffer in pl_module.buffers():
            if buffer.is_floating_point():
                buffer.copy_(trainer.strategy.reduce(buffer.detach().clone(), reduce_op="mean"))


class RecordSeenCells(Callback):
    """Write which cells each rank trained on, per epoch, and each rank's final weights.

    An audit of data-parallel training from a scBank (whose minibatches carry ``cell_id``):
    ``rank{r}_epoch{e}.npy`` holds the cell ids rank ``r`` trained on in epoch ``e``, in order,
    and ``rank{r}.safetensors`` the module's weights on that rank when training ends (data
    parallel ranks must agree).

    Parameters
    ----------
    dirpath
        Directory for the files (created).
    key
        Minibatch key holding the cell ids.
    save_weights
        Also write each rank's final weights.
    """

    def __init__(self, dirpath: str | Path, key: str = "cell_id", save_weights: bool = True):
        super().__init__()
        self.dirpath = Path(dirpath)
        self.key = key
        self.save_weights = save_weights
        self._ids: list[np.ndarray] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start a new list of cell ids."""
        self._ids = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Record the minibatch's cell ids."""
        if self.key not in batch:
            raise KeyError(
                f"Minibatches have no {self.key!r} key (keys: {sorted(batch)}). RecordSeenCells "
                "needs training from a scBank, whose minibatches carry cell ids."
            )
        self._ids.append(batch[self.key].detach().cpu().numpy().ravel())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write this rank's cell ids of the epoch."""
        self.dirpath.mkdir(parents=True, exist_ok=True)
        ids = np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.int64)
        name = f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.npy"
        np.save(self.dirpath / name, ids)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write this rank's final weights."""
        if not self.save_weights:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        module = getattr(pl_module, "module", pl_module)
        weights = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(weights, self.dirpath / f"rank{trainer.global_rank}.safetensors")
