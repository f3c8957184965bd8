"""The stage runner every preprocessing stage shares.

A stage is a pure function from one input shard to one output shard. The
runner owns everything around it: streaming batches in bounded memory,
writing each shard under a temporary name and renaming it into place,
skipping shards a previous run finished, the progress bar, and the manifest,
written last. Because a shard's output depends on nothing but the shard and
the parameters, shards can run in any order, in any process, and a killed run
resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill import _core
from tokenmill._core import ConfigError, DataError, InternalError, ShardError, TokenmillError
from tokenmill._fs import atomic_path, remove_temporaries, write_atomic
from tokenmill.dataset import Dataset, Shard, open_dataset, prefetch, release_freed_memory
from tokenmill.manifest import MANIFEST_NAME, InputShard, Manifest, OutputShard
from tokenmill.progress import StageProgress, progress_enabled
from tokenmill.stages._common import require_id_column

STATE_DIR = ".tokenmill"
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


def _statistics_columns(schema: pa.Schema) -> list[str]:
    """The Parquet leaf columns of `schema` that get min/max statistics: all
    but the byte arrays (text, binary), found in the file pyarrow writes for
    an empty table, so nested columns are named as Parquet names them."""
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    parquet = pq.read_metadata(pa.BufferReader(sink.getvalue())).schema
    columns = (parquet.column(i) for i in range(len(parquet)))
    return [c.path for c in columns if c.physical_type != "BYTE_ARRAY"]


def _is_list(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


class ShardWriter:
    """Writes row groups of exactly `row_group_rows` rows, whatever batches arrive.

    Fixed row groups make the output bytes independent of the read batch size.
    """

    def __init__(self, path: Path, schema: pa.Schema, fmt: str, row_group_rows: int) -> None:
        self._schema = schema
        self._row_group_rows = row_group_rows
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._sink: pa.NativeFile | None = None
        self._writer: Any
        if fmt == "parquet":
            # No min/max statistics for text: Parquet copies values into
            # them, so one 200 MB document took 1 GB more to write, for
            # bounds no reader uses.
            # No dictionary for lists (token ids, seq_lens): a vocabulary's
            # worth of ids overflows the dictionary page, so the writer paid
            # for it and fell back to plain anyway (plain is 14% smaller and
            # 13% faster to write for a 32k vocabulary).
            self._writer = pq.ParquetWriter(
                path,
                schema,
                compression="zstd",
                write_statistics=_statistics_columns(schema),
                use_dictionary=[f.name for f in schema if not _is_list(f.type)],
            )
        else:
            self._sink = pa.OSFile(str(path), "wb")
            self._writer = pa.ipc.new_file(self._sink, schema)
        self._format = fmt

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        while self._pending_rows >= self._row_group_rows:
            self._flush(self._row_group_rows)

    def _flush(self, rows: int) -> None:
        table = pa.Table.from_batches(self._pending, schema=self._schema)
        head, rest = table.slice(0, rows), table.slice(rows)
        # Let go of the batches before writing: where several are combined
        # into one copy, holding them as well would double what the write holds.
        self._pending = []
        del table
        head = head.combine_chunks()
        if self._format == "parquet":
            self._writer.write_table(head, row_group_size=rows)
        else:
            for batch in head.to_batches(max_chunksize=rows):
                self._writer.write_batch(batch)
        self._pending = rest.to_batches()
        self._pending_rows = rest.num_rows

    def close(self) -> None:
        if self._pending_rows:
            self._flush(self._pending_rows)
        self._writer.close()
        if self._sink is not None:
            self._sink.close()


def _fingerprint(stage: Stage, fmt: str, row_group_rows: int) -> str:
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


def _read_state(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / STATE_DIR / f"{name}.json"
    try:
        record: dict[str, Any] = json.loads(path.read_text())
        return record
    except (OSError, ValueError):
        return None


def process_shard(
    stage: Stage,
    shard: Shard,
    destination: Path,
    *,
    fmt: str = "parquet",
    batch_size: int = DEFAULT_BATCH_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    progress: StageProgress | None = None,
) -> OutputShard:
    """Runs `stage` over one shard into `destination`, atomically.

    This is the unit a distributed engine would schedule: it reads one file,
    writes one file, and shares nothing with other shards.
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
                batches = prefetch(shard.iter_batches(batch_size))
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
        if not _out_of_room(err):
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


