"""Schema checks the stages share."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill._core import ConfigError, DataError, SchemaError
from tokenmill.batch import data_error
from tokenmill.options import Options, keywords_of, option

if TYPE_CHECKING:
    from tokenmill.runner import BatchContext

#: What a stage does with a row whose text or tokens are null.
NULLS = ("error", "skip")
NULLS_FIX = "drop or fill null rows, or pass --nulls skip"


def nulls_option() -> Any:
    """`nulls`, the same on every stage that reads text or tokens."""
    return option(
        "error",
        "A row whose text or tokens are null: stop with an error naming it, or skip "
        "it (counted as rows_null).",
        choices=NULLS,
    )


def stage_keywords(
    options: type[Options], given: Mapping[str, Any], what: str, *, own: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stage function's keyword arguments as (its options' fields, the run
    options of :func:`tokenmill.run_stage`); any other name is a ConfigError
    naming every keyword the function takes: the fields, its `own`
    keywords, the run options."""
    from tokenmill.runner import run_stage  # the runner imports this module

    return options.split(given, what=what, also=(*own, *keywords_of(run_stage)))


#: One past the largest seed, epoch or count the Rust kernels take (a u64).
U64_END = 1 << 64


def require_u64(**values: int) -> None:
    """A ConfigError for a seed, epoch or count outside [0, 2^64): past it the
    kernels' argument conversion would raise OverflowError instead."""
    for name, value in values.items():
        if not 0 <= value < U64_END:
            option = "--" + name.replace("_", "-")
            raise ConfigError(f"{option} {value} is not a non-negative integer below 2^64")


def require_column(schema: pa.Schema, column: str, option: str) -> pa.Field:
    """The field `column`, or a SchemaError that lists the columns there are."""
    if column not in schema.names:
        raise SchemaError(
            f"column '{column}' is missing (the columns are: {', '.join(schema.names)}); "
            f"name the right one with {option}"
        )
    field: pa.Field = schema.field(column)
    return field


def require_id_column(schema: pa.Schema, column: str | None) -> None:
    """A named id column must exist: keying rows by position instead would
    change every draw silently. Only the default `id` may fall back."""
    if column not in (None, "id"):
        require_column(schema, column, "--id-column ('' keys rows by position)")


def _is_string_view(t: pa.DataType) -> bool:
    return bool(getattr(pa.types, "is_string_view", lambda _: False)(t))


def as_text(column: pa.Array) -> pa.Array:
    """A text column in a type every Arrow kernel takes: string_view becomes large_string."""
    return column.cast(pa.large_string()) if _is_string_view(column.type) else column


def filter_rows(batch: pa.RecordBatch, mask: pa.Array) -> pa.RecordBatch:
    """`batch.filter(mask)`, string_view columns included: Arrow has no filter
    kernel for them, so they pass through large_string and keep their type."""
    views = [i for i, f in enumerate(batch.schema) if _is_string_view(f.type)]
    if not views:
        return batch.filter(mask)
    columns = [as_text(c) for c in batch.columns]
    kept = pa.RecordBatch.from_arrays(columns, names=batch.schema.names).filter(mask)
    restored = [
        c.cast(batch.schema.field(i).type) if i in views else c for i, c in enumerate(kept.columns)
    ]
    return pa.RecordBatch.from_arrays(restored, schema=batch.schema)


def require_text(schema: pa.Schema, column: str, option: str = "--text-column") -> pa.Field:
    field = require_column(schema, column, option)
    t = field.type
    if not (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or _is_string_view(t)
    ):
        raise SchemaError(
            f"column '{column}' has type {t}, but this stage reads text; "
            f"name a string column with {option}, or cast this one to string"
        )
    return field


def is_token_list(t: pa.DataType) -> bool:
    """`list<uint32>`, or `list<int32>` (accepted when its ids are non-negative)."""
    return bool(
        pa.types.is_list(t)
        and (pa.types.is_uint32(t.value_type) or pa.types.is_int32(t.value_type))
    )


