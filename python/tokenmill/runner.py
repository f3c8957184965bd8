"""The stage runner every preprocessing stage shares.

A stage is a pure function from one input shard to one output shard. The
runner owns everything around it: streaming batches in bounded memory,
writing each shard under a temporary name and renaming it into place,
skipping shards a previous run finished, the progress bar, and the manifest,
written last. Because a shard's output depends on nothing but the shard and
the parameters, shards can run in any order, in any process, and a killed run
resumes where it stopped.

:func:`run_shards` is that resume loop on its own, for work that is not a
stage (dedup's signing). The output folder's records, locks and refusals
live in :mod:`tokenmill.output`, the shard writer in :mod:`tokenmill.writer`.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tokenmill import _core
from tokenmill._core import ConfigError, InternalError, ShardError, TokenmillError
from tokenmill._fs import atomic_path, out_of_room
from tokenmill.checks import locate_error, require_id_column
from tokenmill.dataset import (
    Dataset,
    ReadAhead,
    Shard,
    open_dataset,
    prefetch,
    release_freed_memory,
)
from tokenmill.manifest import Manifest, OutputShard
from tokenmill.output import (
    STATE_DIR,
    ShardRecords,
    lock_outputs,
    prepare_output,
    refuse_foreign_output,
    refuse_output_over_input,
    refuse_unrecorded_files,
    remove_empty_output,
    write_manifest_if_complete,
)
from tokenmill.progress import StageProgress, progress_enabled
from tokenmill.writer import ShardWriter

FORMATS = ("parquet", "arrow")
DEFAULT_BATCH_ROWS = 2048
DEFAULT_ROW_GROUP_ROWS = 8192
#: A batch this large has its freed memory handed back at once (see
#: :func:`tokenmill.dataset.release_freed_memory`).
LARGE_BATCH_BYTES = 64 << 20


@dataclass
class BatchContext:
    """Where a batch sits: its shard, its first row there, and its rows' stable keys."""

    shard: str
    first_row: int
    batch: pa.RecordBatch
    id_column: str | None
    counters: dict[str, int]
    #: Each row's place in the batch as read, once rows were dropped from it.
    positions: npt.NDArray[np.int64] | None = None

    def row_keys(self) -> npt.NDArray[np.uint64]:
        """The document id column's keys when the batch has one, else (shard, row index) keys."""
        if self.id_column and self.id_column in self.batch.schema.names:
            return _core.row_keys_from_ids(self.batch.column(self.id_column), column=self.id_column)
        if self.positions is None:
            return _core.row_keys_from_position(self.shard, self.first_row, self.batch.num_rows)
        # A dropped row must not move the keys, and so the draws, of the rows after it.
        read = int(self.positions[-1]) + 1 if len(self.positions) else 0
        return _core.row_keys_from_position(self.shard, self.first_row, read)[self.positions]

    def count(self, name: str, value: int) -> None:
        """Adds to a per-shard counter that lands in the manifest."""
        self.counters[name] = self.counters.get(name, 0) + int(value)


class Stage(ABC):
    """One preprocessing step. Subclasses say what they need and what they make."""

    #: Names the stage in manifests and keys its random streams.
    name: str = ""
    #: The output column whose tokens the runner counts, if any.
    token_column: str | None = None
    #: The document id column that keys random draws, when present.
    id_column: str | None = "id"
    seed: int | None = None

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Every setting that changes the output, as JSON values."""

    @abstractmethod
    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        """The output schema for an input schema; raises SchemaError when the input won't do."""

    @abstractmethod
    def process(self, batch: pa.RecordBatch, ctx: BatchContext) -> pa.RecordBatch:
        """The output rows of one input batch. Must depend on nothing but its arguments."""

    def summary(self) -> str | None:
        """A line for the CLI to print after the run, for what the user should know
        that the counts do not say (which encoder ran, say)."""
        return None

    def manifest_totals(self) -> dict[str, int]:
        """Dataset-wide figures the stage adds to the manifest's totals."""
        return {}

    def ratios(self, totals: dict[str, int]) -> dict[str, float]:
        """Figures derived from the summed totals (a fill ratio, say), for the manifest."""
        return {}

    def begin_shard(self, shard: str) -> None:
        """Called before a shard's first batch, for stages that carry rows across batches."""
        return None

    def end_shard(self, ctx: BatchContext) -> pa.RecordBatch | None:
        """The rows still held when a shard's batches have all been processed."""
        return None


@dataclass
class RunReport:
    """What one call of :func:`run_stage` did."""

    output: Path
    complete: bool
    manifest: Manifest | None
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rows: int = 0
    tokens: int = 0
    seconds: float = 0.0
    #: A line the stage adds to what the CLI prints (see :meth:`Stage.summary`).
    summary: str | None = None


