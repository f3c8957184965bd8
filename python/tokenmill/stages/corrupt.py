"""`corrupt`: token rows become model inputs and labels for one pretraining
objective: `mlm`, `span` (T5), `bart`, `prefix` or `ul2`.

The token column is replaced by `input_ids` (the corrupted inputs) and
`labels` (int32: original ids and -100 for `mlm` and the decoder `prefix`
layout, the target sequence for the others); `prefix` adds `prefix_lens`
(one per document) and `ul2` adds `denoiser` (the index of the row's
denoiser). Other columns pass through, except the per-token columns of
packed rows (`seq_lens`, `position_ids`, `doc_offset`) when the mode changes
row lengths, since they would no longer describe the row. Packed rows keep
their documents apart: no span, masked word or permutation crosses one.

With `input_length`, documents are first concatenated and cut into raw rows
of the length that span-corrupts into exactly `input_length` inputs (T5's
helper: 568 raw tokens for 512 inputs and 114 targets at density 0.15, mean
span 3), so every output row has the same shape. The tail of each shard that
fills no whole row is dropped, as T5 does.

Given text shards (no token column) and a tokenizer, rows are tokenized on
the fly, as `tokenmill tokenize` would with its defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tokenmill import _core
from tokenmill._core import ConfigError, DataError, SchemaError, TokenizerError
from tokenmill.checks import as_uint32_tokens, at_row, check_nulls, is_token_list, require_u64
from tokenmill.objectives import CORRUPT_MODES, OBJECTIVES, objective
from tokenmill.options import Options, epoch_option, id_column_option, option, seed_option
from tokenmill.runner import BatchContext, RunReport, Stage, run_stage
from tokenmill.stages._common import drop_nulls, nulls_option, rows_as_read, stage_keywords
from tokenmill.stages.tokenize import TokenizeStage
from tokenmill.tokenizer import load_tokenizer

#: Columns that describe token positions of packed rows.
POSITIONAL_COLUMNS = ("seq_lens", "position_ids", "doc_offset", "word_ids")


def _span_count(length: int, density: float, mean_span: float) -> int:
    """T5's number of noise spans in a row (Python rounds half to even, as T5)."""
    noise = min(max(round(length * density), 1), length - 1)
    return max(round(noise / mean_span), 1)


def _list_of(item: pa.DataType) -> pa.DataType:
    return pa.list_(pa.field("item", item, nullable=False))


INPUTS = pa.field("input_ids", _list_of(pa.uint32()), nullable=False)
LABELS = pa.field("labels", _list_of(pa.int32()), nullable=False)
PREFIX_LENS = pa.field("prefix_lens", _list_of(pa.uint32()), nullable=False)
DENOISER = pa.field("denoiser", pa.uint8(), nullable=False)
#: The columns a layout adds after input_ids and labels.
EXTRA_FIELDS = {"prefix_lens": PREFIX_LENS, "denoiser": DENOISER}


@dataclass(frozen=True)
class CorruptOptions(Options):
    """The options of `corrupt` (and of `tokenmill corrupt`) that are not a
    mode's: those are the mode's options dataclass in :mod:`tokenmill.objectives`."""

    mode: str = option(
        help=", ".join(f"{name} ({OBJECTIVES[name].summary})" for name in CORRUPT_MODES) + ".",
        choices=CORRUPT_MODES,
    )
    tokenizer: str = option(
        help="tokenizer.json the tokens came from: special ids, mask, sentinels, EOS.", path=True
    )
    seed: int = seed_option()
    epoch: int = epoch_option()
    token_column: str = option("input_ids")
    text_column: str = option("text", "Tokenized on the fly when the shards have no token column.")
    id_column: str | None = id_column_option(
        "Document id column keying each row's draws ('' keys rows by position)."
    )
    input_length: int | None = option(
        None,
        "Concatenate documents into rows that corrupt into exactly this many inputs "
        "(span: T5's length helper; other modes: rows of this length).",
        low=2,
    )
    nulls: str = nulls_option()

    def check(self) -> None:
        check_nulls(self.nulls)
        objective(self.mode, corrupting=True)
        require_u64(seed=self.seed, epoch=self.epoch)
        if self.input_length is not None and self.input_length < 2:
            raise ConfigError(f"--input-length {self.input_length} is below 2")


