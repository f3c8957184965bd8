"""The contrastive stages: pairs and negatives.

Each command's options are made from its stage's options dataclass
(`config_options`), so flag, type, default and help are written there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import tokenmill
from tokenmill.stages.negatives import NegativeOptions
from tokenmill.stages.pairs import PairsOptions
from tokenmill_cli.options import config_options, report_run, run_options


@click.command("pairs")
@click.argument("source", type=click.Path(path_type=Path))
@config_options(PairsOptions)
@run_options
def pairs_command(source: Path, run: dict[str, Any], **options: Any) -> None:
    """Make (query, positive) rows from the documents of SOURCE."""
    report_run(tokenmill.pairs(source, **options, **run))


@click.command("negatives")
@click.argument("source", type=click.Path(path_type=Path))
@config_options(NegativeOptions)
@run_options(global_stage="Output folder (created if missing); every shard mines one corpus.")
def negatives_command(source: Path, run: dict[str, Any], **options: Any) -> None:
    """Add random or hard negatives to the pair rows of SOURCE."""
    report_run(tokenmill.negatives(source, **run, **options))