def stage_fingerprint(
    stage: Stage, fmt: str = "parquet", row_group_rows: int = DEFAULT_ROW_GROUP_ROWS
) -> str:
    """What identifies a stage's output: its name, parameters, tool version and layout."""
    identity = {
        "stage": stage.name,
        "params": stage.params(),
        "tool_version": _core.__version__,
        "format": fmt,
        "row_group_rows": row_group_rows,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def output_name(shard: Shard, fmt: str) -> str:
    """The name of the output a shard becomes: its stem, with the format's suffix."""
    return shard.path.stem + (".parquet" if fmt == "parquet" else ".arrow")


def process_shard(
    stage: Stage,
    shard: Shard,
    destination: Path,
    *,
    fmt: str = "parquet",
    batch_size: int = DEFAULT_BATCH_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    progress: StageProgress | None = None,
    read_ahead: ReadAhead | None = None,
) -> OutputShard:
    """Runs `stage` over one shard into `destination`, atomically.

    This is the unit a distributed engine would schedule: it reads one file,
    writes one file, and shares nothing with other shards. A run's
    `read_ahead` (built with the same `batch_size`) reads its next shard
    while this one is worked on.
    """
    try:
        schema = stage.output_schema(shard.schema)
    except TokenmillError as err:
        raise locate_error(err, shard) from None
    counters: dict[str, int] = {}
    rows = tokens = 0
    first_row = 0
    stage.begin_shard(shard.name)
    try:
        with atomic_path(destination) as temporary:
            writer = ShardWriter(temporary, schema, fmt, row_group_rows)
            try:
                batches = (
                    read_ahead.batches(shard)
                    if read_ahead is not None
                    else prefetch(shard.iter_batches(batch_size))
                )
                while True:
                    batch = next(batches, None)
                    # A batch of None marks the shard's end: the stage gives up what it holds.
                    current = batch if batch is not None else _empty_batch(shard)
                    ctx = BatchContext(shard.name, first_row, current, stage.id_column, counters)
                    try:
                        result = (
                            stage.process(batch, ctx) if batch is not None else stage.end_shard(ctx)
                        )
                    except TokenmillError as err:
                        raise locate_error(err, shard, first_row) from None
                    finished, rows_in = batch is None, current.num_rows
                    large = current.nbytes >= LARGE_BATCH_BYTES
                    # The input is done with: a long document in it need not
                    # stay while the result is written.
                    del current, ctx
                    batch = None
                    if large:
                        release_freed_memory()
                    if result is not None:
                        if not result.schema.equals(schema):
                            raise InternalError(
                                f"stage {stage.name} produced {result.schema} instead of {schema}; "
                                "please report this"
                            )
                        writer.write(result)
                        rows += result.num_rows
                    batch_tokens = _count_tokens(result, stage.token_column)
                    tokens += batch_tokens
                    if progress is not None:
                        progress.advance(rows_in, batch_tokens)
                    if finished:
                        break
                    first_row += rows_in
            finally:
                writer.close()
    except OSError as err:
        if not out_of_room(err):
            raise
        raise ShardError(
            f"{destination}: no room to write the shard ({err}); free disk space (or raise the "
            "file size limit) and rerun, which resumes, or choose another -o"
        ) from None
    return OutputShard(
        name=destination.name,
        rows=rows,
        tokens=tokens,
        bytes=destination.stat().st_size,
        input=shard.name,
        stats=counters,
    )


def _empty_batch(shard: Shard) -> pa.RecordBatch:
    schema = shard.schema
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


def _count_tokens(batch: pa.RecordBatch | None, column: str | None) -> int:
    if batch is None or column is None or batch.num_rows == 0:
        return 0
    offsets = batch.column(column).offsets
    return int(offsets[-1].as_py() - offsets[0].as_py())


class ShardWork(ABC):
    """Work done shard by shard that a killed run resumes, run by :func:`run_shards`.

    What it writes for a shard must depend on nothing but the shard and the
    fingerprint of its records; each file it writes must appear whole or not
    at all (see :func:`tokenmill._fs.atomic_path`).
    """

    @abstractmethod
    def record_name(self, shard: Shard) -> str:
        """The name of the shard's record among the records."""

    @abstractmethod
    def files(self, shard: Shard) -> list[Path]:
        """Every file the work writes for `shard`."""

    @abstractmethod
    def run(self, shard: Shard) -> dict[str, Any]:
        """Writes the shard's files; returns what to record of them, as JSON values."""


@dataclass
class ShardDone:
    """One shard :func:`run_shards` went through: what its work reported, now or before."""

    shard: Shard
    output: dict[str, Any]
    #: An earlier run had done it: its record's output, nothing written.
    skipped: bool


def run_shards(
    work: ShardWork,
    shards: Sequence[Shard],
    records: ShardRecords,
    bar: StageProgress,
    *,
    overwrite: bool = False,
) -> Iterator[ShardDone]:
    """Runs `work` over `shards` in order, skipping each shard that a run with
    the records' fingerprint already did from the same input (its checksum),
    its files still the sizes recorded; `overwrite=True` redoes every one.

    A shard is recorded before its files exist and after: the first record
    lets a run killed between writing them and the second still own them (see
    :func:`tokenmill.output.refuse_unrecorded_files`); it goes again when the
    work fails before any file came. The caller holds the lock on what the
    work writes.
    """
    for shard in shards:
        name, files = work.record_name(shard), work.files(shard)
        checksum = _core.file_checksum(shard.path)
        done = None if overwrite else records.finished(name, checksum, files)
        if done is not None:
            bar.shard_done(rows_skipped=shard.num_rows)
            yield ShardDone(shard, done, skipped=True)
            continue
        records.claim(name, checksum)
        try:
            output = work.run(shard)
        except BaseException:
            if not any(path.exists() for path in files):
                records.drop(name)
            raise
        records.finish(name, checksum, shard.size_bytes, output, files)
        bar.shard_done()
        yield ShardDone(shard, output, skipped=False)


class _StageWork(ShardWork):
    """:func:`process_shard` for each shard, into the output named for it."""

    def __init__(
        self,
        stage: Stage,
        out: Path,
        names: dict[str, str],
        fmt: str,
        batch_size: int,
        row_group_rows: int,
        bar: StageProgress,
        read_ahead: ReadAhead,
    ) -> None:
        self.stage, self.out, self.names, self.fmt = stage, out, names, fmt
        self.batch_size, self.row_group_rows, self.bar = batch_size, row_group_rows, bar
        self.read_ahead = read_ahead

    def record_name(self, shard: Shard) -> str:
        return self.names[shard.name]

    def files(self, shard: Shard) -> list[Path]:
        return [self.out / self.names[shard.name]]

    def run(self, shard: Shard) -> dict[str, Any]:
        made = process_shard(
            self.stage,
            shard,
            self.out / self.names[shard.name],
            fmt=self.fmt,
            batch_size=self.batch_size,
            row_group_rows=self.row_group_rows,
            progress=self.bar,
            read_ahead=self.read_ahead,
        )
        return asdict(made)


def run_stage(
    stage: Stage,
    source: str | Path | Dataset,
    output: str | Path,
    *,
    overwrite: bool = False,
    fmt: str = "parquet",
    batch_size: int = DEFAULT_BATCH_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    shards: Sequence[str] | None = None,
    progress: bool | None = None,
) -> RunReport:
    """Runs `stage` over every shard of `source` into the folder `output`.

    Shards finished by an earlier run with the same parameters are skipped
    (`overwrite=True` redoes them). `shards` limits the run to some shard
    names, for running a dataset's shards in separate processes; the
    manifest is written by whichever run completes the last shard.
    """
    started = time.perf_counter()
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if batch_size <= 0 or row_group_rows <= 0:
        raise ConfigError("batch_size and row_group_rows must be positive")
    dataset = source if isinstance(source, Dataset) else open_dataset(source)
    out = Path(output)
    refuse_output_over_input(out, dataset)

    selected = _select(dataset, shards)
    names = {shard.name: output_name(shard, fmt) for shard in dataset.shards}
    if len(set(names.values())) != len(names):
        raise ConfigError(
            f"{dataset.root}: two shards share a stem and would overwrite each other's "
            "output; rename one"
        )
    for shard in selected:  # every schema problem surfaces before anything is written
        try:
            require_id_column(shard.schema, stage.id_column)
            stage.output_schema(shard.schema)
        except TokenmillError as err:
            raise locate_error(err, shard) from None

    fingerprint = stage_fingerprint(stage, fmt, row_group_rows)
    outputs = [names[shard.name] for shard in selected]
    if not overwrite:
        refuse_foreign_output(out, fingerprint)
        refuse_unrecorded_files(out, outputs)
    created = not out.exists()

    report = RunReport(output=out, complete=False, manifest=None)
    total_rows = sum(shard.num_rows for shard in selected)
    records = ShardRecords(out / STATE_DIR, fingerprint)
    try:
        with lock_outputs(out, outputs):
            every_shard = set(outputs) == set(names.values())
            prepare_output(out, outputs, overwrite, every_shard=every_shard)
            with StageProgress(
                stage.name, total_rows, len(selected), progress_enabled(progress)
            ) as bar:
                read_ahead = ReadAhead(selected, batch_size)
                work = _StageWork(
                    stage, out, names, fmt, batch_size, row_group_rows, bar, read_ahead
                )
                try:
                    for done in run_shards(work, selected, records, bar, overwrite=overwrite):
                        name = names[done.shard.name]
                        if done.skipped:
                            report.skipped.append(name)
                            continue
                        report.written.append(name)
                        report.rows += done.output["rows"]
                        report.tokens += done.output["tokens"]
                finally:
                    read_ahead.close()
            report.manifest = write_manifest_if_complete(stage, dataset, out, fingerprint, names)
    except BaseException:
        if created:
            remove_empty_output(out)
        raise
    report.complete = report.manifest is not None
    report.summary = stage.summary()
    report.seconds = time.perf_counter() - started
    return report


def _select(dataset: Dataset, shards: Sequence[str] | None) -> list[Shard]:
    if shards is None:
        return list(dataset.shards)
    by_name = {shard.name: shard for shard in dataset.shards}
    unknown = [name for name in shards if name not in by_name]
    if unknown:
        raise ConfigError(
            f"{dataset.root}: no shard named {', '.join(unknown)}; "
            f"the shards are {', '.join(sorted(by_name))}"
        )
    return [by_name[name] for name in shards]
