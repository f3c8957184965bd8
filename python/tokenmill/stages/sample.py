"""`sample`: keep a deterministic random fraction of rows (or the rest, for a held-out split)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from tokenmill import _core
from tokenmill._core import ConfigError
from tokenmill.checks import filter_rows, is_token_list, require_u64
from tokenmill.runner import BatchContext, RunReport, Stage, run_stage


class SampleStage(Stage):
    name = "sample"
    seed: int

    def __init__(
        self,
        fraction: float,
        *,
        seed: int = 0,
        invert: bool = False,
        id_column: str | None = "id",
        epoch: int = 0,
        token_column: str | None = None,
    ) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"fraction {fraction} is outside [0, 1]; pass --fraction in [0, 1]")
        require_u64(seed=seed, epoch=epoch)
        self.fraction = fraction
        self.seed = seed
        self.invert = invert
        self.id_column = id_column or None
        self.epoch = epoch
        self.token_column = token_column

    def params(self) -> dict[str, Any]:
        return {
            "fraction": self.fraction,
            "seed": self.seed,
            "invert": self.invert,
            "id_column": self.id_column,
            "epoch": self.epoch,
        }

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        # Token shards keep their token count in the manifest.
        tokens = "input_ids"
        has_tokens = tokens in schema.names and is_token_list(schema.field(tokens).type)
        self.token_column = tokens if has_tokens else None
        return schema

    def process(self, batch: pa.RecordBatch, ctx: BatchContext) -> pa.RecordBatch:
        mask = _core.keep_mask(
            ctx.row_keys(),
            seed=self.seed,
            fraction=self.fraction,
            invert=self.invert,
            stage=self.name,
            epoch=self.epoch,
        )
        kept = filter_rows(batch, pa.array(mask))
        ctx.count("rows_in", batch.num_rows)
        ctx.count("rows_kept", kept.num_rows)
        return kept


def sample(
    source: str | Path,
    output: str | Path,
    fraction: float,
    *,
    seed: int = 0,
    invert: bool = False,
    id_column: str | None = "id",
    epoch: int = 0,
    **run_options: Any,
) -> RunReport:
    """Keeps each row with probability `fraction`, decided by its row key alone.

    `sample(..., invert=True)` with the same seed keeps exactly the other rows,
    so the two calls split a dataset into disjoint parts.
    """
    stage = SampleStage(fraction, seed=seed, invert=invert, id_column=id_column, epoch=epoch)
    return run_stage(stage, source, output, **run_options)
