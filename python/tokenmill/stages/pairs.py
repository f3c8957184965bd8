"""`pairs`: (query, positive) rows for contrastive pretraining, from unlabeled documents.

Modes:

- ``crop``: independent cropping (Contriever): two random spans of one
  document, each a fraction ``U(min_ratio, max_ratio)`` of it, in words for
  text and in tokens for token lists.
- ``ict``: the inverse cloze task (ORQA): one sentence of the document
  against the rest of it; with probability ``keep_probability`` (ORQA: 0.1)
  the sentence stays in the context. Each document is one passage, so chunk
  long documents first. Token documents need ``sentence_end_ids``.
- ``columns``: the pairs already exist; ``query_column`` and
  ``positive_column`` are renamed ``query`` and ``positive``.

The output holds ``query`` and ``positive`` (text, or ``list<uint32>`` for
token input) and every other input column except the document column.
Draws are keyed by (seed, "pairs", epoch, row key).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tokenmill import _core
from tokenmill._core import ConfigError, SchemaError
from tokenmill.checks import (
    as_uint32_tokens,
    check_nulls,
    is_token_list,
    require_column,
    require_u64,
)
from tokenmill.options import Options, epoch_option, id_column_option, option, seed_option
from tokenmill.runner import BatchContext, RunReport, Stage, run_stage
from tokenmill.stages._common import drop_nulls, nulls_option, rows_as_read, stage_keywords

MODES = ("crop", "ict", "columns")
QUERY, POSITIVE = "query", "positive"


def _is_text(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or getattr(pa.types, "is_string_view", lambda _: False)(t)
    )


TOKENS = pa.list_(pa.field("item", pa.uint32(), nullable=False))


#: The options each mode reads, beside those every mode does.
_MODE_OPTIONS = {
    "crop": ("min_ratio", "max_ratio", "text_column", "token_column"),
    "ict": ("keep_probability", "sentence_end_ids", "text_column", "token_column"),
    "columns": ("query_column", "positive_column"),
}


@dataclass(frozen=True)
class PairsOptions(Options):
    """The options of `pairs` (and of `tokenmill pairs`)."""

    mode: str = option(
        "crop",
        "crop: two random spans of a document (Contriever); ict: a sentence and the rest "
        "of its passage (ORQA); columns: existing query and positive columns.",
        choices=MODES,
    )
    min_ratio: float = option(
        0.1,
        "Shortest crop, as a fraction of the document (words for text, tokens for tokens).",
    )
    max_ratio: float = option(0.5, "Longest crop.")
    keep_probability: float = option(
        0.1, "ICT: probability that the sentence stays in its context."
    )
    sentence_end_ids: tuple[int, ...] = option(
        (),
        "ICT on token ids: an id that ends a sentence (repeatable).",
        flag="--sentence-end-id",
        low=0,
    )
    text_column: str = option("text", "The text column crops and ICT read.")
    token_column: str = option("input_ids", "The token column, where there is no text column.")
    query_column: str = option("query", "The query column (columns mode).")
    positive_column: str = option("positive", "The positive column (columns mode).")
    id_column: str | None = id_column_option(
        "Document id column keying each row's draws ('' keys rows by position)."
    )
    seed: int = seed_option("Seed of the draws.")
    epoch: int = epoch_option("Epoch of the draws: another epoch, other pairs.")
    nulls: str = nulls_option()

    def __post_init__(self) -> None:
        super().__post_init__()
        # Any sequence (or None) of ids; held as a tuple, so the options stay hashable.
        object.__setattr__(self, "sentence_end_ids", tuple(self.sentence_end_ids or ()))

    def check(self) -> None:
        check_nulls(self.nulls)
        if self.mode not in MODES:
            raise ConfigError(f"--mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not 0.0 < self.min_ratio <= self.max_ratio <= 1.0:
            raise ConfigError(
                f"--min-ratio {self.min_ratio} and --max-ratio {self.max_ratio} are not "
                "0 < min <= max <= 1; pass e.g. 0.1 and 0.5 (Contriever's)"
            )
        if not 0.0 <= self.keep_probability <= 1.0:
            raise ConfigError(f"--keep-probability {self.keep_probability} is outside [0, 1]")
        require_u64(seed=self.seed, epoch=self.epoch)
        if any(not 0 <= i < 1 << 32 for i in self.sentence_end_ids):
            raise ConfigError(
                f"--sentence-end-ids {list(self.sentence_end_ids)} are not all token ids in "
                "[0, 2^32)"
            )


class PairsStage(Stage):
    """`pairs` over one shard at a time; `options` are the fields of
    :class:`PairsOptions` but the mode."""

    name = "pairs"

    def __init__(self, mode: str = PairsOptions.mode, **options: Any) -> None:
        self.options = PairsOptions.parse({"mode": mode, **options}, what="PairsStage")
        self.seed = self.options.seed
        self.id_column = self.options.id_column

    def params(self) -> dict[str, Any]:
        # Seed and epoch pick every crop and sentence, and the columns mode
        # keeps them too (the manifest records them): a run under another
        # seed must not find this output finished. Options the mode does not
        # read are left out, so changing one redoes nothing.
        unread = {name for names in _MODE_OPTIONS.values() for name in names}
        unread -= set(_MODE_OPTIONS[self.options.mode])
        params = asdict(self.options)
        params["sentence_end_ids"] = list(self.options.sentence_end_ids)
        return {name: value for name, value in params.items() if name not in unread}

    def _source(self, schema: pa.Schema) -> tuple[str, bool]:
        """The document column and whether it holds tokens."""
        o = self.options
        if o.text_column in schema.names and _is_text(schema.field(o.text_column).type):
            return o.text_column, False
        if o.token_column in schema.names:
            field = schema.field(o.token_column)
            if not is_token_list(field.type):
                raise SchemaError(
                    f"column '{o.token_column}' has type {field.type}, not "
                    "list<uint32> token ids; name the token column with --token-column"
                )
            return o.token_column, True
        raise SchemaError(
            f"neither a text column '{o.text_column}' nor a token column "
            f"'{o.token_column}' (the columns are: {', '.join(schema.names)}); "
            "name one with --text-column or --token-column"
        )

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        o = self.options
        if o.mode == "columns":
            query = require_column(schema, o.query_column, "--query-column")
            positive = require_column(schema, o.positive_column, "--positive-column")
            if query.type != positive.type:
                raise SchemaError(
                    f"columns '{o.query_column}' ({query.type}) and '{o.positive_column}' "
                    f"({positive.type}) differ in type; cast one so both are text or tokens"
                )
            consumed = {o.query_column, o.positive_column}
            kept = [f for f in schema if f.name not in consumed]
            self._check_free(kept)
            return pa.schema([*kept, query.with_name(QUERY), positive.with_name(POSITIVE)])
        column, tokens = self._source(schema)
        kept = [f for f in schema if f.name != column]
        self._check_free(kept)
        kind = TOKENS if tokens else pa.string()
        return pa.schema(
            [*kept, pa.field(QUERY, kind, nullable=False), pa.field(POSITIVE, kind, nullable=False)]
        )

    @staticmethod
    def _check_free(kept: list[pa.Field]) -> None:
        clash = [f.name for f in kept if f.name in (QUERY, POSITIVE)]
        if clash:
            raise SchemaError(
                f"the input already has a column '{clash[0]}' that `pairs` would write; "
                "rename or drop it first"
            )

    def process(self, batch: pa.RecordBatch, ctx: BatchContext) -> pa.RecordBatch:
        o = self.options
        schema = self.output_schema(batch.schema)
        if o.mode == "columns":
            batch, ctx = drop_nulls(batch, ctx, [o.query_column, o.positive_column], o.nulls)
            consumed = {o.query_column, o.positive_column}
            columns = [batch.column(f.name) for f in batch.schema if f.name not in consumed]
            columns += [batch.column(o.query_column), batch.column(o.positive_column)]
            return pa.RecordBatch.from_arrays(columns, schema=schema)
        column, tokens = self._source(batch.schema)
        batch, ctx = drop_nulls(batch, ctx, [column], o.nulls)
        documents = batch.column(column)
        with rows_as_read(ctx):
            if tokens:
                documents = as_uint32_tokens(documents, column)
            query, positive = _core.make_pairs(
                documents,
                ctx.row_keys(),
                mode=o.mode,
                seed=self.seed or 0,
                epoch=o.epoch,
                column=column,
                min_ratio=o.min_ratio,
                max_ratio=o.max_ratio,
                keep_probability=o.keep_probability,
                sentence_end_ids=list(o.sentence_end_ids),
            )
        kept = [batch.column(f.name) for f in batch.schema if f.name != column]
        ctx.count("pairs", batch.num_rows)
        return pa.RecordBatch.from_arrays([*kept, query, positive], schema=schema)


def pairs(
    source: str | Path, output: str | Path, mode: str = PairsOptions.mode, **options: Any
) -> RunReport:
    """Writes (query, positive) pair rows of `source`; see the module
    docstring. `options` are the fields of :class:`PairsOptions` and the run
    options of :func:`tokenmill.run_stage`."""
    fields, run = stage_keywords(PairsOptions, options, "pairs")
    return run_stage(PairsStage(mode, **fields), source, output, **run)
