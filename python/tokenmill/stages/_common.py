"""Schema checks the stages share."""

from __future__ import annotations

import pyarrow as pa

from tokenmill._core import DataError, SchemaError


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
        raise DataError(
            f"column '{name}' holds the negative token id {low}; token ids are vocabulary "
            "indices, never negative"
        )
    return column.cast(pa.list_(pa.field("item", pa.uint32(), nullable=False)))
