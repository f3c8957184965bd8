"""What the stages share: null handling on the runner's batches, the `nulls`
option, and how a stage function splits its keywords."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from tokenmill._core import DataError
from tokenmill.checks import NULLS, NULLS_FIX, at_row, filter_rows, null_rows, refuse_nulls
from tokenmill.options import Options, keywords_of, option
from tokenmill.runner import BatchContext, run_stage


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
    return options.split(given, what=what, also=(*own, *keywords_of(run_stage)))


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
