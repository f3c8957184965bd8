"""`pack`: documents into rows of at most `seq_len` tokens for causal-LM training.

Rows carry what keeps documents apart: `seq_lens` (the length of each
document segment in the row), `position_ids` restarting at every segment,
and, per segment, `doc_index` (its row in the input shard) and `doc_offset`
(where in that document it starts), so packed rows unpack back into the
documents. Per-document columns do not survive packing; `doc_index` joins
them back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from tokenmill import _core
from tokenmill._core import ConfigError, SchemaError
from tokenmill.checks import as_uint32_tokens, is_token_list, require_column
from tokenmill.runner import BatchContext, RunReport, Stage, run_stage

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


class PackStage(Stage):
    name = "pack"

    def __init__(
        self,
        seq_len: int,
        *,
        strategy: str = "bfd",
        buffer: int = 10_000,
        shifted: bool = False,
        token_column: str = "input_ids",
    ) -> None:
        # The packer counts a row's tokens (seq_len, plus one when shifted) in a
        # u32 and its buffer in a usize: past them Python raises OverflowError.
        if not 0 < seq_len <= MAX_SEQ_LEN:
            raise ConfigError(
                f"--seq-len {seq_len} is not in [1, {MAX_SEQ_LEN}]; pass e.g. --seq-len 2048"
            )
        if strategy not in STRATEGIES:
            raise ConfigError(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        if not 0 < buffer <= MAX_BUFFER:
            raise ConfigError(
                f"--buffer {buffer} is not in [1, {MAX_BUFFER}]; pass e.g. --buffer 10000"
            )
        if shifted and strategy != "concat":
            raise ConfigError("--shifted applies to --strategy concat only")
        self.seq_len = seq_len
        self.strategy = strategy
        self.buffer = buffer
        self.shifted = shifted
        self.input_column = token_column
        self.token_column = "input_ids"
        self.id_column = None
        self._packer: _core.Packer | None = None

    @property
    def row_len(self) -> int:
        """Tokens per full row: `seq_len`, plus one for shifted targets (each
        row then starts with the previous row's last token, so the windows
        `row[:-1]` -> `row[1:]` lose no input-target pair)."""
        return self.seq_len + 1 if self.shifted else self.seq_len

    def params(self) -> dict[str, Any]:
        return {
            "seq_len": self.seq_len,
            "strategy": self.strategy,
            "buffer": self.buffer if self.strategy == "bfd" else None,
            "shifted": self.shifted,
            "token_column": self.input_column,
        }

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
            self.row_len, strategy=self.strategy, buffer=self.buffer, overlap=self.shifted
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


def pack(
    source: str | Path,
    output: str | Path,
    seq_len: int,
    *,
    strategy: str = "bfd",
    buffer: int = 10_000,
    shifted: bool = False,
    token_column: str = "input_ids",
    **run_options: Any,
) -> RunReport:
    """Packs the token documents of `source` into rows; see the module docstring."""
    stage = PackStage(
        seq_len, strategy=strategy, buffer=buffer, shifted=shifted, token_column=token_column
    )
    return run_stage(stage, source, output, **run_options)
