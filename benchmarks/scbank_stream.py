"""scBank streaming benchmark: one full shuffled pass, throughput and peak RSS.

For each bank size a bank is built, then a fresh Python process streams one epoch of
``iter_batches(128, shuffle=True, columns=["cell_type", "study_id"])`` and reports cells/s and
its peak resident memory, imports included, so sizes do not contaminate each other. Peak RSS is
the kernel's high-water mark ``VmHWM`` of the child (``getrusage``'s max RSS would carry over
the parent's RSS through fork+exec). The bank's files sit in the page cache, which is not part
of the process's RSS (the stream reads parquet into private buffers).

Run: ``python benchmarks/scbank_stream.py [--quick]`` -> ``benchmarks/results/scbank_stream.json``
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def _peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (Linux ``VmHWM``)."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def child(path: str) -> None:
    """Stream one epoch of the bank at ``path`` and print a JSON line of measurements."""
    from scbank import DataBank

    bank = DataBank.open(path)
    rss_open = _peak_rss_mb()
    start = time.perf_counter()
    cells = batches = 0
    for batch in bank.iter_batches(128, shuffle=True, seed=0, columns=["cell_type", "study_id"]):
        cells += batch["X"].shape[0]
        batches += 1
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()
    result = {"cells": cells, "batches": batches, "seconds": seconds, "peak_rss_mb": peak}
    print(json.dumps(result | {"rss_after_open_mb": rss_open}))


def measure(n_cells, args) -> dict:
    import scbank_common as common

    from scbank import DataBank

    with common.scratch(args.tmp) as tmp:
        bank = DataBank.create(tmp / "bank.scb")
        for sid, adata in common.studies(n_cells):
            bank.append_anndata(adata, sid)
        run = subprocess.run(
            [sys.executable, __file__, "--child", str(bank.path)],
            capture_output=True,
            text=True,
            check=True,
        )
        out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["cells"] == n_cells
    row = {"n_cells": n_cells, "cells_per_s": out["cells"] / out["seconds"], **out}
    print(
        f"{n_cells:>9} cells: {row['cells_per_s']:,.0f} cells/s, peak RSS "
        f"{row['peak_rss_mb']:.0f} MB (after open {row['rss_after_open_mb']:.0f} MB)"
    )
    return row


def main() -> None:
    import scbank_common as common

    # 2M cells too: flat memory should hold beyond the window of parts a shard keeps open
    args = common.parse_args(__doc__, (100_000, 300_000, 1_000_000, 2_000_000))
    common.write_results("scbank_stream", args, [measure(n, args) for n in args.sizes])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        main()
