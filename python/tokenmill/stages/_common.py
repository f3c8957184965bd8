"""Schema checks the stages share."""

from __future__ import annotations

import pyarrow as pa

from tokenmill._core import SchemaError


def require_column(schema: pa.Schema, column: str, option: str) -> pa.Field:
    """The field `column`, or a SchemaError that lists the columns there are."""
    if column not in schema.names:
        raise SchemaError(
            f"column '{column}' is missing (the columns are: {', '.join(schema.names)}); "
            f"name the right one with {option}"
        )
    field: pa.Field = schema.field(column)
    return field


def require_text(schema: pa.Schema, column: str, option: str = "--text-column") -> pa.Field:
    field = require_column(schema, column, option)
    t = field.type
    if not (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or getattr(pa.types, "is_string_view", lambda _: False)(t)
    ):
        raise SchemaError(
            f"column '{column}' has type {t}, but this stage reads text; "
            f"name a string column with {option}, or cast this one to string"
        )
    return field
