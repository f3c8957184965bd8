"""Datasets: a folder of Parquet or Arrow IPC shards, plus `manifest.json`.

Reading goes through here so that every unreadable file, whatever pyarrow
says about it, reaches the user as one :class:`tokenmill.ShardError` that
names the file and the fix.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill._core import SchemaError, ShardError
from tokenmill.manifest import MANIFEST_NAME, Manifest

PARQUET_SUFFIXES = (".parquet",)
IPC_SUFFIXES = (".arrow", ".feather", ".ipc")
SHARD_SUFFIXES = PARQUET_SUFFIXES + IPC_SUFFIXES

_UNREADABLE_FIX = (
    "the file is truncated, corrupt or not Parquet/Arrow IPC: re-create it, "
    "or move it out of the folder"
)


def shard_format(path: Path) -> str:
    """`"parquet"` or `"arrow"` from the file name."""
    if path.suffix in PARQUET_SUFFIXES:
        return "parquet"
    if path.suffix in IPC_SUFFIXES:
        return "arrow"
    raise ShardError(
        f"{path}: not a shard (expected one of {', '.join(SHARD_SUFFIXES)}); "
        "rename it or point at a folder of shards"
    )


def release_freed_memory() -> None:
    """Hands what pyarrow's allocator has freed back to the system.

    mimalloc (pyarrow's default) keeps freed memory for its own next
    allocations, but the Rust kernels allocate from the system: without
    this, the buffers of a long document, freed, would stay resident under
    everything allocated after them (reading a 200 MB row left 0.6 GB
    more than the row resident until the shard ended). Called once a shard
    is read and after a large batch, not per batch: refaulting the pages
    costs time.
    """
    pa.default_memory_pool().release_unused()


@dataclass(frozen=True)
class Shard:
    """One file of a dataset. Reading is lazy: nothing is opened until asked."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def format(self) -> str:
        return shard_format(self.path)

    def _unreadable(self, err: BaseException) -> ShardError:
        return ShardError(f"{self.path}: cannot read shard ({err}); {_UNREADABLE_FIX}")

    @property
    def schema(self) -> pa.Schema:
        try:
            if self.format == "parquet":
                return pq.read_schema(self.path)
            with pa.memory_map(str(self.path)) as source:
                return pa.ipc.open_file(source).schema
        except (pa.ArrowException, OSError) as err:
            raise self._unreadable(err) from err

    @property
    def num_rows(self) -> int:
        try:
            if self.format == "parquet":
                return int(pq.ParquetFile(self.path).metadata.num_rows)
            with pa.memory_map(str(self.path)) as source:
                reader = pa.ipc.open_file(source)
                return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        except (pa.ArrowException, OSError) as err:
            raise self._unreadable(err) from err

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def iter_batches(
        self, batch_size: int, columns: Sequence[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of at most `batch_size` rows, in file order, in bounded memory."""
        try:
            if self.format == "parquet":
                parquet = pq.ParquetFile(self.path)
                yield from parquet.iter_batches(
                    batch_size=batch_size,
                    columns=list(columns) if columns is not None else None,
                    use_threads=True,
                )
                # The reader's buffers, as large as the longest row, are freed now.
                release_freed_memory()
                return
            with pa.memory_map(str(self.path)) as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    batch = reader.get_batch(i)
                    if columns is not None:
                        batch = batch.select(list(columns))
                    for start in range(0, batch.num_rows, batch_size):
                        yield batch.slice(start, batch_size)
        except (pa.ArrowException, OSError) as err:
            raise self._unreadable(err) from err

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole shard as a table (memory-mapped for Arrow IPC)."""
        missing = [c for c in columns or () if c not in self.schema.names]
        if missing:
            raise SchemaError(
                f"{self.path}: no column {', '.join(missing)} (the columns are: "
                f"{', '.join(self.schema.names)})"
            )
        try:
            if self.format == "parquet":
                return pq.read_table(self.path, columns=list(columns) if columns else None)
            source = pa.memory_map(str(self.path))
            table = pa.ipc.open_file(source).read_all()
            return table.select(list(columns)) if columns else table
        except (pa.ArrowException, OSError) as err:
            raise self._unreadable(err) from err


class Dataset:
    """The shards of one folder (or one shard file), in name order."""

    def __init__(self, root: Path, shards: list[Shard], manifest: Manifest | None) -> None:
        self.root = root
        self.shards = shards
        self.manifest = manifest

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, shards={len(self.shards)})"

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def schema(self) -> pa.Schema:
        """The schema of the first shard; stages check every shard's own."""
        return self.shards[0].schema

    @property
    def num_rows(self) -> int:
        return sum(shard.num_rows for shard in self.shards)

    def iter_batches(
        self, batch_size: int = 4096, columns: Sequence[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        for shard in self.shards:
            yield from shard.iter_batches(batch_size, columns)

    def to_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        return pa.concat_tables([shard.read(columns) for shard in self.shards])


def open_dataset(path: str | Path) -> Dataset:
    """Opens a folder of shards, or a single shard file.

    Raises :class:`tokenmill.ShardError` for a path that does not exist, a
    folder without shards, or an empty shard file.
    """
    root = Path(path)
    if not root.exists():
        raise ShardError(f"{root}: no such file or folder; check the path")
    manifest_path = root / MANIFEST_NAME
    manifest = Manifest.load(manifest_path) if root.is_dir() and manifest_path.exists() else None
    if root.is_file():
        files = [root]
    elif manifest is not None:
        # A finished stage names its shards; other files beside them
        # (dedup's clusters.parquet, say) are not rows of the dataset.
        files = [root / shard.name for shard in manifest.outputs]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise ShardError(
                f"{root}: the manifest lists {', '.join(missing)}, which are missing; "
                "rerun the stage that made this folder"
            )
    else:
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in SHARD_SUFFIXES)
        if not files:
            raise ShardError(
                f"{root}: the folder holds no shards ({', '.join(SHARD_SUFFIXES)}); "
                "point at a folder of Parquet or Arrow IPC files"
            )
    for file in files:
        shard_format(file)
        if file.stat().st_size == 0:
            raise ShardError(f"{file}: the shard is empty (0 bytes); {_UNREADABLE_FIX}")
    return Dataset(root, [Shard(file) for file in files], manifest)


def prefetch(iterator: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Reads ahead on a thread, so decoding the next batch overlaps the work on this one.

    pyarrow releases the GIL while it reads, and so do tokenmill's kernels.
    Exceptions from the reader are re-raised here, in order.
    """
    done = object()
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def fill() -> None:
        try:
            for item in iterator:
                if stop.is_set():
                    return
                slots.put(item)
            slots.put(done)
        except BaseException as err:
            slots.put(err)

    thread = threading.Thread(target=fill, name="tokenmill-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            # Handed over, not kept: a paused generator holds its locals, and
            # a long document would stay in memory until the next batch.
            handed, item = [item], None
            yield handed.pop()
    finally:
        stop.set()
        # Unblock a producer waiting on a full queue so it can see `stop`.
        while thread.is_alive():
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.01)
