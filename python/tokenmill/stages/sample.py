"""`sample`: keep a deterministic random fraction of rows (or the rest, for a held-out split)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tokenmill import _core
from tokenmill._core import ConfigError
from tokenmill.checks import filter_rows, is_token_list, require_u64
from tokenmill.options import Options, epoch_option, id_column_option, option, seed_option
from tokenmill.runner import BatchContext, RunReport, Stage, run_stage
from tokenmill.stages._common import stage_keywords


@dataclass(frozen=True)
class SampleOptions(Options):
    """The options of `sample` (and of `tokenmill sample`)."""

    fraction: float = option(help="Probability of keeping each row.", low=0.0, high=1.0)
    seed: int = seed_option("Seed of the draws.")
    invert: bool = option(False, "Keep exactly the rows the same seed and fraction would drop.")
    id_column: str | None = id_column_option(
        "Document id column keying each row's draw ('' keys rows by position)."
    )
    epoch: int = epoch_option("Epoch of the draws: another epoch, another sample.")

    def check(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(
                f"fraction {self.fraction} is outside [0, 1]; pass --fraction in [0, 1]"
            )
        require_u64(seed=self.seed, epoch=self.epoch)


class SampleStage(Stage):
    """`sample` over one shard at a time; `options` are the fields of
    :class:`SampleOptions` but the fraction."""

    name = "sample"
    seed: int

    def __init__(self, fraction: float, **options: Any) -> None:
        self.options = SampleOptions.parse({"fraction": fraction, **options}, what="SampleStage")
        self.seed = self.options.seed
        self.id_column = self.options.id_column
        self.token_column: str | None = None

    def params(self) -> dict[str, Any]:
        return asdict(self.options)

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
            fraction=self.options.fraction,
            invert=self.options.invert,
            stage=self.name,
            epoch=self.options.epoch,
        )
        kept = filter_rows(batch, pa.array(mask))
        ctx.count("rows_in", batch.num_rows)
        ctx.count("rows_kept", kept.num_rows)
        return kept


def sample(source: str | Path, output: str | Path, fraction: float, **options: Any) -> RunReport:
    """Keeps each row with probability `fraction`, decided by its row key alone.

    `sample(..., invert=True)` with the same seed keeps exactly the other rows,
    so the two calls split a dataset into disjoint parts. `options` are the
    fields of :class:`SampleOptions` and the run options of
    :func:`tokenmill.run_stage`.
    """
    fields, run = stage_keywords(SampleOptions, options, "sample")
    return run_stage(SampleStage(fraction, **fields), source, output, **run)
