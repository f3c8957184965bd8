"""`tokenmill ...`: each command parses options and calls one library function."""

from __future__ import annotations

import functools
import json
import types
import typing
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, overload

import click

import tokenmill
from tokenmill._threads import MAX_THREADS
from tokenmill.bench import SUITES, format_table, run_bench
from tokenmill.demo import DEMO_TRAIN_STEPS, run_demo
from tokenmill.inspection import describe, format_summary
from tokenmill.objectives import (
    CORRUPT_MODES,
    OBJECTIVES,
    corrupt_options,
    flag_of,
    shown_default,
)
from tokenmill.runner import DEFAULT_BATCH_ROWS, FORMATS, RunReport
from tokenmill.stages._common import NULLS
from tokenmill.stages.dedup import METHODS, DedupOptions, dedup_report_lines
from tokenmill.stages.negatives import STRATEGIES as NEGATIVE_STRATEGIES
from tokenmill.stages.negatives import NegativeOptions
from tokenmill.stages.pack import STRATEGIES
from tokenmill.stages.pairs import MODES as PAIR_MODES
from tokenmill.tokenizer import load_tokenizer, save_tokenizer


class TokenmillGroup(click.Group):
    """Turns tokenmill's own errors into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except tokenmill.TokenmillError as err:
            raise click.ClickException(f"{type(err).__name__}: {err}") from None
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            raise click.ClickException(
                f"{type(err).__name__}: {where}{err.strerror or err}"
            ) from None


RUN_OPTION_NAMES = ("output", "overwrite", "fmt", "batch_size", "shards", "progress")


Command = Callable[..., Any]


def nulls_option(command: Command) -> Command:
    """`--nulls error|skip`, the same on every stage that reads text or tokens."""
    return click.option(
        "--nulls",
        type=click.Choice(NULLS),
        default="error",
        show_default=True,
        help="A row whose text or tokens are null: stop with an error naming it, or skip "
        "it (counted as rows_null).",
    )(command)


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """The click type of an option's annotation, and whether it repeats."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _click_type(args[0])
    if typing.get_origin(annotation) is tuple:
        return args[0], True
    return annotation, False


def corruption_options(command: Command) -> Command:
    """One option per corruption option of every mode, generated from the
    options dataclasses of :mod:`tokenmill.objectives`. An option left out
    keeps its mode's default (in brackets); one of another mode is an error."""
    for name, (spec, modes) in reversed(corrupt_options().items()):
        flag = spec.metadata["flag"] or flag_of(name)
        help = f"{', '.join(modes)}: {spec.metadata['help']} [{shown_default(spec)}]."
        kind, repeats = _click_type(spec.type)
        if kind is bool and spec.default:
            option = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help)
        elif kind is bool:
            option = click.option(flag, name, is_flag=True, default=None, help=help)
        else:
            choices = spec.metadata["choices"]
            option = click.option(
                flag,
                name,
                type=click.Choice(choices) if choices else kind,
                multiple=repeats,
                help=help,
            )
        command = option(command)
    return command


@overload
def run_options(command: Command) -> Command: ...
@overload
def run_options(*, output_required: bool = True) -> Callable[[Command], Command]: ...


def run_options(
    command: Command | None = None, *, output_required: bool = True
) -> Command | Callable[[Command], Command]:
    """The options every shard stage shares, handed to the command as one
    `run` dict of :func:`tokenmill.run_stage` keyword arguments. With
    `output_required=False`, `-o` may be left out and `run["output"]` is None."""
    if command is None:
        return functools.partial(run_options, output_required=output_required)
    options = [
        click.option(
            "-o",
            "--output",
            type=click.Path(path_type=Path),
            required=output_required,
            help="Output folder (created if missing)."
            + ("" if output_required else " Default: next to SOURCE, named SOURCE-MODE."),
        ),
        click.option(
            "--overwrite",
            is_flag=True,
            help="Redo every shard, replacing earlier output; without it, finished shards "
            "are skipped.",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(FORMATS),
            default="parquet",
            show_default=True,
            help="Output shard format; 'arrow' (IPC) can be memory-mapped without a copy.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=DEFAULT_BATCH_ROWS,
            show_default=True,
            help="Rows per batch read (memory bound; output is unaffected).",
        ),
        click.option(
            "--shard",
            "shards",
            multiple=True,
            help="Only this input shard (repeatable), to split one dataset over processes.",
        ),
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Force the progress bar on or off (default: on at a terminal, off in CI).",
        ),
    ]

    @functools.wraps(command)
    def with_run(**kwargs: Any) -> Any:
        run = {name: kwargs.pop(name) for name in RUN_OPTION_NAMES}
        run["shards"] = list(run["shards"]) or None
        return command(run=run, **kwargs)

    for option in reversed(options):
        with_run = option(with_run)
    return with_run


