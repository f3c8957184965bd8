"""`tokenize`: a text column becomes a `list<uint32>` column of token ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from tokenmill import _core
from tokenmill._core import SchemaError, Tokenizer, TokenizerError
from tokenmill.checks import check_nulls, require_text
from tokenmill.runner import BatchContext, RunReport, Stage, run_stage
from tokenmill.stages._common import drop_nulls, rows_as_read
from tokenmill.tokenizer import EOS_CANDIDATES, find_token, load_tokenizer

TOKEN_TYPE = pa.list_(pa.field("item", pa.uint32(), nullable=False))
#: Each token's word index in its document (-1: special tokens and EOS).
WORD_IDS = "word_ids"
WORD_ID_TYPE = pa.list_(pa.field("item", pa.int32(), nullable=False))


def resolve_eos(tokenizer: Tokenizer, eos_token: str | None) -> int:
    """The id of `eos_token`, or of the first known EOS spelling the vocabulary has."""
    candidates = (eos_token,) if eos_token else EOS_CANDIDATES
    token_id = find_token(tokenizer, candidates)
    if token_id is not None:
        return token_id
    raise TokenizerError(
        f"the tokenizer has no end-of-document token ({' or '.join(candidates)}); "
        "name it with --eos-token, or pass --no-eos"
    )


class TokenizeStage(Stage):
    name = "tokenize"

    def __init__(
        self,
        tokenizer: str | Path,
        *,
        text_column: str = "text",
        output_column: str = "input_ids",
        eos: bool = True,
        eos_token: str | None = None,
        add_special_tokens: bool = False,
        keep_text: bool = False,
        word_ids: bool = False,
        nulls: str = "error",
    ) -> None:
        check_nulls(nulls)
        self.nulls = nulls
        self.tokenizer_path = Path(tokenizer).resolve()
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.tokenizer_checksum = _core.file_checksum(self.tokenizer_path)
        self.text_column = text_column
        self.output_column = output_column
        self.eos_id = resolve_eos(self.tokenizer, eos_token) if eos else None
        self.add_special_tokens = add_special_tokens
        self.keep_text = keep_text
        self.word_ids = word_ids
        self.token_column = output_column

    def summary(self) -> str:
        return f"encoder: {self.tokenizer.encoder}"

    def params(self) -> dict[str, Any]:
        return {
            "tokenizer": str(self.tokenizer_path),
            "tokenizer_checksum": self.tokenizer_checksum,
            "vocab_size": self.tokenizer.vocab_size,
            "text_column": self.text_column,
            "output_column": self.output_column,
            "eos_id": self.eos_id,
            "add_special_tokens": self.add_special_tokens,
            "keep_text": self.keep_text,
            "word_ids": self.word_ids,
            "nulls": self.nulls,
        }

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        require_text(schema, self.text_column)
        clash = self.output_column in schema.names and (
            self.keep_text or self.output_column != self.text_column
        )
        if clash:
            raise SchemaError(
                f"column '{self.output_column}' already exists; "
                "name the token column with --output-column"
            )
        if self.word_ids and WORD_IDS in schema.names:
            raise SchemaError(f"column '{WORD_IDS}' already exists; drop it before --word-ids")
        field = pa.field(self.output_column, TOKEN_TYPE, nullable=False)
        index = schema.get_field_index(self.text_column)
        schema = schema.append(field) if self.keep_text else schema.set(index, field)
        return (
            schema.append(pa.field(WORD_IDS, WORD_ID_TYPE, nullable=False))
            if self.word_ids
            else schema
        )

    def process(self, batch: pa.RecordBatch, ctx: BatchContext) -> pa.RecordBatch:
        batch, ctx = drop_nulls(batch, ctx, [self.text_column], self.nulls)
        encode = self.tokenizer.tokenize_words if self.word_ids else self.tokenizer.tokenize
        with rows_as_read(ctx):
            encoded = encode(
                batch.column(self.text_column),
                column=self.text_column,
                add_special_tokens=self.add_special_tokens,
                eos_id=self.eos_id,
            )
        ids, words = encoded if isinstance(encoded, tuple) else (encoded, None)
        schema = self.output_schema(batch.schema)
        index = batch.schema.get_field_index(self.text_column)
        columns = list(batch.columns)
        if self.keep_text:
            columns.append(ids)
        else:
            columns[index] = ids
        if words is not None:
            columns.append(words)
        return pa.RecordBatch.from_arrays(columns, schema=schema)


def tokenize(
    source: str | Path,
    output: str | Path,
    tokenizer: str | Path,
    *,
    text_column: str = "text",
    output_column: str = "input_ids",
    eos: bool = True,
    eos_token: str | None = None,
    add_special_tokens: bool = False,
    keep_text: bool = False,
    word_ids: bool = False,
    nulls: str = "error",
    **run_options: Any,
) -> RunReport:
    """Tokenizes every shard of `source` into `output`; see :func:`tokenmill.run_stage`."""
    stage = TokenizeStage(
        tokenizer,
        text_column=text_column,
        output_column=output_column,
        eos=eos,
        eos_token=eos_token,
        add_special_tokens=add_special_tokens,
        keep_text=keep_text,
        word_ids=word_ids,
        nulls=nulls,
    )
    return run_stage(stage, source, output, **run_options)
