"""Training and inference throughput, training memory and FLOP efficiency of scFormer.

Two parts, measured on the scFormer torch module (embedding, transformer, GEP + MVC heads and
loss; one AdamW step per training minibatch), without data loading:

A. **Compute efficiency** at fixed lengths: sequence length 128 ... 2048 x width 128/256/512
   x fp32/bf16 autocast x SDPA/linear (Hydra) attention, every cell ``L`` tokens long and
   about 8192 tokens per minibatch. Reports cells/s (training, inference), the memory of a
   training step, and achieved FLOP/s as a share of the machine's matmul peak, measured by a matmul
   probe (``torch.mm``, n=2048, same dtype and threads) at the start and end of this run.
   Pruned on CPU: linear attention only at width 256; length 2048 only at width 256; width
   512 not at length 1024 with bf16 (see ``skipped`` in the results). Gradient
   checkpointing (fp32, SDPA, width 256) at lengths 1024 and 2048.
B. **Padding vs length bucketing** on real cell lengths: Baron human pancreas, 2000 highly
   variable genes (the panel of the training benchmarks), 640 cells, minibatches of 32, width
   256, ``max_seq_len`` 512. ``pad_max``: every minibatch padded to 512 tokens; ``random``:
   random minibatches padded to their longest cell (``length_bucketing=False``);
   ``bucketed``: :class:`~scformer_scvi.data.LengthBucketSampler` minibatches.

FLOPs are counted analytically: a forward pass costs 2 FLOPs per weight of every linear
layer applied per token (transformer blocks; for training also the GEP and MVC heads) times
the executed tokens (padding included), plus ``4 L^2 d`` per layer and sequence for SDPA's
two attention matmuls; training costs 3x the forward pass (4x with gradient checkpointing,
which runs the forward pass twice; the FLOP/s count only the 3x). Memory: the tensors
autograd saves for the backward pass (activations) and 16 bytes per parameter for weights,
gradients and AdamW moments, counted exactly (a process's resident set is useless here: the
allocator keeps freed memory).

torch runs with one thread by default: on this shared 2-core machine, two threads waited on
each other whenever another process held a core (a small training step took 0.95 s with two
threads and 7 ms with one). ``--threads 2`` measures both cores. Rates are per second of
CPU time of that thread (``time.process_time``), which leaves out the time other processes
held the core; wall-clock rates are recorded too (``*_wall``). The matmul probe is timed the
same way.

On a GPU (``--device cuda``, the default when one is visible) the same configurations run
unpruned, timed by wall clock after ``torch.cuda.synchronize()``, the probe runs on the GPU and
the results go to ``results/throughput_cuda.json``. On a CPU without native bfloat16
(AVX512-BF16 or AMX) the bf16 configurations are left out: PyTorch emulates bfloat16 there,
about a thousand times slower than fp32, which measures the emulation and not the model.

Run: ``.venv/bin/python benchmarks/throughput.py [--threads N] [--part A|B] [--device D]``;
writes ``results/throughput.json`` (``--quick``, a smoke run of width and length 128:
``results/throughput_quick.json``); ``--tables`` prints it as the markdown tables of
docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext
from functools import partial

import anndata as ad
import numpy as np
import scanpy as sc
import torch
from _common import RESULTS, SHARED_DATA, write_results
from torch import nn

from scformer_scvi.data import LengthBucketSampler
from scformer_scvi.module import SCFormerModule
from scformer_scvi.train import native_bf16

N_GENES = 20125  # Baron human: the vocabulary of a model over all genes
N_LAYERS = 2
TOKENS_PER_BATCH = 8192
LENGTHS = (128, 256, 512, 1024, 2048)
WIDTHS = (128, 256, 512)
ATTENTIONS = ("sdpa", "linear")
DEVICE = torch.device("cpu")  # set once by main()
PRECISIONS = ("fp32", "bf16")  # main() drops bf16 where it is only emulated
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def clock() -> float:
    """Seconds: CPU time of this thread on CPU; wall clock after the queued kernels on GPU."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


