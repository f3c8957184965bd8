"""`tokenize`: a text column becomes a `list<uint32>` column of token ids."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tokenmill import _core
from tokenmill._core import SchemaError, Tokenizer, TokenizerError
from tokenmill.checks import check_nulls, require_text
from tokenmill.options import Options, option
from tokenmill.runner import BatchContext, RunReport, Stage, run_stage
from tokenmill.stages._common import drop_nulls, nulls_option, rows_as_read, stage_keywords
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


@dataclass(frozen=True)
class TokenizeOptions(Options):
    """The options of `tokenize` (and of `tokenmill tokenize`)."""

    tokenizer: str = option(help="A Hugging Face tokenizer.json.", path=True)
    text_column: str = option(
        "text",
        "The column to tokenize (string, large string, string view or binary; binary "
        "rows must be UTF-8).",
    )
    output_column: str = option("input_ids", "The token column; it takes the text column's place.")
    eos: bool = option(True, "Append the end-of-document token to every document.")
    eos_token: str | None = option(
        None,
        "Which token ends a document.",
        shown=f"the first of {', '.join(EOS_CANDIDATES)}",
    )
    add_special_tokens: bool = option(
        False, "Run the tokenizer's post-processor (e.g. BERT's [CLS] ... [SEP])."
    )
    keep_text: bool = option(False, "Keep the text column beside the tokens.")
    word_ids: bool = option(
        False, "Also save each token's word index (word_ids), for whole-word masking."
    )
    nulls: str = nulls_option()

    def check(self) -> None:
        check_nulls(self.nulls)


class TokenizeStage(Stage):
    """`tokenize` over one shard at a time; `options` are the fields of
    :class:`TokenizeOptions` but the tokenizer."""

    name = "tokenize"

    def __init__(self, tokenizer: str | Path, **options: Any) -> None:
        self.options = o = TokenizeOptions.parse(
            {"tokenizer": tokenizer, **options}, what="TokenizeStage"
        )
        self.tokenizer_path = Path(o.tokenizer).resolve()
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.tokenizer_checksum = _core.file_checksum(self.tokenizer_path)
        self.eos_id = resolve_eos(self.tokenizer, o.eos_token) if o.eos else None
        self.token_column = o.output_column

    def summary(self) -> str:
        return f"encoder: {self.tokenizer.encoder}"

    def params(self) -> dict[str, Any]:
        params = asdict(self.options)
        # Recorded as what they resolve to: the tokenizer by its content,
        # `eos` and `eos_token` by the id they give.
        del params["eos"], params["eos_token"]
        return {
            **params,
            "tokenizer": str(self.tokenizer_path),
            "tokenizer_checksum": self.tokenizer_checksum,
            "vocab_size": self.tokenizer.vocab_size,
            "eos_id": self.eos_id,
        }

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        o = self.options
        require_text(schema, o.text_column)
        clash = o.output_column in schema.names and (
            o.keep_text or o.output_column != o.text_column
        )
        if clash:
            raise SchemaError(
                f"column '{o.output_column}' already exists; "
                "name the token column with --output-column"
            )
        if o.word_ids and WORD_IDS in schema.names:
            raise SchemaError(f"column '{WORD_IDS}' already exists; drop it before --word-ids")
        field = pa.field(o.output_column, TOKEN_TYPE, nullable=False)
        index = schema.get_field_index(o.text_column)
        schema = schema.append(field) if o.keep_text else schema.set(index, field)
        return (
            schema.append(pa.field(WORD_IDS, WORD_ID_TYPE, nullable=False))
            if o.word_ids
            else schema
        )

    def process(self, batch: pa.RecordBatch, ctx: BatchContext) -> pa.RecordBatch:
        o = self.options
        batch, ctx = drop_nulls(batch, ctx, [o.text_column], o.nulls)
        encode = self.tokenizer.tokenize_words if o.word_ids else self.tokenizer.tokenize
        with rows_as_read(ctx):
            encoded = encode(
                batch.column(o.text_column),
                column=o.text_column,
                add_special_tokens=o.add_special_tokens,
                eos_id=self.eos_id,
            )
        ids, words = encoded if isinstance(encoded, tuple) else (encoded, None)
        schema = self.output_schema(batch.schema)
        index = batch.schema.get_field_index(o.text_column)
        columns = list(batch.columns)
        if o.keep_text:
            columns.append(ids)
        else:
            columns[index] = ids
        if words is not None:
            columns.append(words)
        return pa.RecordBatch.from_arrays(columns, schema=schema)


def tokenize(
    source: str | Path, output: str | Path, tokenizer: str | Path, **options: Any
) -> RunReport:
    """Tokenizes every shard of `source` into `output`. `options` are the
    fields of :class:`TokenizeOptions` and the run options of
    :func:`tokenmill.run_stage`."""
    fields, run = stage_keywords(TokenizeOptions, options, "tokenize")
    return run_stage(TokenizeStage(tokenizer, **fields), source, output, **run)
