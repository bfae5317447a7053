"""The ``scbank`` command line: create, append, remove, ls, info, verify, export, vacuum."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd

from ._bank import DataBank
from ._errors import ScBankError

_EPILOG = """examples:
  scbank create atlas.scb
  scbank append atlas.scb pbmc_10k.h5ad --study pbmc10k --layers counts
  scbank ls atlas.scb
  scbank verify atlas.scb
  scbank export atlas.scb pbmc10k.h5ad --study pbmc10k
"""


def _names(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scbank",
        description="Manage an scBank: an append-only on-disk store of single-cell studies.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help: str, generation: bool = False) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("bank", help="bank directory (e.g. atlas.scb)")
        if generation:
            c.add_argument("--generation", type=int, help="read this earlier generation")
        return c

    c = cmd("create", "create an empty bank")
    c.add_argument("--row-group-size", type=int, default=128, help="cells per row group")
    c.add_argument("--part-size", type=int, default=65536, help="cells per part file")
    c.add_argument(
        "--no-random-access",
        action="store_true",
        help="skip the Arrow IPC twins (less disk, slow random row reads)",
    )
    c = cmd("append", "append a study from an .h5ad file (streamed in chunks)")
    c.add_argument("h5ad", help="input .h5ad file (X as CSR or dense counts)")
    c.add_argument("--study", required=True, help="new study id (letters, digits, _ - .)")
    c.add_argument("--layers", type=_names, help="comma-separated layers to store (default all)")
    c.add_argument("--obsm", type=_names, help="comma-separated obsm keys (default all numeric)")
    c.add_argument("--chunk-size", type=int, default=8192, help="cells per read chunk")
    c.add_argument("--cell-type-key", help="obs column with cell types, for the study table")
    c = cmd("remove", "remove a study from the next generation")
    c.add_argument("study", help="study id")
    cmd("ls", "list the studies", generation=True)
    cmd("info", "show size, tables and history", generation=True)
    cmd("verify", "check every file's size, MD5, schema and row count", generation=True)
    c = cmd("export", "write the bank (or one study) to an .h5ad file", generation=True)
    c.add_argument("out", help="output .h5ad path")
    c.add_argument("--study", help="export only this study, in its own genes")
    cmd("vacuum", "delete files that only earlier generations use")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 verify found problems, 2 error)."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ScBankError, KeyError, ValueError, OSError) as e:
        print(f"scbank: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "create":
        bank = DataBank.create(
            args.bank,
            row_group_size=args.row_group_size,
            part_size=args.part_size,
            random_access=not args.no_random_access,
        )
        print(f"created {bank.path} (generation {bank.generation})")
        return 0
    if args.command in ("append", "remove", "vacuum"):
        bank = DataBank.open(args.bank, mode="a")
        if args.command == "append":
            bank.append_anndata(
                args.h5ad,
                args.study,
                layers=args.layers,
                obsm=args.obsm,
                chunk_size=args.chunk_size,
                cell_type_key=args.cell_type_key,
            )
            print(f"appended {args.study}: {bank.n_obs} cells in the bank (gen {bank.generation})")
        elif args.command == "remove":
            bank.remove_study(args.study)
            print(f"removed {args.study} (generation {bank.generation})")
        else:
            removed = bank.vacuum()
            print(f"removed {len(removed)} unused file(s)")
        return 0
    bank = DataBank.open(args.bank, generation=args.generation)
    if args.command == "ls":
        with pd.option_context("display.width", 200, "display.max_colwidth", 40):
            print(bank.studies[["n_cells", "n_genes", "cell_id_start", "layers", "obsm"]])
        return 0
    if args.command == "info":
        print(bank)
        print(f"    layout: {bank.layout}")
        print(f"history:\n{bank.history}")
        return 0
    if args.command == "verify":
        report = bank.verify(raise_on_error=False)
        print(report)
        return 0 if report.ok else 1
    view = bank.study(args.study) if args.study else bank[:]
    view.to_memory().write_h5ad(args.out)
    print(f"wrote {args.out}: {view.shape[0]} cells x {view.shape[1]} genes")
    return 0