def _report(report: RunReport) -> None:
    rate = report.tokens / max(report.seconds, 1e-9)
    line = (
        f"{report.output}: {len(report.written)} shard(s) written, "
        f"{len(report.skipped)} skipped, {report.rows:,} rows"
    )
    if report.tokens:
        line += f", {report.tokens:,} tokens ({rate / 1e6:.2f}M tokens/s)"
    line += f", {report.seconds:.1f}s"
    if report.manifest is not None:
        totals = ", ".join(f"{k} {v:,}" for k, v in report.manifest.totals.items())
        ratios = "".join(f", {k} {v:.4%}" for k, v in report.manifest.ratios.items())
        line += f"\nmanifest: {totals}{ratios}"
    else:
        line += "\nother shards are not done yet; the manifest is written when they are"
    if report.summary:
        line += f"\n{report.summary}"
    click.echo(line, err=True)


@click.group(cls=TokenmillGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(tokenmill.__version__, prog_name="tokenmill")
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    help=f"Worker threads, at most {MAX_THREADS} (0: TOKENMILL_NUM_THREADS, "
    "RAYON_NUM_THREADS, else every core).",
)
def cli(threads: int) -> None:
    """Pretraining data for every objective, over Arrow shards."""
    if threads:
        tokenmill.set_num_threads(threads)


@cli.command("tokenize")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path),
    required=True,
    help="A Hugging Face tokenizer.json.",
)
@click.option("--text-column", default="text", show_default=True)
@click.option("--output-column", default="input_ids", show_default=True)
@click.option(
    "--eos/--no-eos",
    default=True,
    show_default=True,
    help="Append the end-of-document token to every document.",
)
@click.option(
    "--eos-token",
    default=None,
    help="The EOS token (default: the first of </s>, <|endoftext|>, <eos>).",
)
@click.option(
    "--add-special-tokens",
    is_flag=True,
    help="Run the tokenizer's post-processor (e.g. BERT's [CLS] ... [SEP]).",
)
@click.option("--keep-text", is_flag=True, help="Keep the text column beside the tokens.")
@click.option(
    "--word-ids",
    is_flag=True,
    help="Also save each token's word index (word_ids), for whole-word masking.",
)
@nulls_option
@run_options
def tokenize_command(
    source: Path,
    tokenizer: Path,
    text_column: str,
    output_column: str,
    eos: bool,
    eos_token: str | None,
    add_special_tokens: bool,
    keep_text: bool,
    word_ids: bool,
    nulls: str,
    run: dict[str, Any],
) -> None:
    """Tokenize the text column of SOURCE into a list<uint32> column.

    Tokenizers tokenmill's fast encoder implements exactly (byte-level BPE
    with the GPT-2, cl100k, Qwen 2 or o200k pattern; BERT's WordPiece) take
    it; any other goes to the `tokenizers` crate. The last line printed
    says which, and why.
    """
    report = tokenmill.tokenize(
        source,
        tokenizer=tokenizer,
        text_column=text_column,
        output_column=output_column,
        eos=eos,
        eos_token=eos_token,
        add_special_tokens=add_special_tokens,
        keep_text=keep_text,
        word_ids=word_ids,
        nulls=nulls,
        **run,
    )
    _report(report)