def as_uint32_tokens(column: pa.Array, name: str) -> pa.Array:
    """A token column as `list<uint32>`, checking that `list<int32>` ids are not negative."""
    if pa.types.is_uint32(column.type.value_type):
        return column
    import pyarrow.compute as pc

    low = pc.min(column.flatten()).as_py()
    if low is not None and low < 0:
        # The row, so the runner can name it in the shard: the first list holding a negative id.
        ids = pc.list_flatten(column)
        at = int(np.argmax(pc.less(ids, 0).to_numpy(zero_copy_only=False)))
        offsets = column.offsets.to_numpy()
        row = int(np.searchsorted(offsets, at + offsets[0], side="right")) - 1
        problem = f"column '{name}' holds the negative token id {ids[at].as_py()}"
        fix = "token ids are vocabulary indices, never negative: re-tokenize this shard"
        err = DataError(f"row {row}: {problem}; {fix}")
        err.row, err.problem, err.fix = row, problem, fix
        raise err
    return column.cast(pa.list_(pa.field("item", pa.uint32(), nullable=False)))


def check_nulls(nulls: str) -> None:
    if nulls not in NULLS:
        raise ConfigError(f"--nulls {nulls!r} is not one of {', '.join(NULLS)}")


def null_row_error(row: int, column: str, fix: str = NULLS_FIX) -> DataError:
    """A DataError naming the row of the batch; the runner adds the shard and the row there."""
    return data_error(row, f"column '{column}' is null here", fix)


def null_rows(column: pa.Array) -> np.ndarray:
    """Where `column` is null, or, for a list of lists (negatives), holds a null list."""
    null = column.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_list(column.type) and not pa.types.is_integer(column.type.value_type):
        inner = column.flatten().is_null()
        parents = pc.list_parent_indices(column).to_numpy()
        null[parents[inner.to_numpy(zero_copy_only=False)]] = True
    return np.asarray(null, dtype=bool)


def refuse_nulls(table: pa.Table | pa.RecordBatch, columns: Sequence[str], fix: str) -> None:
    """A DataError naming the first row where one of `columns` is null
    (and, of several columns null there, the first named)."""
    first: tuple[int, str] | None = None
    for column in columns:
        null = null_rows(_array(table.column(column)))
        if null.any() and (first is None or int(np.flatnonzero(null)[0]) < first[0]):
            first = (int(np.flatnonzero(null)[0]), column)
    if first is not None:
        raise null_row_error(*first, fix)


def at_row(err: DataError, row: int, problem: str | None = None) -> DataError:
    """`err`, naming `row` of the batch instead of its own (and `problem`, if given)."""
    problem = problem or getattr(err, "problem", None) or str(err)
    return data_error(row, problem, getattr(err, "fix", ""))


@contextlib.contextmanager
def rows_as_read(ctx: BatchContext) -> Iterator[None]:
    """A DataError raised in the block names a row of the batch without the
    rows :func:`drop_nulls` dropped; this maps it back to the batch as read,
    whose rows the runner counts in the shard."""
    try:
        yield
    except DataError as err:
        row = getattr(err, "row", None)
        if ctx.positions is None or row is None or not 0 <= row < len(ctx.positions):
            raise
        raise at_row(err, int(ctx.positions[row])) from None


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def drop_nulls(
    batch: pa.RecordBatch, ctx: BatchContext, columns: Sequence[str], nulls: str
) -> tuple[pa.RecordBatch, BatchContext]:
    """The rule every stage keeps for null text or tokens: a DataError naming
    the row (`nulls="error"`), or the batch without those rows, counted as
    `rows_null` (`nulls="skip"`), with a context that keeps each row's key."""
    if nulls == "error":
        refuse_nulls(batch, columns, NULLS_FIX)
        return batch, ctx
    null = np.zeros(batch.num_rows, dtype=bool)
    for column in columns:
        null |= null_rows(batch.column(column))
    ctx.count("rows_null", int(null.sum()))
    if not null.any():
        return batch, ctx
    kept = filter_rows(batch, pa.array(~null))
    return kept, dataclasses.replace(ctx, batch=kept, positions=np.flatnonzero(~null))
