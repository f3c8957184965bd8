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
from tokenmill.objectives import (
    OBJECTIVES,
)
from tokenmill.tokenizer import load_tokenizer, save_tokenizer


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


TRAIN_OBJECTIVES = tuple(OBJECTIVES)


@click.command("train")
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--objective",
    type=click.Choice(TRAIN_OBJECTIVES),
    required=True,
    help="clm reads `pack` output; mlm/span/bart/prefix/ul2 read `corrupt` output of that "
    "mode; contrastive reads `pairs` or `negatives` output.",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Run folder.")
@click.option(
    "--size", type=click.Choice(["tiny", "small", "base"]), default="tiny", show_default=True
)
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--grad-accum",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Micro-batches per step.",
)
@click.option("--lr", type=float, default=3e-4, show_default=True, help="Peak learning rate.")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--weight-decay", type=float, default=0.1, show_default=True)
@click.option("--clip", type=float, default=1.0, show_default=True, help="Gradient norm clip.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1...")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--eval",
    "eval_data",
    type=click.Path(path_type=Path),
    help="Held-out data made like DATA (default: hold out --eval-fraction of DATA's rows).",
)
@click.option("--eval-fraction", type=float, default=0.05, show_default=True)
@click.option("--eval-batches", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=0), default=0, help="Steps; 0: at the end.")
@click.option("--log-every", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, help="0: at the end.")
@click.option("--resume", is_flag=True, help="Continue the checkpoint in the run folder exactly.")
@click.option("--overwrite", is_flag=True, help="Start again over an existing run folder.")
@click.option("--stop-at", type=click.IntRange(min=1), help="Stop (and checkpoint) at this step.")
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path),
    help="Vocabulary size, padding and bits per byte; `corrupt` output names its own.",
)
@click.option("--vocab-size", type=click.IntRange(min=1), help="Default: the tokenizer's.")
@click.option("--max-seq-len", type=click.IntRange(min=1), help="Default: the longest row.")
@click.option(
    "--document-mask/--no-document-mask",
    default=True,
    show_default=True,
    help="clm: keep the documents of a packed row apart.",
)
@click.option("--temperature", type=float, default=0.05, show_default=True, help="contrastive.")
@click.option("--symmetric", is_flag=True, help="contrastive: add the document-to-query loss.")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model.")
@click.option("--torch-threads", type=click.IntRange(min=1), help="torch's CPU threads.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write curves.png.")
def train_command(
    data: Path, output: Path, eval_data: Path | None, compile_model: bool, **options: Any
) -> None:
    """Train the model family of an objective on DATA, into the run folder -o.

    Writes metrics.jsonl, curves.png, summary.txt and checkpoint.pt; with
    WORLD_SIZE > 1 (torchrun) each rank trains on its own slice under DDP.
    """
    try:
        from tokenmill.train import TrainConfig, train
    except ImportError as err:
        raise click.ClickException(f"training needs PyTorch: pip install torch ({err})") from None

    threads = options.pop("torch_threads")
    tokenizer = options.pop("tokenizer")
    config = TrainConfig(
        data=str(data),
        output=str(output),
        eval_data=str(eval_data) if eval_data else None,
        tokenizer=str(tokenizer) if tokenizer else None,
        compile=compile_model,
        threads=threads,
        **options,
    )
    train(config, echo=click.echo)


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
