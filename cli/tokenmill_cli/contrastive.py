"""The contrastive stages: pairs and negatives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import tokenmill
from tokenmill.stages.negatives import STRATEGIES as NEGATIVE_STRATEGIES
from tokenmill.stages.negatives import NegativeOptions
from tokenmill.stages.pairs import MODES as PAIR_MODES
from tokenmill_cli.options import (
    nulls_option,
    report_run,
    run_options,
)


@click.command("pairs")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--mode",
    type=click.Choice(PAIR_MODES),
    default="crop",
    show_default=True,
    help="crop: two random spans of a document (Contriever); ict: a sentence and the rest "
    "of its passage (ORQA); columns: existing query and positive columns.",
)
@click.option(
    "--min-ratio",
    type=float,
    default=0.1,
    show_default=True,
    help="Shortest crop, as a fraction of the document (words for text, tokens for tokens).",
)
@click.option("--max-ratio", type=float, default=0.5, show_default=True, help="Longest crop.")
@click.option(
    "--keep-probability",
    type=float,
    default=0.1,
    show_default=True,
    help="ICT: probability that the sentence stays in its context.",
)
@click.option(
    "--sentence-end-id",
    "sentence_end_ids",
    type=click.IntRange(min=0),
    multiple=True,
    help="ICT on token ids: an id that ends a sentence (repeatable).",
)
@click.option("--text-column", default="text", show_default=True)
@click.option("--token-column", default="input_ids", show_default=True)
@click.option("--query-column", default="query", show_default=True, help="columns mode.")
@click.option("--positive-column", default="positive", show_default=True, help="columns mode.")
@click.option(
    "--id-column",
    default="id",
    show_default=True,
    help="Document id column keying each row's draws ('' keys rows by position).",
)
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True)
@click.option("--epoch", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True)
@nulls_option
@run_options
def pairs_command(
    source: Path,
    mode: str,
    min_ratio: float,
    max_ratio: float,
    keep_probability: float,
    sentence_end_ids: tuple[int, ...],
    text_column: str,
    token_column: str,
    query_column: str,
    positive_column: str,
    id_column: str,
    seed: int,
    epoch: int,
    nulls: str,
    run: dict[str, Any],
) -> None:
    """Make (query, positive) rows from the documents of SOURCE."""
    report = tokenmill.pairs(
        source,
        mode=mode,
        min_ratio=min_ratio,
        max_ratio=max_ratio,
        keep_probability=keep_probability,
        sentence_end_ids=list(sentence_end_ids),
        text_column=text_column,
        token_column=token_column,
        query_column=query_column,
        positive_column=positive_column,
        id_column=id_column or None,
        seed=seed,
        epoch=epoch,
        nulls=nulls,
        **run,
    )
    report_run(report)


@click.command("negatives")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--strategy",
    type=click.Choice(NEGATIVE_STRATEGIES),
    default="bm25",
    show_default=True,
    help="random: any other positive; bm25: BM25-hard; embedding: cosine-hard over vectors.",
)
@click.option("--num-negatives", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--range-min",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="First rank (0 = best, the positive's copies not counted) a negative may come from.",
)
@click.option(
    "--range-max",
    type=click.IntRange(min=0),
    default=99,
    show_default=True,
    help="Last rank a negative may come from, inclusive.",
)
@click.option(
    "--margin",
    type=float,
    default=0.95,
    show_default=True,
    help="Drop candidates scoring above margin x the positive's score (likely false negatives).",
)
@click.option("--k1", type=float, default=1.5, show_default=True, help="BM25 k1.")
@click.option("--b", type=float, default=0.75, show_default=True, help="BM25 b.")
@click.option("--query-column", default="query", show_default=True)
@click.option("--positive-column", default="positive", show_default=True)
@click.option("--query-vector-column", default="query_embedding", show_default=True)
@click.option("--positive-vector-column", default="positive_embedding", show_default=True)
@click.option(
    "--id-column",
    default="id",
    show_default=True,
    help="Document id column keying each row's draws ('' keys rows by position).",
)
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True)
@click.option("--epoch", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True)
@nulls_option
@run_options(global_stage="Output folder (created if missing); every shard mines one corpus.")
def negatives_command(
    source: Path,
    strategy: str,
    num_negatives: int,
    range_min: int,
    range_max: int,
    margin: float,
    k1: float,
    b: float,
    query_column: str,
    positive_column: str,
    query_vector_column: str,
    positive_vector_column: str,
    id_column: str,
    seed: int,
    epoch: int,
    nulls: str,
    run: dict[str, Any],
) -> None:
    """Add random or hard negatives to the pair rows of SOURCE."""
    options = NegativeOptions(
        strategy=strategy,
        num_negatives=num_negatives,
        range_min=range_min,
        range_max=range_max,
        margin=margin,
        k1=k1,
        b=b,
        query_column=query_column,
        positive_column=positive_column,
        query_vector_column=query_vector_column,
        positive_vector_column=positive_vector_column,
        id_column=id_column or None,
        seed=seed,
        epoch=epoch,
        nulls=nulls,
    )
    report = tokenmill.negatives(source, run.pop("output"), options, **run)
    report_run(report)
