"""Checks of input columns and values, and the errors they raise, shared by
the library and its stages: a missing or mistyped column, a null row, a
seed out of range, an error named by the file and row it comes from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill._core import ConfigError, DataError, SchemaError, TokenmillError
from tokenmill.batch import data_error

if TYPE_CHECKING:
    from tokenmill.dataset import Shard

#: What a stage does with a row whose text or tokens are null.
NULLS = ("error", "skip")
NULLS_FIX = "drop or fill null rows, or pass --nulls skip"


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


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def locate_error(err: TokenmillError, shard: Shard, first_row: int = 0) -> TokenmillError:
    """The same exception type, its message now naming the file (and the absolute row)."""
    row_in_batch = getattr(err, "row", None)
    if isinstance(err, DataError) and row_in_batch is not None:
        row = first_row + row_in_batch
        problem, fix = getattr(err, "problem", str(err)), getattr(err, "fix", "")
        located = DataError(f"{shard.path}: row {row}: {problem}; {fix}")
        located.row, located.problem, located.fix = row, problem, fix
        return located
    if str(err).startswith(str(shard.path)):
        return err
    return type(err)(f"{shard.path}: {err}")
