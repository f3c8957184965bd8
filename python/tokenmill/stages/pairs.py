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
from tokenmill.runner import BatchContext, RunReport, Stage, run_stage
from tokenmill.stages._common import drop_nulls, rows_as_read

MODES = ("crop", "ict", "columns")
QUERY, POSITIVE = "query", "positive"


def _is_text(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or getattr(pa.types, "is_string_view", lambda _: False)(t)
    )


TOKENS = pa.list_(pa.field("item", pa.uint32(), nullable=False))


class PairsStage(Stage):
    name = "pairs"

    def __init__(
        self,
        mode: str = "crop",
        *,
        min_ratio: float = 0.1,
        max_ratio: float = 0.5,
        keep_probability: float = 0.1,
        sentence_end_ids: list[int] | None = None,
        text_column: str = "text",
        token_column: str = "input_ids",
        query_column: str = "query",
        positive_column: str = "positive",
        id_column: str | None = "id",
        seed: int = 0,
        epoch: int = 0,
        nulls: str = "error",
    ) -> None:
        check_nulls(nulls)
        if mode not in MODES:
            raise ConfigError(f"--mode {mode!r} is not one of {', '.join(MODES)}")
        if not 0.0 < min_ratio <= max_ratio <= 1.0:
            raise ConfigError(
                f"--min-ratio {min_ratio} and --max-ratio {max_ratio} are not "
                "0 < min <= max <= 1; pass e.g. 0.1 and 0.5 (Contriever's)"
            )
        if not 0.0 <= keep_probability <= 1.0:
            raise ConfigError(f"--keep-probability {keep_probability} is outside [0, 1]")
        require_u64(seed=seed, epoch=epoch)
        if any(not 0 <= i < 1 << 32 for i in sentence_end_ids or []):
            raise ConfigError(
                f"--sentence-end-ids {sentence_end_ids} are not all token ids in [0, 2^32)"
            )
        self.mode = mode
        self.nulls = nulls
        self.min_ratio = min_ratio
        self.max_ratio = max_ratio
        self.keep_probability = keep_probability
        self.sentence_end_ids = list(sentence_end_ids or [])
        self.text_column = text_column
        self.input_token_column = token_column
        self.query_column = query_column
        self.positive_column = positive_column
        self.id_column = id_column
        self.seed = seed
        self.epoch = epoch

    def params(self) -> dict[str, Any]:
        # Seed and epoch pick every crop and sentence, and the columns mode
        # keeps them too (the manifest records them): a run under another
        # seed must not find this output finished.
        params: dict[str, Any] = {
            "mode": self.mode,
            "id_column": self.id_column,
            "seed": self.seed,
            "epoch": self.epoch,
            "nulls": self.nulls,
        }
        if self.mode == "crop":
            params.update(min_ratio=self.min_ratio, max_ratio=self.max_ratio)
        if self.mode == "ict":
            params.update(
                keep_probability=self.keep_probability, sentence_end_ids=self.sentence_end_ids
            )
        if self.mode == "columns":
            params.update(query_column=self.query_column, positive_column=self.positive_column)
        else:
            params.update(text_column=self.text_column, token_column=self.input_token_column)
        return params

    def _source(self, schema: pa.Schema) -> tuple[str, bool]:
        """The document column and whether it holds tokens."""
        if self.text_column in schema.names and _is_text(schema.field(self.text_column).type):
            return self.text_column, False
        if self.input_token_column in schema.names:
            field = schema.field(self.input_token_column)
            if not is_token_list(field.type):
                raise SchemaError(
                    f"column '{self.input_token_column}' has type {field.type}, not "
                    "list<uint32> token ids; name the token column with --token-column"
                )
            return self.input_token_column, True
        raise SchemaError(
            f"neither a text column '{self.text_column}' nor a token column "
            f"'{self.input_token_column}' (the columns are: {', '.join(schema.names)}); "
            "name one with --text-column or --token-column"
        )

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        if self.mode == "columns":
            query = require_column(schema, self.query_column, "--query-column")
            positive = require_column(schema, self.positive_column, "--positive-column")
            if query.type != positive.type:
                raise SchemaError(
                    f"columns '{self.query_column}' ({query.type}) and '{self.positive_column}' "
                    f"({positive.type}) differ in type; cast one so both are text or tokens"
                )
            consumed = {self.query_column, self.positive_column}
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
        schema = self.output_schema(batch.schema)
        if self.mode == "columns":
            batch, ctx = drop_nulls(
                batch, ctx, [self.query_column, self.positive_column], self.nulls
            )
            consumed = {self.query_column, self.positive_column}
            columns = [batch.column(f.name) for f in batch.schema if f.name not in consumed]
            columns += [batch.column(self.query_column), batch.column(self.positive_column)]
            return pa.RecordBatch.from_arrays(columns, schema=schema)
        column, tokens = self._source(batch.schema)
        batch, ctx = drop_nulls(batch, ctx, [column], self.nulls)
        documents = batch.column(column)
        with rows_as_read(ctx):
            if tokens:
                documents = as_uint32_tokens(documents, column)
            query, positive = _core.make_pairs(
                documents,
                ctx.row_keys(),
                mode=self.mode,
                seed=self.seed or 0,
                epoch=self.epoch,
                column=column,
                min_ratio=self.min_ratio,
                max_ratio=self.max_ratio,
                keep_probability=self.keep_probability,
                sentence_end_ids=self.sentence_end_ids,
            )
        kept = [batch.column(f.name) for f in batch.schema if f.name != column]
        ctx.count("pairs", batch.num_rows)
        return pa.RecordBatch.from_arrays([*kept, query, positive], schema=schema)


def pairs(
    source: str | Path,
    output: str | Path,
    mode: str = "crop",
    *,
    min_ratio: float = 0.1,
    max_ratio: float = 0.5,
    keep_probability: float = 0.1,
    sentence_end_ids: list[int] | None = None,
    text_column: str = "text",
    token_column: str = "input_ids",
    query_column: str = "query",
    positive_column: str = "positive",
    id_column: str | None = "id",
    seed: int = 0,
    epoch: int = 0,
    nulls: str = "error",
    **run_options: Any,
) -> RunReport:
    """Writes (query, positive) pair rows of `source`; see the module docstring."""
    stage = PairsStage(
        mode,
        min_ratio=min_ratio,
        max_ratio=max_ratio,
        keep_probability=keep_probability,
        sentence_end_ids=sentence_end_ids,
        text_column=text_column,
        token_column=token_column,
        query_column=query_column,
        positive_column=positive_column,
        id_column=id_column,
        seed=seed,
        epoch=epoch,
        nulls=nulls,
    )
    return run_stage(stage, source, output, **run_options)