class CorruptStage(Stage):
    """`corrupt` over one shard at a time. `options` are the fields of
    :class:`CorruptOptions` but mode and tokenizer, and the mode's own
    options (see :mod:`tokenmill.objectives`)."""

    name = "corrupt"
    seed: int

    def __init__(self, mode: str, tokenizer: str | Path, **options: Any) -> None:
        names = CorruptOptions.names()
        own = {name: value for name, value in options.items() if name in names}
        mode_options = {name: value for name, value in options.items() if name not in names}
        self.options = o = CorruptOptions.parse(
            {"mode": mode, "tokenizer": tokenizer, **own}, what="CorruptStage"
        )
        self.objective = objective(mode, corrupting=True)
        self.tokenizer_path = Path(o.tokenizer).resolve()
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.tokenizer_checksum = _core.file_checksum(self.tokenizer_path)
        #: The mode's options, resolved (special token ids included).
        self.corruptor, self.mode_options = self.objective.build_corruptor(
            self.tokenizer, **mode_options
        )
        self.layout = self.objective.layout(self.mode_options)
        self.seed = o.seed
        self.input_column = o.token_column
        self.id_column = o.id_column
        self.token_column = "input_ids"
        self.raw_length = self._raw_length(o.input_length)
        if self.raw_length is not None:
            self._check_sentinels(self.raw_length)
        self._tokenize: TokenizeStage | None = None
        self._tokenizer_stage: TokenizeStage | None = None
        self._packer: _core.Packer | None = None
        self._shard = ""
        self._rows_out = 0
        #: (first row, kept positions) of the shard's batches that lost null
        #: rows: the packer numbers documents first_row + i over kept rows.
        self._dropped: list[tuple[int, npt.NDArray[np.int64]]] = []

    def _raw_length(self, input_length: int | None) -> int | None:
        if input_length is None:
            return None
        # Modes that keep or vary the length cut rows at it as given.
        raw_length = self.objective.raw_length
        return input_length if raw_length is None else raw_length(self.mode_options, input_length)

    def _check_sentinels(self, length: int) -> None:
        """With static row lengths, a shortage of sentinels is known before
        any output: T5's span count at the longest-span-count denoiser."""
        if self.objective.span_settings is None:
            return
        settings = self.objective.span_settings(self.mode_options)
        needed = max(_span_count(length, d, m) for d, m in settings)
        if needed > self.mode_options["sentinels"]:
            raise ConfigError(
                f"rows of {length} tokens need up to {needed} sentinels but the tokenizer has "
                f"{self.mode_options['sentinels']}; lower --input-length or --noise-density, or "
                "raise --mean-span"
            )

    def params(self) -> dict[str, Any]:
        return {
            **asdict(self.options),
            "options": self.mode_options,
            "tokenizer": str(self.tokenizer_path),
            "tokenizer_checksum": self.tokenizer_checksum,
            "raw_length": self.raw_length,
        }

    def _keeps_length(self) -> bool:
        return self.layout.keeps_length

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        self._tokenize = None
        if self.input_column not in schema.names:
            if self.options.text_column in schema.names:
                # Built once: it loads and checksums the tokenizer.
                if self._tokenizer_stage is None:
                    try:
                        self._tokenizer_stage = TokenizeStage(
                            self.tokenizer_path,
                            text_column=self.options.text_column,
                            output_column=self.input_column,
                        )
                    except TokenizerError as err:
                        # tokenize's own fix names its flags, which corrupt does not take.
                        problem = str(err).split("; ", 1)[0]
                        raise TokenizerError(
                            f"{problem}; tokenize the text first with `tokenmill tokenize "
                            "--eos-token TOKEN` (or `--no-eos`), then corrupt the token shards"
                        ) from None
                self._tokenize = self._tokenizer_stage
                schema = self._tokenize.output_schema(schema)
            else:
                raise SchemaError(
                    f"the shard has neither a token column '{self.input_column}' nor a text "
                    f"column '{self.options.text_column}'; name one with --token-column or "
                    "--text-column"
                )
        return self._schema_for_tokens(schema)

    def _extra_fields(self) -> list[pa.Field]:
        return [EXTRA_FIELDS[name] for name in self.layout.columns]

    def _schema_for_tokens(self, schema: pa.Schema) -> pa.Schema:
        """The output schema for a schema that holds the token column."""
        t = schema.field(self.input_column).type
        if not is_token_list(t):
            raise SchemaError(
                f"column '{self.input_column}' has type {t}, not list<uint32> token ids; "
                "run `tokenmill tokenize` first, or name the token column with --token-column"
            )
        if self.raw_length is not None:
            return pa.schema([INPUTS, LABELS, *self._extra_fields()])
        fields = []
        for field in schema:
            if field.name in (self.input_column, "input_ids", "labels", "prefix_lens", "denoiser"):
                continue
            if field.name in POSITIONAL_COLUMNS and not self._keeps_length():
                continue
            fields.append(field)
        return pa.schema([INPUTS, LABELS, *self._extra_fields(), *fields])

    def begin_shard(self, shard: str) -> None:
        self._shard = shard
        self._rows_out = 0
        self._dropped = []
        if self.raw_length is not None:
            # Position ids would be as large as the tokens, for nothing.
            self._packer = _core.Packer(self.raw_length, strategy="concat", positions=False)

    def _tokens(
        self, batch: pa.RecordBatch, ctx: BatchContext
    ) -> tuple[pa.RecordBatch, BatchContext]:
        """The batch with its token column, rows with null text or tokens
        dropped or refused first, and the context that keeps their keys."""
        column = self.options.text_column if self._tokenize is not None else self.input_column
        batch, ctx = drop_nulls(batch, ctx, [column], self.options.nulls)
        with rows_as_read(ctx):
            if self._tokenize is not None:
                batch = self._tokenize.process(batch, ctx)
        return batch, ctx

    def _corrupt(
        self,
        tokens: pa.Array,
        keys: Any,
        seq_lens: pa.Array | None,
        word_ids: pa.Array | None = None,
    ) -> dict[str, pa.Array]:
        result: dict[str, pa.Array] = self.corruptor.corrupt(
            tokens,
            keys,
            seed=self.seed,
            epoch=self.options.epoch,
            seq_lens=seq_lens,
            word_ids=word_ids,
            column=self.input_column,
        )
        return result

    def process(self, batch: pa.RecordBatch, ctx: BatchContext) -> pa.RecordBatch:
        batch, ctx = self._tokens(batch, ctx)
        with rows_as_read(ctx):
            tokens = as_uint32_tokens(batch.column(self.input_column), self.input_column)
        if self._packer is not None:
            if ctx.positions is not None:
                self._dropped.append((ctx.first_row, ctx.positions))
            return self._corrupt_rows(
                self._packer.push(tokens, ctx.first_row, column=self.input_column), ctx
            )
        names = batch.schema.names
        seq_lens = batch.column("seq_lens") if "seq_lens" in names else None
        # Word ids saved by `tokenize --word-ids` decide where words start.
        word_ids = batch.column("word_ids") if "word_ids" in names else None
        with rows_as_read(ctx):
            out = self._corrupt(tokens, ctx.row_keys(), seq_lens, word_ids)
        schema = self._schema_for_tokens(batch.schema)
        columns = [out[f.name] if f.name in out else batch.column(f.name) for f in schema]
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    def _corrupt_rows(self, packed: tuple[pa.Array, ...], ctx: BatchContext) -> pa.RecordBatch:
        tokens, seq_lens = packed[0], packed[1]
        # Concatenated rows have no id of their own: they are keyed by their
        # place among the shard's output rows, a pure function of the shard.
        keys = _core.row_keys_from_position(self._shard + "#corrupt", self._rows_out, len(tokens))
        self._rows_out += len(tokens)
        try:
            out = self._corrupt(tokens, keys, seq_lens)
        except DataError as err:
            raise self._at_input_row(err, packed, ctx) from None
        schema = pa.schema([INPUTS, LABELS, *self._extra_fields()])
        return pa.RecordBatch.from_arrays([out[f.name] for f in schema], schema=schema)

    def _input_row(self, document: int) -> int:
        """The shard row of the packer's document number `document`."""
        for first, kept in self._dropped:
            if first <= document < first + len(kept):
                return first + int(kept[document - first])
        return document

    def _at_input_row(
        self, err: DataError, packed: tuple[pa.Array, ...], ctx: BatchContext
    ) -> DataError:
        """A DataError about a concatenated row, moved to the input row it
        comes from: the row holding the bad token id, or, for a problem of
        the whole row, its first document's, naming the rest."""
        row = getattr(err, "row", None)
        if row is None or not 0 <= row < len(packed[0]):
            return err
        tokens = packed[0][row].values.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(tokens >= self.tokenizer.vocab_size)
        ends = np.cumsum(packed[1][row].values.to_numpy(zero_copy_only=False))
        documents = packed[2][row].values.to_numpy(zero_copy_only=False)
        segment = int(np.searchsorted(ends, bad[0], side="right")) if len(bad) else 0
        first = self._input_row(int(documents[segment]))
        problem = None
        if not len(bad):
            last = self._input_row(int(documents[-1]))
            rows = f"input row {first}" if last == first else f"input rows {first} to {last}"
            problem = getattr(err, "problem", None) or str(err)
            problem += f" (in a row of --input-length tokens made of {rows})"
        # The runner adds the batch's first row: the shard row, relative to it.
        return at_row(err, first - ctx.first_row, problem)

    def end_shard(self, ctx: BatchContext) -> pa.RecordBatch | None:
        if self._packer is None:
            return None
        rows = self._corrupt_rows(self._packer.finish(), ctx)
        for name in ("documents", "documents_split", "tokens_truncated"):
            ctx.count(name, self._packer.stats[name])
        self._packer = None
        return rows

    def ratios(self, totals: dict[str, int]) -> dict[str, float]:
        return {}


def corrupt(
    source: str | Path,
    output: str | Path,
    mode: str,
    tokenizer: str | Path,
    *,
    options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> RunReport:
    """Corrupts every shard of `source` into `output` for `mode`; see the
    module docstring. `options` are the mode's (see :mod:`tokenmill.objectives`);
    `kwargs` the fields of :class:`CorruptOptions` and the run options of
    :func:`tokenmill.run_stage`."""
    fields, run = stage_keywords(CorruptOptions, kwargs, "corrupt", own=("options",))
    stage = CorruptStage(mode, tokenizer, **fields, **(options or {}))
    return run_stage(stage, source, output, **run)