def _out_of_room(err: OSError) -> bool:
    """A full disk, a quota or the file size limit; pyarrow keeps only the message."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    return any(text in str(err) for text in ("No space left", "quota exceeded", "File too large"))


def _empty_batch(shard: Shard) -> pa.RecordBatch:
    schema = shard.schema
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


def _count_tokens(batch: pa.RecordBatch | None, column: str | None) -> int:
    if batch is None or column is None or batch.num_rows == 0:
        return 0
    offsets = batch.column(column).offsets
    return int(offsets[-1].as_py() - offsets[0].as_py())


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

    fingerprint = _fingerprint(stage, fmt, row_group_rows)
    outputs = [names[shard.name] for shard in selected]
    if not overwrite:
        refuse_foreign_output(out, fingerprint)
        refuse_unrecorded_files(out, outputs)
    created = not out.exists()

    report = RunReport(output=out, complete=False, manifest=None)
    total_rows = sum(shard.num_rows for shard in selected)
    try:
        with lock_outputs(out, outputs):
            every_shard = set(outputs) == set(names.values())
            _prepare_output(out, outputs, overwrite, every_shard=every_shard)
            with StageProgress(
                stage.name, total_rows, len(selected), progress_enabled(progress)
            ) as bar:
                for shard in selected:
                    name = names[shard.name]
                    checksum = _core.file_checksum(shard.path)
                    record = _read_state(out, name)
                    if not overwrite and _finished(record, fingerprint, checksum, out / name):
                        report.skipped.append(name)
                        bar.shard_done(rows_skipped=shard.num_rows)
                        continue
                    made = _write_recorded(
                        stage,
                        shard,
                        out / name,
                        fingerprint,
                        checksum,
                        fmt=fmt,
                        batch_size=batch_size,
                        row_group_rows=row_group_rows,
                        progress=bar,
                    )
                    report.written.append(name)
                    report.rows += made.rows
                    report.tokens += made.tokens
                    bar.shard_done()
            report.manifest = _write_manifest_if_complete(stage, dataset, out, fingerprint, names)
    except BaseException:
        if created:
            remove_empty_output(out)
        raise
    report.complete = report.manifest is not None
    report.summary = stage.summary()
    report.seconds = time.perf_counter() - started
    return report


def _write_recorded(
    stage: Stage,
    shard: Shard,
    destination: Path,
    fingerprint: str,
    checksum: str,
    *,
    fmt: str,
    batch_size: int,
    row_group_rows: int,
    progress: StageProgress,
) -> OutputShard:
    """:func:`process_shard`, recorded in `.tokenmill/` before the file exists and after.

    The first record lets a run killed between the rename and the second
    still own the file it made; it goes again when no file came.
    """
    record_path = destination.parent / STATE_DIR / f"{destination.name}.json"
    claim = {"fingerprint": fingerprint, "input_checksum": checksum}
    write_atomic(record_path, json.dumps(claim).encode())
    try:
        made = process_shard(
            stage,
            shard,
            destination,
            fmt=fmt,
            batch_size=batch_size,
            row_group_rows=row_group_rows,
            progress=progress,
        )
    except BaseException:
        if not destination.exists():
            record_path.unlink(missing_ok=True)
        raise
    record = {
        "fingerprint": fingerprint,
        "input_checksum": checksum,
        "input_bytes": shard.size_bytes,
        "output": asdict(made),
    }
    write_atomic(record_path, json.dumps(record).encode())
    return made


def _finished(record: dict[str, Any] | None, fingerprint: str, checksum: str, path: Path) -> bool:
    """Whether `record` says `path` already holds this run's output of this input."""
    return (
        record is not None
        and "output" in record
        and record["fingerprint"] == fingerprint
        and record["input_checksum"] == checksum
        and _size(path) == record["output"]["bytes"]
    )


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def remove_empty_output(out: Path) -> None:
    """Removes an output folder this run created, if nothing finished in it.

    Only empty folders go, so another process writing shards of the same
    dataset into it (see `shards`) never loses its work.
    """
    for folder in (out / STATE_DIR, out):
        with contextlib.suppress(OSError):
            folder.rmdir()


def refuse_output_over_input(out: Path, dataset: Dataset) -> None:
    """Raises ConfigError when writing into `out` could replace or delete input shards.

    The output folder may not equal, contain or lie inside the folder of any
    input shard: shard names are kept, so an output shard would land on its
    own input (or on a sibling a later stage reads as input). Checked before
    anything is written, on resolved paths, so a symlink or `..` cannot hide it.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: the output must be a folder; choose another -o")
    target = out.resolve()
    folders = {shard.path.resolve().parent for shard in dataset.shards}
    if dataset.root.is_dir():
        folders.add(dataset.root.resolve())
    for folder in sorted(folders):
        if target == folder:
            relation = "is the input's folder"
        elif target in folder.parents:
            relation = f"contains the input's folder {folder}"
        elif folder in target.parents:
            relation = f"lies inside the input's folder {folder}"
        else:
            continue
        raise ConfigError(
            f"{out}: the output folder {relation}, so writing it could replace the input "
            "shards; choose an -o outside the input's folder"
        )


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


def stage_fingerprint(
    stage: Stage, fmt: str = "parquet", row_group_rows: int = DEFAULT_ROW_GROUP_ROWS
) -> str:
    """What identifies a stage's output: its name, parameters, tool version and layout."""
    return _fingerprint(stage, fmt, row_group_rows)


