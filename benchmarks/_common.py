"""Helpers shared by the benchmark scripts: data location, machine description, JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"

# The scFormer model of the integration and transfer benchmarks, chosen by the integration
# tuning on Baron (benchmarks/integration.py, TUNING).
SCFORMER_MODEL = {
    "d_model": 128,
    "n_heads": 4,
    "n_layers": 2,
    "d_ff": 256,
    "max_seq_len": 256,
    "n_zero_genes": 64,
    "value_encoding": "count_classes",
    "mvc_weight": 3.0,
    "ecs_weight": 3.0,
    "batch_token": True,
    "domain_norm": True,
    "dar_weight": 0.0,
}
# Its training options besides epochs and precision: half of the genes the MVC objective
# predicts from the cell embedding are genes the cell does not express.
SCFORMER_TRAIN = {"batch_size": 64, "mvc_zero_fraction": 0.5}


def machine() -> dict:
    """Describe where the numbers were measured."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
