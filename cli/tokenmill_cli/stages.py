"""The data-preparation stages: tokenize, sample, corrupt, pack, dedup.

Each command's options are made from its stage's options dataclass
(`config_options`), so flag, type, default and help are written there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import tokenmill
from tokenmill.stages.corrupt import CorruptOptions
from tokenmill.stages.dedup import DedupOptions, dedup_report_lines
from tokenmill.stages.pack import PackOptions
from tokenmill.stages.sample import SampleOptions
from tokenmill.stages.tokenize import TokenizeOptions
from tokenmill_cli.options import (
    config_options,
    corruption_options,
    report_run,
    run_options,
)


@click.command("tokenize")
@click.argument("source", type=click.Path(path_type=Path))
@config_options(TokenizeOptions)
@run_options
def tokenize_command(source: Path, run: dict[str, Any], **options: Any) -> None:
    """Tokenize the text column of SOURCE into a list<uint32> column.

    Tokenizers tokenmill's fast encoder implements exactly (byte-level BPE
    with the GPT-2, cl100k, Qwen 2 or o200k pattern; BERT's WordPiece) take
    it; any other goes to the `tokenizers` crate. The last line printed
    says which, and why.
    """
    report_run(tokenmill.tokenize(source, **options, **run))


@click.command("sample")
@click.argument("source", type=click.Path(path_type=Path))
@config_options(SampleOptions)
@run_options
def sample_command(source: Path, run: dict[str, Any], **options: Any) -> None:
    """Keep a deterministic random fraction of the rows of SOURCE."""
    report_run(tokenmill.sample(source, **options, **run))


@click.command("corrupt")
@click.argument("source", type=click.Path(path_type=Path))
@config_options(CorruptOptions)
@corruption_options
@run_options(output_required=False)
def corrupt_command(source: Path, run: dict[str, Any], **options: Any) -> None:
    """Corrupt the token rows of SOURCE into inputs and labels for one objective.

    Mode options left out keep their defaults (in brackets); an option of
    another mode is an error.
    """
    own = {name: options.pop(name) for name in CorruptOptions.names()}
    given = {name: value for name, value in options.items() if value not in (None, ())}
    if run["output"] is None:
        # Beside the input, never inside its folder: `DIR/` -> `DIR-MODE/`,
        # `DIR/a.parquet` -> `a-MODE/` next to DIR.
        source_path = source.resolve()
        folder = source_path if source_path.is_dir() else source_path.parent
        stem = source_path.name if source_path.is_dir() else source_path.stem
        run["output"] = folder.parent / f"{stem}-{own['mode']}"
    report_run(tokenmill.corrupt(source, **own, options=given, **run))


@click.command("pack")
@click.argument("source", type=click.Path(path_type=Path))
@config_options(PackOptions)
@run_options
def pack_command(source: Path, run: dict[str, Any], **options: Any) -> None:
    """Pack the token documents of SOURCE into rows of at most --seq-len tokens."""
    report_run(tokenmill.pack(source, **options, **run))


@click.command("dedup")
@click.argument("source", type=click.Path(path_type=Path))
@config_options(DedupOptions)
@run_options(global_stage="Output folder: the kept rows, clusters.parquet and the manifest.")
def dedup_command(source: Path, run: dict[str, Any], **options: Any) -> None:
    """Remove exact or near-duplicate documents across every shard of SOURCE."""
    report = tokenmill.dedup(source, **run, **options)
    for line in dedup_report_lines(report):
        click.echo(line, err=True)
    report_run(report.run)
