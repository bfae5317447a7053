"""The ``scformer`` command line: ``pretrain``, ``embed`` and ``finetune``.

Options come from a YAML config (``--config cfg.yaml``) and/or flags (``--trainer.devices 2``;
flags after ``--config`` override it), parsed and type-checked by jsonargparse. Every command
takes ``--help``; ``--print_config`` prints the resolved configuration and exits, and a run
writes it to ``<output_dir>/config.yaml``, which reproduces the run with ``--config``.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from ._commands import embed, finetune, pretrain
from ._config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    ObjectivesConfig,
    OptimizerConfig,
    TaskConfig,
    TrainerConfig,
)
from ._pretrained import model_from_pretrained

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "ObjectivesConfig",
    "OptimizerConfig",
    "TaskConfig",
    "TrainerConfig",
    "build_parser",
    "embed",
    "finetune",
    "main",
    "model_from_pretrained",
    "pretrain",
]

_PRETRAIN = """Pretrain a new scFormer by masked value prediction.

Reads AnnData files or a scBank (data), builds the model (model, objectives), and trains it
with AdamW + warm-up/cosine (optimizer) under Lightning (trainer: devices, nodes, strategy,
precision, accumulation, clipping, checkpoints, early stopping, loggers). Writes to
output_dir: config.yaml, checkpoints/last.ckpt (every epoch; --resume last continues from
it), logs/ (CSV, TensorBoard), model/ (SCFormer.load), history.csv and run.json."""

_EMBED = """Embed cells with a saved model: an .h5ad file (written back with obsm[obsm_key]) or a
scBank (written as an .h5ad of its obs, and/or into the bank as a dense table)."""

_FINETUNE = """Fine-tune a pretrained model for a task: integration (adversarial batch removal on
data.batch_key), annotation (a cell-type head on data.labels_key) or perturbation
(predict perturbed cells from controls). Writes the run like pretrain, plus init_report.csv
and the task's results (embeddings.h5ad or predictions.csv)."""


def _run_options(parser: ArgumentParser) -> None:
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML config file.")
    parser.add_argument("--output_dir", type=str, required=True, help="Directory of the run.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of everything random.")
    parser.add_argument(
        "--resume",
        type=str | None,
        default=None,
        help="Continue a run: 'last' (its last end-of-epoch checkpoint, exact), 'latest' (its "
        "newest checkpoint, possibly mid-epoch) or a checkpoint path.",
    )
    parser.add_argument(
        "--overwrite", type=bool, default=False, help="Replace an earlier run in output_dir."
    )


def _pretrain_parser() -> ArgumentParser:
    parser = ArgumentParser(description=_PRETRAIN)
    _run_options(parser)
    parser.add_argument("--data", type=DataConfig, default=DataConfig())
    parser.add_argument("--model", type=ModelConfig, default=ModelConfig())
    parser.add_argument("--objectives", type=ObjectivesConfig, default=ObjectivesConfig())
    parser.add_argument("--optimizer", type=OptimizerConfig, default=OptimizerConfig())
    parser.add_argument("--trainer", type=TrainerConfig, default=TrainerConfig())
    return parser


def _finetune_parser() -> ArgumentParser:
    parser = ArgumentParser(description=_FINETUNE)
    _run_options(parser)
    parser.add_argument(
        "--pretrained", type=str, required=True, help="Model directory to start from."
    )
    parser.add_argument("--task", type=TaskConfig, default=TaskConfig())
    parser.add_argument("--data", type=DataConfig, default=DataConfig())
    parser.add_argument("--optimizer", type=OptimizerConfig, default=OptimizerConfig(lr=1e-4))
    parser.add_argument("--trainer", type=TrainerConfig, default=TrainerConfig())
    return parser


def _embed_parser() -> ArgumentParser:
    parser = ArgumentParser(description=_EMBED)
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML config file.")
    parser.add_argument("--model", type=str, required=True, help="Model directory.")
    parser.add_argument("--input", type=str, required=True, help=".h5ad file or scBank.")
    parser.add_argument("--output", type=str | None, default=None, help=".h5ad to write.")
    parser.add_argument(
        "--bank_table", type=str | None, default=None, help="Bank input: dense table to write."
    )
    parser.add_argument("--obsm_key", type=str, default="X_scFormer", help="obsm key.")
    parser.add_argument("--batch_size", type=int, default=256, help="Cells per forward pass.")
    parser.add_argument("--accelerator", type=str, default="auto", help="cpu, gpu, auto.")
    parser.add_argument("--device", type=int | str, default="auto", help="Device index or auto.")
    return parser


@dataclass(frozen=True)
class _Command:
    build: Callable[[], ArgumentParser]
    run: Callable
    help: str
    writes_config: bool


COMMANDS = {
    "pretrain": _Command(_pretrain_parser, pretrain, "Pretrain a new model.", True),
    "embed": _Command(_embed_parser, embed, "Embed cells with a saved model.", False),
    "finetune": _Command(_finetune_parser, finetune, "Fine-tune a pretrained model.", True),
}


def build_parser() -> tuple[ArgumentParser, dict[str, ArgumentParser]]:
    """The ``scformer`` parser and its subcommand parsers (by name)."""
    parser = ArgumentParser(
        prog="scformer",
        description="scFormer: pretrain, fine-tune and embed single-cell transformer models.",
    )
    subcommands = parser.add_subcommands(required=True)
    parsers = {}
    for name, command in COMMANDS.items():
        parsers[name] = command.build()
        subcommands.add_subcommand(name, parsers[name], help=command.help)
    return parser, parsers


def parse(argv: Sequence[str] | None = None) -> tuple[str, Namespace, str]:
    """Parse a command line: the command, its instantiated options and the resolved YAML."""
    parser, parsers = build_parser()
    with warnings.catch_warnings():
        # jsonargparse imports every Callback subclass it can find for --help; scvi-tools'
        # optional JAX ones fail to import, which is noise here.
        warnings.filterwarnings("ignore", message=r"\s*Hit failing import")
        config = parser.parse_args(argv)
    name = config.subcommand
    options = config[name]
    # The command's own parser dumps a file that `scformer <name> --config` reads back; the
    # run-control flags are left out, so that the file describes the run, not how it started.
    recorded = options.clone()
    for key in ("resume", "overwrite"):
        if key in recorded:
            del recorded[key]
    resolved = parsers[name].dump(recorded, skip_none=False, skip_validation=True)
    instantiated = parsers[name].instantiate(options)
    return name, instantiated, resolved


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``scformer`` console script."""
    name, options, resolved = parse(argv)
    command = COMMANDS[name]
    kwargs = {k: v for k, v in vars(options).items() if k not in ("config", "__path__")}
    if command.writes_config:
        kwargs["config_yaml"] = resolved
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        command.run(**kwargs)
    except ConfigError as error:
        print(f"scformer {name}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
