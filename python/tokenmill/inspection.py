"""`inspect`: what is in a folder of shards, before anything else runs on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tokenmill._core import Tokenizer
from tokenmill.dataset import open_dataset


def _is_token_list(t: pa.DataType) -> bool:
    is_list = pa.types.is_list(t) or pa.types.is_large_list(t)
    return bool(is_list and pa.types.is_integer(t.value_type))


@dataclass
class ColumnSummary:
    name: str
    type: str
    nulls: int = 0
    #: For token columns: tokens in all, and the shortest, mean and longest row.
    tokens: int | None = None
    min_len: int | None = None
    mean_len: float | None = None
    max_len: int | None = None
    #: For text columns: UTF-8 bytes in all.
    text_bytes: int | None = None


@dataclass
class DatasetSummary:
    path: str
    shards: int
    rows: int
    bytes_on_disk: int
    schema: str
    columns: list[ColumnSummary]
    manifest: dict[str, Any] | None
    examples: list[dict[str, Any]] = field(default_factory=list)
    #: Which encoder the given tokenizer's text goes through (see `Tokenizer.encoder`).
    encoder: str | None = None


def describe(
    path: str | Path,
    *,
    tokenizer: Tokenizer | None = None,
    examples: int = 3,
    max_chars: int = 300,
) -> DatasetSummary:
    """Schema, counts and the first rows of a dataset, decoded when a tokenizer is given.

    Counting streams one column at a time, so it runs in bounded memory.
    """
    dataset = open_dataset(path)
    schema = dataset.schema
    columns = [ColumnSummary(f.name, str(f.type)) for f in schema]
    by_name = {c.name: c for c in columns}
    for shard in dataset.shards:
        for batch in shard.iter_batches(8192):
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                summary = by_name.get(name)
                if summary is None:
                    continue
                summary.nulls += column.null_count
                if _is_token_list(column.type):
                    lengths = pc.list_value_length(column)
                    _accumulate_lengths(summary, lengths, column)
                elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                    summary.text_bytes = (summary.text_bytes or 0) + int(
                        pc.sum(pc.binary_length(column)).as_py() or 0
                    )
    rows = dataset.num_rows
    for summary in columns:
        if summary.tokens is not None and rows:
            summary.mean_len = summary.tokens / rows
    first = dataset.shards[0]
    head = next(first.iter_batches(max(examples, 1)), None)
    sample_rows: list[dict[str, Any]] = []
    if head is not None and examples > 0:
        for row in head.slice(0, examples).to_pylist():
            sample_rows.append(_render_row(row, schema, tokenizer, max_chars))
    return DatasetSummary(
        path=str(dataset.root),
        shards=len(dataset.shards),
        rows=rows,
        bytes_on_disk=sum(s.size_bytes for s in dataset.shards),
        schema=schema.to_string(show_schema_metadata=False),
        columns=columns,
        manifest=None
        if dataset.manifest is None
        else {
            "stage": dataset.manifest.stage,
            "tool_version": dataset.manifest.tool_version,
            "params": dataset.manifest.params,
            "totals": dataset.manifest.totals,
        },
        examples=sample_rows,
        encoder=None if tokenizer is None else tokenizer.encoder,
    )


def _accumulate_lengths(summary: ColumnSummary, lengths: pa.Array, column: pa.Array) -> None:
    if len(column) == 0:
        return
    summary.tokens = (summary.tokens or 0) + int(pc.sum(lengths).as_py() or 0)
    low, high = pc.min_max(lengths).values()
    if low.is_valid:
        lo, hi = int(low.as_py()), int(high.as_py())
        summary.min_len = lo if summary.min_len is None else min(summary.min_len, lo)
        summary.max_len = hi if summary.max_len is None else max(summary.max_len, hi)


def _render_row(
    row: dict[str, Any], schema: pa.Schema, tokenizer: Tokenizer | None, max_chars: int
) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    for name, value in row.items():
        if _is_token_list(schema.field(name).type) and value is not None:
            shown = f"{len(value)} tokens: {value[:16]}{' ...' if len(value) > 16 else ''}"
            if tokenizer is not None:
                shown += f"\n  decoded: {_clip(tokenizer.decode(value), max_chars)!r}"
            rendered[name] = shown
        elif isinstance(value, str):
            rendered[name] = repr(_clip(value, max_chars))
        else:
            rendered[name] = repr(value)
    return rendered


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def format_summary(summary: DatasetSummary) -> str:
    """The summary as the CLI prints it."""
    lines = [
        f"{summary.path}: {summary.shards} shard(s), {summary.rows:,} rows, "
        f"{summary.bytes_on_disk / 1e6:,.1f} MB on disk",
    ]
    if summary.manifest:
        m = summary.manifest
        lines.append(f"made by: tokenmill {m['tool_version']} {m['stage']} {m['params']}")
    if summary.encoder:
        lines.append(f"tokenizer: {summary.encoder}")
    lines.append("schema:")
    lines.extend("  " + line for line in summary.schema.splitlines())
    lines.append("columns:")
    for c in summary.columns:
        detail = f"  {c.name} ({c.type})"
        if c.tokens is not None:
            detail += (
                f": {c.tokens:,} tokens, per row min {c.min_len} / mean "
                f"{(c.mean_len or 0):,.1f} / max {c.max_len}"
            )
        if c.text_bytes is not None:
            detail += f": {c.text_bytes / 1e6:,.2f} MB of text"
        if c.nulls:
            detail += f", {c.nulls:,} nulls"
        lines.append(detail)
    for i, row in enumerate(summary.examples):
        lines.append(f"row {i}:")
        lines.extend(f"  {name}: {value}" for name, value in row.items())
    return "\n".join(lines)
