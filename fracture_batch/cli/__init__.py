"""Thin Click CLI: each command parses options and calls one library function.

Commands live in their own modules and import heavy packages (torch, train, export)
inside the command body so ``fracture-batch --help`` stays fast.
"""
from __future__ import annotations

import importlib
import logging

import click

from fracture_batch import __version__

# command name -> "module:attribute"; loaded lazily so one broken optional stage
# never stops the others from starting.
COMMANDS = {
    "synth": "fracture_batch.cli.synth_cmd:synth",
    "train": "fracture_batch.cli.train_cmd:train",
    "export": "fracture_batch.cli.export_cmd:export",
    "score": "fracture_batch.cli.score_cmd:score",
    "bench": "fracture_batch.cli.bench_cmd:bench",
    "info": "fracture_batch.cli.info_cmd:info",
    "demo": "fracture_batch.cli.demo_cmd:demo",
    "evaluate": "fracture_batch.cli.evaluate_cmd:evaluate",
    "report": "fracture_batch.cli.report_cmd:report",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fracture-batch")
@click.option("-v", "--verbose", count=True,
              help="Debug log output, including what third-party libraries print (kept out otherwise).")
def main(verbose: int) -> None:
    """Fracture classification for X-ray archives: synth, train, export, score, evaluate, report, bench."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # other libraries' info lines (onnxruntime, pydicom, ...) are chatter to a user
        for handler in logging.getLogger().handlers:
            handler.addFilter(_ours_or_warning)


_OURS = ("fracture_batch", "train", "export")


def _ours_or_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.split(".")[0] in _OURS
