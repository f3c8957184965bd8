"""Tools around the stages: bench, tokenizer train, inspect, train, demo."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

import tokenmill
from tokenmill.bench import SUITES, format_table, run_bench
from tokenmill.demo import DEMO_TRAIN_STEPS, run_demo
from tokenmill.inspection import describe, format_summary
from tokenmill.tokenizer import load_tokenizer, save_tokenizer
from tokenmill.train.config import TrainConfig
from tokenmill_cli.options import config_options


@click.command("bench")
@click.option(
    "--corpus",
    type=click.Path(path_type=Path),
    default=None,
    help="A text dataset to measure on (default: the demo corpus, built on the fly).",
)
@click.option(
    "--suite",
    "suites",
    multiple=True,
    type=click.Choice(SUITES),
    help="Run only these suites (repeatable; default: all).",
)
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("bench-out"),
    show_default=True,
    help="Where bench.json, bench.md and bench.png go.",
)
@click.option("--png/--no-png", default=True, show_default=True, help="Save a chart.")
def bench_command(
    corpus: Path | None, suites: tuple[str, ...], repeat: int, output: Path, png: bool
) -> None:
    """Measure throughput of each stage beside the tools it replaces."""
    results = run_bench(corpus, suites=suites or SUITES, repeat=repeat, output=output, png=png)
    click.echo(format_table(results))
    click.echo(f"saved to {output}", err=True)


@click.group("tokenizer")
def tokenizer_group() -> None:
    """Train tokenizers."""


@tokenizer_group.command("train")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write tokenizer.json.",
)
@click.option("--vocab-size", type=click.IntRange(min=1), required=True)
@click.option(
    "--min-frequency",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Merge only pairs seen at least this often.",
)
@click.option("--text-column", default="text", show_default=True)
@click.option("--progress/--no-progress", default=None)
def tokenizer_train_command(
    source: Path,
    output: Path,
    vocab_size: int,
    min_frequency: int,
    text_column: str,
    progress: bool | None,
) -> None:
    """Train a byte-level BPE with tokenmill's special tokens on SOURCE."""
    tokenizer = tokenmill.train_tokenizer(
        source,
        vocab_size,
        text_column=text_column,
        min_frequency=min_frequency,
        progress=progress,
    )
    save_tokenizer(tokenizer, output)
    click.echo(f"{output}: byte-level BPE, {tokenizer.vocab_size:,} tokens", err=True)


@click.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path),
    default=None,
    help="Decode token columns with this tokenizer.json.",
)
@click.option(
    "--rows",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="How many rows to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_command(path: Path, tokenizer: Path | None, rows: int, as_json: bool) -> None:
    """Show the schema, counts and first rows of a dataset or shard."""
    loaded = load_tokenizer(tokenizer) if tokenizer else None
    summary = describe(path, tokenizer=loaded, examples=rows)
    if as_json:
        click.echo(json.dumps(asdict(summary), indent=2))
    else:
        click.echo(format_summary(summary))


@click.command("train")
@click.argument("data", type=click.Path(path_type=Path))
@config_options(TrainConfig, skip=("data",))
def train_command(data: Path, **options: Any) -> None:
    """Train the model family of an objective on DATA, into the run folder -o.

    Writes metrics.jsonl, curves.png, summary.txt and checkpoint.pt; with
    WORLD_SIZE > 1 (torchrun) each rank trains on its own slice under DDP.
    """
    try:
        from tokenmill.train import train
    except ImportError as err:
        raise click.ClickException(f"training needs PyTorch: pip install torch ({err})") from None

    paths = {name: str(value) for name, value in options.items() if isinstance(value, Path)}
    train(TrainConfig(data=str(data), **{**options, **paths}), echo=click.echo)


@click.command("demo")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=Path("demo-out"), show_default=True
)
@click.option("--vocab-size", type=click.IntRange(min=1), default=8192, show_default=True)
@click.option("--progress/--no-progress", default=None)
@click.option(
    "--train-steps",
    type=click.IntRange(min=0),
    default=DEMO_TRAIN_STEPS,
    show_default=True,
    help="Steps to train each model family on the CPU (needs PyTorch); 0: skip training.",
)
def demo_command(output: Path, vocab_size: int, progress: bool | None, train_steps: int) -> None:
    """Build a corpus from the Python installation and run every stage on it."""
    run_demo(
        output, vocab_size=vocab_size, progress=progress, echo=click.echo, train_steps=train_steps
    )
