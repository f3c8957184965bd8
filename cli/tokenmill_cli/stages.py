"""The data-preparation stages: tokenize, sample, corrupt, pack, dedup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import tokenmill
from tokenmill.objectives import (
    CORRUPT_MODES,
    OBJECTIVES,
)
from tokenmill.stages.dedup import METHODS, DedupOptions, dedup_report_lines
from tokenmill.stages.pack import STRATEGIES
from tokenmill_cli.options import (
    corruption_options,
    nulls_option,
    report_run,
    run_options,
)


@click.command("tokenize")
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
    report_run(report)


@click.command("sample")
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
    report_run(report)


@click.command("corrupt")
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
    report_run(report)


@click.command("pack")
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
    report_run(report)


@click.command("dedup")
@click.argument("source", type=click.Path(path_type=Path))
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
@run_options(global_stage="Output folder: the kept rows, clusters.parquet and the manifest.")
def dedup_command(
    source: Path,
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
    run: dict[str, Any],
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
    report = tokenmill.dedup(source, run.pop("output"), options, **run)
    for line in dedup_report_lines(report):
        click.echo(line, err=True)
    report_run(report.run)
