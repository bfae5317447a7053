"""Helpers shared by the benchmark scripts: data location, machine description, JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
from pathlib import Path

import torch

from scformer_scvi import demo

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
# The integration and transfer benchmarks train the demo's scFormer, whose configuration the
# integration tuning on Baron chose (benchmarks/integration.py, TUNING); the integration
# benchmark trains it longer, with adversarial batch removal (its SCFORMER).
SCFORMER_MODEL = demo.MODEL
SCFORMER_TRAIN = demo.TRAIN


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


def earlier_results(name: str, key: str, value: dict) -> dict | None:
    """The results file ``name`` if it was written with ``payload[key] == value``, else ``None``.

    Lets a benchmark run some seeds and keep the other seeds' results of the same settings.
    """
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    earlier = json.loads(path.read_text())
    return earlier if earlier.get(key) == json.loads(json.dumps(value)) else None