@cli.command("sample")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--fraction",
    type=click.FloatRange(0.0, 1.0),
    required=True,
    help="Probability of keeping each row.",
)
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True)
@click.option(
    "--invert", is_flag=True, help="Keep exactly the rows the same seed and fraction would drop."
)
@click.option(
    "--id-column",
    default="id",
    show_default=True,
    help="Document id column keying each row's draw ('' keys rows by position).",
)
@click.option("--epoch", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True)
@run_options
def sample_command(
    source: Path,
    fraction: float,
    seed: int,
    invert: bool,
    id_column: str,
    epoch: int,
    run: dict[str, Any],
) -> None:
    """Keep a deterministic random fraction of the rows of SOURCE."""
    report = tokenmill.sample(
        source,
        fraction=fraction,
        seed=seed,
        invert=invert,
        id_column=id_column or None,
        epoch=epoch,
        **run,
    )
    _report(report)


@cli.command("corrupt")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--mode",
    type=click.Choice(CORRUPT_MODES),
    required=True,
    help=", ".join(f"{name} ({OBJECTIVES[name].summary})" for name in CORRUPT_MODES) + ".",
)
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path),
    required=True,
    help="tokenizer.json the tokens came from: special ids, mask, sentinels, EOS.",
)
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True)
@click.option("--epoch", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True)
@click.option("--token-column", default="input_ids", show_default=True)
@click.option(
    "--text-column",
    default="text",
    show_default=True,
    help="Tokenized on the fly when the shards have no token column.",
)
@click.option(
    "--id-column",
    default="id",
    show_default=True,
    help="Document id column keying each row's draws ('' keys rows by position).",
)
@click.option(
    "--input-length",
    type=click.IntRange(min=2),
    default=None,
    help="Concatenate documents into rows that corrupt into exactly this many inputs "
    "(span: T5's length helper; other modes: rows of this length).",
)
@corruption_options
@nulls_option
@run_options(output_required=False)
def corrupt_command(
    source: Path,
    mode: str,
    tokenizer: Path,
    seed: int,
    epoch: int,
    token_column: str,
    text_column: str,
    id_column: str,
    input_length: int | None,
    nulls: str,
    run: dict[str, Any],
    **options: Any,
) -> None:
    """Corrupt the token rows of SOURCE into inputs and labels for one objective.

    Mode options left out keep their defaults (in brackets); an option of
    another mode is an error.
    """
    given = {name: value for name, value in options.items() if value not in (None, ())}
    if run["output"] is None:
        # Beside the input, never inside its folder: `DIR/` -> `DIR-MODE/`,
        # `DIR/a.parquet` -> `a-MODE/` next to DIR.
        source_path = source.resolve()
        folder = source_path if source_path.is_dir() else source_path.parent
        stem = source_path.name if source_path.is_dir() else source_path.stem
        run["output"] = folder.parent / f"{stem}-{mode}"
    report = tokenmill.corrupt(
        source,
        mode=mode,
        tokenizer=tokenizer,
        seed=seed,
        epoch=epoch,
        token_column=token_column,
        text_column=text_column,
        id_column=id_column or None,
        input_length=input_length,
        options=given,
        nulls=nulls,
        **run,
    )
    _report(report)


@cli.command("pack")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--seq-len", type=int, required=True, help="Tokens per row (e.g. 2048).")
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default="bfd",
    show_default=True,
    help="bfd: best-fit decreasing, no truncation; concat: one stream cut into rows.",
)
@click.option(
    "--buffer",
    type=int,
    default=10_000,
    show_default=True,
    help="Documents per best-fit window (bfd).",
)
@click.option(
    "--shifted",
    is_flag=True,
    help="Rows of seq-len + 1 tokens, for inputs and targets shifted by one (concat).",
)
@click.option("--token-column", default="input_ids", show_default=True)
@run_options
def pack_command(
    source: Path,
    seq_len: int,
    strategy: str,
    buffer: int,
    shifted: bool,
    token_column: str,
    run: dict[str, Any],
) -> None:
    """Pack the token documents of SOURCE into rows of at most --seq-len tokens."""
    report = tokenmill.pack(
        source,
        seq_len=seq_len,
        strategy=strategy,
        buffer=buffer,
        shifted=shifted,
        token_column=token_column,
        **run,
    )
    _report(report)