def refuse_foreign_output(out: Path, fingerprint: str) -> None:
    """Raises ConfigError when `out` holds shards or a manifest of other parameters."""
    state = out / STATE_DIR
    records = sorted(state.glob("*.json")) if state.exists() else []
    foreign = [
        r for r in records if (_read_state(out, r.stem) or {}).get("fingerprint") != fingerprint
    ]
    manifest = out / MANIFEST_NAME
    if manifest.exists():
        with contextlib.suppress(TokenmillError):
            if Manifest.load(manifest).fingerprint != fingerprint:
                foreign.append(manifest)
    if foreign:
        raise ConfigError(
            f"{out}: the folder holds output of another run with different parameters; "
            "pass --overwrite to replace it, or choose another -o"
        )


def refuse_unrecorded_files(out: Path, names: Sequence[str]) -> None:
    """Raises ConfigError when `out` holds a file of one of `names` that no tokenmill run wrote.

    A run records each output in `.tokenmill/` before it writes the file, so
    an output name without a record, or a manifest that is not a tokenmill
    manifest, is the user's own file: replacing it takes `--overwrite`.
    """
    state = out / STATE_DIR
    unrecorded = [n for n in names if (out / n).exists() and not (state / f"{n}.json").exists()]
    if (out / MANIFEST_NAME).exists():
        try:
            Manifest.load(out / MANIFEST_NAME)
        except TokenmillError:
            unrecorded.append(MANIFEST_NAME)
    if unrecorded:
        more = f" and {len(unrecorded) - 1} more" if len(unrecorded) > 1 else ""
        raise ConfigError(
            f"{out}: {unrecorded[0]}{more} would be replaced, but no tokenmill run wrote them "
            f"(no record in {STATE_DIR}/); move them away, choose another -o, or pass "
            "--overwrite to replace them"
        )


@contextlib.contextmanager
def lock_outputs(out: Path, names: Sequence[str]) -> Iterator[None]:
    """Holds an exclusive lock on each output name in `out` for the block, or
    raises ConfigError at once when another process holds one.

    One lock per output, not per folder: runs over disjoint `shards` share a
    folder on purpose, while two runs that would write one file must not
    (the second deleted the first's temporary). A lock dies with its
    process, so a killed run's lock file blocks nobody, and each lock file
    is removed by its holder, while still held, so none pile up.
    """
    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    held: list[tuple[Path, int]] = []
    try:
        for name in sorted(set(names)):
            path = state / f"{name}.lock"
            held.append((path, _lock(path, out, name)))
        yield
    finally:
        for path, fd in held:
            path.unlink(missing_ok=True)
            os.close(fd)


def _lock(path: Path, out: Path, name: str) -> int:
    """Locks `path`, creating it, and writes this process's PID into it; returns its descriptor."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A holder that finished between our open and our lock removed the
            # file: a lock on a removed file guards nothing, so take the new one.
            if _same_file(fd, path):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            holder = f"another tokenmill run (PID {pid})" if pid else "another tokenmill run"
            raise ConfigError(
                f"{out}: {holder} is writing {name} in this folder; wait for it to finish, "
                "or choose another -o (runs over disjoint --shard sets may share one)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _prepare_output(
    out: Path, selected: Sequence[str], overwrite: bool, *, every_shard: bool
) -> None:
    """Clears what killed runs left of the selected outputs (and, with
    `overwrite`, the outputs themselves).

    Runs under the selected outputs' locks and touches only their files, so
    runs over disjoint `shards` can share one output folder. The manifest's
    temporary is a selected output's only when every shard is: then no
    other run can be writing the manifest.
    """
    state = out / STATE_DIR
    remove_temporaries(out, {*selected, *([MANIFEST_NAME] if every_shard else [])})
    remove_temporaries(state, {f"{name}.json" for name in selected})
    manifest = out / MANIFEST_NAME
    if overwrite:
        manifest.unlink(missing_ok=True)
        for name in selected:
            (out / name).unlink(missing_ok=True)
            (state / f"{name}.json").unlink(missing_ok=True)


def _write_manifest_if_complete(
    stage: Stage, dataset: Dataset, out: Path, fingerprint: str, names: dict[str, str]
) -> Manifest | None:
    inputs: list[InputShard] = []
    outputs: list[OutputShard] = []
    for shard in dataset.shards:
        record = _read_state(out, names[shard.name])
        if record is None or record["fingerprint"] != fingerprint or "output" not in record:
            return None
        inputs.append(InputShard(shard.name, record["input_bytes"], record["input_checksum"]))
        outputs.append(OutputShard(**record["output"]))
    totals: dict[str, int] = {
        "shards": len(outputs),
        "rows": sum(o.rows for o in outputs),
        "tokens": sum(o.tokens for o in outputs),
        "bytes": sum(o.bytes for o in outputs),
    }
    for made in outputs:
        for key, value in made.stats.items():
            totals[key] = totals.get(key, 0) + value
    totals.update(stage.manifest_totals())
    ratios = stage.ratios(totals)
    manifest = Manifest(
        stage=stage.name,
        tool_version=_core.__version__,
        params=stage.params(),
        seed=stage.seed,
        fingerprint=fingerprint,
        inputs=inputs,
        outputs=outputs,
        totals=totals,
        ratios=ratios,
    )
    manifest.save(out)
    return manifest
