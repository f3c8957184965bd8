"""`pack`: documents into rows of at most `seq_len` tokens for causal-LM training.

Rows carry what keeps documents apart: `seq_lens` (the length of each
document segment in the row), `position_ids` restarting at every segment,
and, per segment, `doc_index` (its row in the input shard) and `doc_offset`
(where in that document it starts), so packed rows unpack back into the
documents. Per-document columns do not survive packing; `doc_index` joins
them back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tokenmill import _core
from tokenmill._core import ConfigError, SchemaError
from tokenmill.checks import as_uint32_tokens, is_token_list, require_column
from tokenmill.options import Options, option
from tokenmill.runner import BatchContext, RunReport, Stage, run_stage
from tokenmill.stages._common import stage_keywords

STRATEGIES = ("bfd", "concat")


def _list_of(item: pa.DataType) -> pa.DataType:
    return pa.list_(pa.field("item", item, nullable=False))


MAX_SEQ_LEN = 2**32 - 2
MAX_BUFFER = 2**32 - 1
PACKED_SCHEMA = pa.schema(
    [
        pa.field("input_ids", _list_of(pa.uint32()), nullable=False),
        pa.field("seq_lens", _list_of(pa.uint32()), nullable=False),
        pa.field("doc_index", _list_of(pa.uint64()), nullable=False),
        pa.field("doc_offset", _list_of(pa.uint32()), nullable=False),
        pa.field("position_ids", _list_of(pa.uint32()), nullable=False),
    ]
)


@dataclass(frozen=True)
class PackOptions(Options):
    """The options of `pack` (and of `tokenmill pack`)."""

    seq_len: int = option(help="Tokens per row (e.g. 2048).")
    strategy: str = option(
        "bfd",
        "bfd: best-fit decreasing, no truncation; concat: one stream cut into rows.",
        choices=STRATEGIES,
    )
    buffer: int = option(10_000, "Documents per best-fit window (bfd).")
    shifted: bool = option(
        False, "Rows of seq-len + 1 tokens, for inputs and targets shifted by one (concat)."
    )
    token_column: str = option(
        "input_ids", "The token column (list<uint32>, or non-negative list<int32>)."
    )

    def check(self) -> None:
        # The packer counts a row's tokens (seq_len, plus one when shifted) in a
        # u32 and its buffer in a usize: past them Python raises OverflowError.
        if not 0 < self.seq_len <= MAX_SEQ_LEN:
            raise ConfigError(
                f"--seq-len {self.seq_len} is not in [1, {MAX_SEQ_LEN}]; pass e.g. --seq-len 2048"
            )
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if not 0 < self.buffer <= MAX_BUFFER:
            raise ConfigError(
                f"--buffer {self.buffer} is not in [1, {MAX_BUFFER}]; pass e.g. --buffer 10000"
            )
        if self.shifted and self.strategy != "concat":
            raise ConfigError("--shifted applies to --strategy concat only")


class PackStage(Stage):
    """`pack` over one shard at a time; `options` are the fields of
    :class:`PackOptions` but the row length."""

    name = "pack"

    def __init__(self, seq_len: int, **options: Any) -> None:
        self.options = PackOptions.parse({"seq_len": seq_len, **options}, what="PackStage")
        self.input_column = self.options.token_column
        self.token_column = "input_ids"
        self.id_column = None
        self._packer: _core.Packer | None = None

    @property
    def row_len(self) -> int:
        """Tokens per full row: `seq_len`, plus one for shifted targets (each
        row then starts with the previous row's last token, so the windows
        `row[:-1]` -> `row[1:]` lose no input-target pair)."""
        o = self.options
        return o.seq_len + 1 if o.shifted else o.seq_len

    def params(self) -> dict[str, Any]:
        params = asdict(self.options)
        if self.options.strategy != "bfd":
            params["buffer"] = None  # best-fit's window: concat never reads it
        return params

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        field = require_column(schema, self.input_column, "--token-column")
        t = field.type
        if not is_token_list(t):
            raise SchemaError(
                f"column '{self.input_column}' has type {t}, not list<uint32> token ids; "
                "run `tokenmill tokenize` first, or name the token column with --token-column"
            )
        return PACKED_SCHEMA

    def begin_shard(self, shard: str) -> None:
        self._packer = _core.Packer(
            self.row_len,
            strategy=self.options.strategy,
            buffer=self.options.buffer,
            overlap=self.options.shifted,
        )

    def _rows(self, columns: tuple[pa.Array | None, ...]) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays(list(columns), schema=PACKED_SCHEMA)

    def process(self, batch: pa.RecordBatch, ctx: BatchContext) -> pa.RecordBatch:
        assert self._packer is not None, "begin_shard was not called"
        column = as_uint32_tokens(batch.column(self.input_column), self.input_column)
        return self._rows(self._packer.push(column, ctx.first_row, column=self.input_column))

    def end_shard(self, ctx: BatchContext) -> pa.RecordBatch | None:
        assert self._packer is not None, "begin_shard was not called"
        rows = self._rows(self._packer.finish())
        for name, value in self._packer.stats.items():
            if name not in ("rows", "tokens"):  # the runner counts what it writes
                ctx.count(name, value)
        self._packer = None
        return rows

    def ratios(self, totals: dict[str, int]) -> dict[str, float]:
        rows = totals.get("rows", 0)
        return {"fill": totals.get("tokens", 0) / (rows * self.row_len) if rows else 0.0}


def pack(source: str | Path, output: str | Path, seq_len: int, **options: Any) -> RunReport:
    """Packs the token documents of `source` into rows; see the module
    docstring. `options` are the fields of :class:`PackOptions` and the run
    options of :func:`tokenmill.run_stage`."""
    fields, run = stage_keywords(PackOptions, options, "pack")
    return run_stage(PackStage(seq_len, **fields), source, output, **run)