# ------------------------------------------------------------------------------ measurement
def matmul_probe(dtype: torch.dtype, n: int = 2048, repeats: int = 6) -> float:
    """Best ``torch.mm`` rate in GFLOP/s (per :func:`clock` second), ``n x n`` of ``dtype``."""
    a, b = (torch.randn(n, n, device=DEVICE).to(dtype) for _ in range(2))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        torch.mm(a, b)
        best = min(best, clock() - start)
    return 2 * n**3 / best / 1e9


def training_memory_mib(module: SCFormerModule, tensors: dict, precision: str) -> dict:
    """Memory a training step needs beyond the inputs, in MiB.

    ``activations``: the tensors autograd saves for the backward pass (the part that grows
    with cells x length, and what gradient checkpointing trades for compute), counted once per
    storage, weights excluded. ``states``: weights, gradients and the two AdamW moments
    (16 bytes per parameter in fp32). Deterministic, unlike the resident memory of a process
    whose allocator keeps freed memory.
    """
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    module.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast(precision):
        module(tensors)
    n_params = sum(p.numel() for p in module.parameters())
    return {
        "activations": round(sum(saved.values()) / 2**20, 1),
        "states": round(16 * n_params / 2**20, 1),
    }


def build(width: int, attention: str) -> SCFormerModule:
    torch.manual_seed(0)
    return SCFormerModule(
        n_tokens=N_GENES + 3,
        pad_id=0,
        d_model=width,
        n_heads=max(1, width // 64),
        n_layers=N_LAYERS,
        attention=attention,
    ).to(DEVICE)


def minibatch(lengths: np.ndarray, padded_to: int, rng: np.random.Generator) -> dict:
    """Synthetic tokens for cells of ``lengths`` tokens (``<cls>`` included), padded."""
    n = len(lengths)
    positions = np.arange(padded_to)
    real = positions[None, :] < lengths[:, None]
    genes = rng.integers(3, N_GENES + 3, size=(n, padded_to))
    genes[:, 0] = 1  # <cls>
    genes[~real] = 0
    values = np.where(real, rng.integers(1, 20, size=(n, padded_to)), 0).astype(np.float32)
    values[:, 0] = 0
    masked = real & (rng.random((n, padded_to)) < 0.4)
    masked[:, 0] = False
    tensors = {
        "gene_ids": torch.from_numpy(genes),
        "bins": torch.from_numpy(np.where(real, rng.integers(1, 51, (n, padded_to)), 0)),
        "values": torch.from_numpy(values),
        "library_size": torch.from_numpy(values.sum(1) + 1.0),
        "padding_mask": torch.from_numpy(~real),
        "mlm_mask": torch.from_numpy(masked),
        "batch": torch.zeros(n, 1, dtype=torch.long),
    }
    return {key: tensor.to(DEVICE) for key, tensor in tensors.items()}


def linear_weights(*modules: nn.Module) -> int:
    return sum(
        m.in_features * m.out_features
        for x in modules
        for m in x.modules()
        if isinstance(m, nn.Linear)
    )


def step_flops(module: SCFormerModule, shape: tuple[int, int], training: bool) -> float:
    """Analytic FLOPs of one step on a ``(cells, padded length)`` minibatch."""
    n, length = shape
    per_token = linear_weights(module.encoder)
    if training:  # heads applied per token: GEP MLP, MVC gene query and MLP
        per_token += linear_weights(module.gep_head, module.mvc_query, module.mvc_head)
    forward = 2 * per_token * n * length
    if module.encoder.layers[0].attn.attention == "sdpa":
        forward += 4 * length**2 * module.n_latent * n * len(module.encoder.layers)
    return 3 * forward if training else forward


def autocast(precision: str):
    if precision == "bf16":
        return torch.autocast(DEVICE.type, dtype=torch.bfloat16)
    return nullcontext()


def train_step(module: SCFormerModule, optimizer, tensors: dict, precision: str) -> None:
    """One optimizer step (forward, loss, backward, AdamW)."""
    with autocast(precision):
        _, _, loss = module(tensors)
    optimizer.zero_grad(set_to_none=True)
    loss.loss.backward()
    optimizer.step()


@torch.inference_mode()
def infer_step(module: SCFormerModule, tensors: dict, precision: str) -> None:
    """Cell embeddings of one minibatch."""
    with autocast(precision):
        module.inference(**module._get_inference_input(tensors))


def timed(function, batches: list, warmup: int = 1) -> np.ndarray:
    """:func:`clock` and wall-clock seconds of a pass over ``batches``, after ``warmup``."""
    for tensors in batches[:warmup]:
        function(tensors)
    cpu, wall = clock(), time.perf_counter()
    for tensors in batches:
        function(tensors)
    return np.array([clock() - cpu, time.perf_counter() - wall])


def measure(module: SCFormerModule, batches: list, precision: str) -> tuple[np.ndarray, ...]:
    """(CPU, wall) seconds of training steps, then of inference, over ``batches``."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    module.train()
    train = timed(partial(train_step, module, optimizer, precision=precision), batches)
    module.eval()
    infer = timed(partial(infer_step, module, precision=precision), batches)
    return train, infer


# ------------------------------------------------------------------------------ part A
def pruned(length: int, width: int, precision: str, attention: str) -> str | None:
    """Why a configuration is left out on a CPU (time), or None."""
    if attention == "linear" and width != 256:
        return "linear attention only at width 256"
    if length == 2048 and width != 256:
        return "length 2048 only at width 256"
    if length == 1024 and width == 512 and precision == "bf16":
        return "width 512 x length 1024 only in fp32 (time)"
    return None


def grid(prune: bool) -> tuple[list[tuple], list[dict]]:
    """Part A's configurations; ``prune`` drops the slowest ones (for a CPU)."""
    configs, skipped = [], []
    for length in LENGTHS:
        for width in WIDTHS:
            for precision in PRECISIONS:
                for attention in ATTENTIONS:
                    reason = pruned(length, width, precision, attention) if prune else None
                    if reason:
                        skipped.append(
                            {
                                "length": length,
                                "width": width,
                                "precision": precision,
                                "attention": attention,
                                "reason": reason,
                            }
                        )
                    else:
                        configs.append((length, width, precision, attention, False))
    configs += [(length, 256, "fp32", "sdpa", True) for length in (1024, 2048)]
    return configs, skipped


def part_a(quick: bool = False) -> dict:
    configs, skipped = grid(prune=DEVICE.type == "cpu")
    if quick:
        configs = [c for c in configs if c[0] == 128 and c[1] == 128]
    rng = np.random.default_rng(0)
    rows = []
    for length, width, precision, attention, checkpointing in configs:
        module = build(width, attention)
        module.encoder.gradient_checkpointing = checkpointing
        n_cells = max(1, TOKENS_PER_BATCH // length)
        batches = [minibatch(np.full(n_cells, length), length, rng) for _ in range(3)]
        (train_s, train_wall), (infer_s, infer_wall) = measure(module, batches, precision)
        memory = training_memory_mib(module, batches[0], precision)
        train_flops = 3 * step_flops(module, (n_cells, length), True)
        infer_flops = 3 * step_flops(module, (n_cells, length), False)
        row = {
            "length": length,
            "width": width,
            "precision": precision,
            "attention": attention,
            "gradient_checkpointing": checkpointing,
            "cells_per_batch": n_cells,
            "train_cells_per_s": round(3 * n_cells / train_s, 1),
            "infer_cells_per_s": round(3 * n_cells / infer_s, 1),
            "train_cells_per_s_wall": round(3 * n_cells / train_wall, 1),
            "infer_cells_per_s_wall": round(3 * n_cells / infer_wall, 1),
            "train_gflops": round(train_flops / train_s / 1e9, 1),
            "infer_gflops": round(infer_flops / infer_s / 1e9, 1),
            "train_activation_mib": memory["activations"],
            "train_state_mib": memory["states"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"runs": rows, "skipped": skipped}


# ------------------------------------------------------------------------------ part B
def baron_lengths(max_seq_len: int, n_cells: int) -> np.ndarray:
    """Token counts (``<cls>`` included) of real Baron cells over 2000 HVGs."""
    adata = ad.read_h5ad(SHARED_DATA / "baron2016_human_pancreas_came.h5ad")
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat_v3", subset=True)
    expressed = np.asarray((adata.X > 0).sum(axis=1)).ravel()
    expressed = expressed[expressed > 0]
    chosen = np.random.default_rng(0).choice(expressed, n_cells, replace=False)
    return np.minimum(chosen + 1, max_seq_len)


def add_fractions(rows: list[dict], peaks: dict[str, float]) -> None:
    """Achieved FLOP/s as a share of the matmul probe of the same dtype (and of fp32)."""
    for row in rows:
        for kind in ("train", "infer"):
            achieved = row[f"{kind}_gflops"]
            row[f"{kind}_fraction_of_peak"] = round(achieved / peaks[row["precision"]], 3)
        row["train_fraction_of_fp32_peak"] = round(row["train_gflops"] / peaks["fp32"], 3)


def part_b(max_seq_len: int = 512, n_cells: int = 640, batch_size: int = 32) -> dict:
    lengths = baron_lengths(max_seq_len, n_cells)
    torch.manual_seed(0)
    shuffled = np.array_split(np.random.default_rng(1).permutation(n_cells), n_cells // batch_size)
    orders = {
        "pad_max": shuffled,
        "random": shuffled,
        "bucketed": list(LengthBucketSampler(lengths, batch_size)),
    }
    rng = np.random.default_rng(0)
    real_tokens = int(lengths.sum())
    rows = []
    for precision in PRECISIONS:
        batches, train, infer = {}, {}, {}
        for mode, order in orders.items():
            batches[mode] = [
                minibatch(lengths[i], max_seq_len if mode == "pad_max" else lengths[i].max(), rng)
                for i in order
            ]
            module = build(256, "sdpa")
            optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
            train[mode] = partial(train_step, module, optimizer, precision=precision)
            infer[mode] = partial(infer_step, module, precision=precision)
            train[mode](batches[mode][0])  # warm-up
        # Interleaved, one minibatch of each mode in turn, so that load from other processes
        # on this shared machine falls on all modes alike.
        seconds = {mode: np.zeros(4) for mode in orders}
        for step in range(len(orders["random"])):
            for mode in orders:
                seconds[mode][:2] += timed(train[mode], [batches[mode][step]], warmup=0)
        for step in range(len(orders["random"])):
            for mode in orders:
                seconds[mode][2:] += timed(infer[mode], [batches[mode][step]], warmup=0)
        for mode in orders:
            executed = sum(b["gene_ids"].numel() for b in batches[mode])
            train_cpu, train_wall, infer_cpu, infer_wall = seconds[mode]
            row = {
                "precision": precision,
                "mode": mode,
                "executed_over_real_tokens": round(executed / real_tokens, 2),
                "train_cells_per_s": round(n_cells / train_cpu, 1),
                "infer_cells_per_s": round(n_cells / infer_cpu, 1),
                "train_cells_per_s_wall": round(n_cells / train_wall, 1),
                "infer_cells_per_s_wall": round(n_cells / infer_wall, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    speedups = {}
    for precision in PRECISIONS:
        by_mode = {r["mode"]: r for r in rows if r["precision"] == precision}
        for kind in ("train", "infer"):
            bucketed = by_mode["bucketed"][f"{kind}_cells_per_s"]
            for baseline in ("random", "pad_max"):
                key = f"{precision}_{kind}_bucketed_over_{baseline}"
                speedups[key] = round(bucketed / by_mode[baseline][f"{kind}_cells_per_s"], 2)
    return {
        "config": {
            "cells": "Baron human, 2000 HVGs, random 640 cells",
            "max_seq_len": max_seq_len,
            "batch_size": batch_size,
            "width": 256,
            "n_layers": N_LAYERS,
            "lengths_percentiles_10_50_90_max": np.percentile(lengths, [10, 50, 90, 100]).tolist(),
        },
        "runs": rows,
        "speedups": speedups,
    }


def tables(payload: dict) -> str:
    """Markdown tables of the results (for docs/scale.md)."""
    env = payload["environment"]
    peaks = {
        k: max(env["matmul_probe_gflops_start"][k], env["matmul_probe_gflops_end"][k])
        for k in env["matmul_probe_gflops_start"]
    }
    probes = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
    lines = [
        f"Matmul probe (threads: {env['threads']}): {probes}.",
        "",
        "| length | width | precision | attention | train cells/s | infer cells/s "
        "| train GFLOP/s | share of matmul peak (same dtype / fp32) | activations MiB |",
        "|---:|---:|---|---|---:|---:|---:|---|---:|",
    ]
    for r in payload["compute"]["runs"]:
        attention = r["attention"] + (" + checkpointing" if r["gradient_checkpointing"] else "")
        lines.append(
            f"| {r['length']} | {r['width']} | {r['precision']} | {attention} "
            f"| {r['train_cells_per_s']} | {r['infer_cells_per_s']} | {r['train_gflops']} "
            f"| {r['train_fraction_of_peak']:.2f} / {r['train_fraction_of_fp32_peak']:.2f} "
            f"| {r['train_activation_mib']:.0f} |"
        )
    if "bucketing" not in payload:  # a --quick run
        return "\n".join(lines)
    lines += [
        "",
        "| precision | minibatches | executed / real tokens | train cells/s | infer cells/s |",
        "|---|---|---:|---:|---:|",
    ]
    for r in payload["bucketing"]["runs"]:
        lines.append(
            f"| {r['precision']} | {r['mode']} | {r['executed_over_real_tokens']} "
            f"| {r['train_cells_per_s']} | {r['infer_cells_per_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--part", choices=["A", "B"], default=None)
    parser.add_argument("--quick", action="store_true", help="smoke test: one small config")
    parser.add_argument("--tables", action="store_true", help="print the saved results")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    global DEVICE, PRECISIONS
    DEVICE = torch.device(args.device)
    name = "throughput" if DEVICE.type == "cpu" else f"throughput_{DEVICE.type}"
    name += "_quick" if args.quick else ""
    if args.tables:
        print(tables(json.loads((RESULTS / f"{name}.json").read_text())))
        return
    if DEVICE.type == "cpu" and not native_bf16("cpu"):
        PRECISIONS = ("fp32",)
        print("no native bfloat16 on this CPU: bf16 configurations left out", flush=True)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    probes_start = {p: matmul_probe(DTYPES[p]) for p in PRECISIONS}
    print("matmul probe GFLOP/s:", probes_start, flush=True)
    payload: dict = {}
    path = RESULTS / f"{name}.json"
    if args.part is not None and path.exists():
        payload = {k: v for k, v in json.loads(path.read_text()).items() if k != "machine"}
    if args.part in (None, "A"):
        payload["compute"] = part_a(args.quick)
    if args.part in (None, "B") and not args.quick:
        payload["bucketing"] = part_b()
    probes_end = {p: matmul_probe(DTYPES[p]) for p in PRECISIONS}
    # The machine is shared: the better of the two probes is its peak for this run.
    peaks = {k: max(probes_start[k], probes_end[k]) for k in probes_start}
    if "compute" in payload:
        add_fractions(payload["compute"]["runs"], peaks)
    payload["environment"] = {
        "threads": args.threads,
        "precisions": list(PRECISIONS),
        "device": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu",
        "load_average_1min_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "matmul_probe_gflops_start": {k: round(v, 1) for k, v in probes_start.items()},
        "matmul_probe_gflops_end": {k: round(v, 1) for k, v in probes_end.items()},
        "model": {"n_layers": N_LAYERS, "head_dim": 64, "d_ff": "4 x width", "vocabulary": N_GENES},
    }
    write_results(name, payload)


if __name__ == "__main__":
    main()