@cli.command("dedup")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Output folder: the kept rows, clusters.parquet and the manifest.",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="minhash",
    show_default=True,
    help="exact: equal content hashes; minhash: near duplicates by Jaccard.",
)
@click.option(
    "--threshold",
    type=float,
    default=0.8,
    show_default=True,
    help="Jaccard similarity from which two documents are duplicates (minhash).",
)
@click.option("--num-perm", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--ngram",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Shingle length, in words or characters.",
)
@click.option("--shingle", type=click.Choice(["word", "char"]), default="word", show_default=True)
@click.option("--lowercase/--no-lowercase", default=True, show_default=True)
@click.option("--collapse-whitespace/--keep-whitespace", default=True, show_default=True)
@click.option("--strip-punctuation", is_flag=True, help="Ignore punctuation and symbols.")
@click.option(
    "--verify",
    type=click.Choice(["estimate", "exact"]),
    default="estimate",
    show_default=True,
    help="Confirm candidate pairs by estimated or exact Jaccard (minhash).",
)
@click.option(
    "--keep",
    type=click.Choice(["first", "longest"]),
    default="first",
    show_default=True,
    help="Which document of a cluster stays.",
)
@click.option("--text-column", default="text", show_default=True)
@click.option(
    "--token-column",
    default="input_ids",
    show_default=True,
    help="Hashed by exact dedup when there is no text column.",
)
@click.option(
    "--id-column",
    default="id",
    show_default=True,
    help="Document ids copied into clusters.parquet ('' for none).",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**64 - 1),
    default=0,
    show_default=True,
    help="Seed of the MinHash permutations.",
)
@click.option(
    "--memory-budget",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="MiB of LSH bucket records held in memory before they spill to disk.",
)
@nulls_option
@click.option("--overwrite", is_flag=True, help="Redo everything, replacing earlier output.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="parquet", show_default=True)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_ROWS, show_default=True
)
@click.option("--progress/--no-progress", default=None)
def dedup_command(
    source: Path,
    output: Path,
    method: str,
    threshold: float,
    num_perm: int,
    ngram: int,
    shingle: str,
    lowercase: bool,
    collapse_whitespace: bool,
    strip_punctuation: bool,
    verify: str,
    keep: str,
    text_column: str,
    token_column: str,
    id_column: str,
    seed: int,
    memory_budget: int,
    nulls: str,
    overwrite: bool,
    fmt: str,
    batch_size: int,
    progress: bool | None,
) -> None:
    """Remove exact or near-duplicate documents across every shard of SOURCE."""
    options = DedupOptions(
        method=method,
        threshold=threshold,
        num_perm=num_perm,
        ngram=ngram,
        shingle=shingle,
        lowercase=lowercase,
        collapse_whitespace=collapse_whitespace,
        strip_punctuation=strip_punctuation,
        verify=verify,
        keep=keep,
        text_column=text_column,
        token_column=token_column,
        id_column=id_column or None,
        seed=seed,
        memory_budget=memory_budget << 20,
        nulls=nulls,
    )
    report = tokenmill.dedup(
        source,
        output,
        options,
        overwrite=overwrite,
        fmt=fmt,
        batch_size=batch_size,
        progress=progress,
    )
    for line in dedup_report_lines(report):
        click.echo(line, err=True)
    _report(report.run)


@cli.command("pairs")
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
    _report(report)


@cli.command("negatives")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Output folder (created if missing).",
)
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
@click.option("--overwrite", is_flag=True, help="Redo every shard, replacing earlier output.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="parquet", show_default=True)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_ROWS, show_default=True
)
@click.option("--progress/--no-progress", default=None)
def negatives_command(
    source: Path,
    output: Path,
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
    overwrite: bool,
    fmt: str,
    batch_size: int,
    progress: bool | None,
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
    report = tokenmill.negatives(
        source,
        output,
        options,
        overwrite=overwrite,
        fmt=fmt,
        batch_size=batch_size,
        progress=progress,
    )
    _report(report)


@cli.command("bench")
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


@cli.group("tokenizer")
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


@cli.command("inspect")
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


@cli.command("train")
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


@cli.command("demo")
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


def main() -> None:
    cli.main(prog_name="tokenmill")


if __name__ == "__main__":
    main()
