"""Datasets: a folder of Parquet or Arrow IPC shards, plus `manifest.json`.

Reading goes through here so that every unreadable file, whatever pyarrow
says about it, reaches the user as one :class:`tokenmill.ShardError` that
names the file and the fix.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
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


class _Reader:
    """Reads an iterator ahead on a thread into a queue of `depth` items.

    pyarrow releases the GIL while it reads, and so do tokenmill's kernels,
    so decoding the next batch overlaps the work on this one. Exceptions
    from the reader are re-raised by :meth:`items`, in order.
    `when_read` runs on the reader's thread once the iterator is exhausted.
    """

    _DONE = object()

    def __init__(
        self,
        iterator: Iterator[Any],
        depth: int,
        when_read: Callable[[], object] | None = None,
    ) -> None:
        self._iterator = iterator
        self._slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._when_read = when_read
        self._thread = threading.Thread(target=self._fill, name="tokenmill-prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            for item in self._iterator:
                if self._stop.is_set():
                    return
                self._slots.put(item)
            self._slots.put(self._DONE)
        except BaseException as err:
            self._slots.put(err)
            return
        if self._when_read is not None and not self._stop.is_set():
            self._when_read()

    def items(self) -> Iterator[Any]:
        try:
            while True:
                item = self._slots.get()
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                # Handed over, not kept: a paused generator holds its locals, and
                # a long document would stay in memory until the next batch.
                handed, item = [item], None
                yield handed.pop()
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        # Unblock a producer waiting on a full queue so it can see `stop`.
        while self._thread.is_alive():
            try:
                self._slots.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.01)


def prefetch(iterator: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Reads ahead on a thread, so decoding the next batch overlaps the work on this one.

    pyarrow releases the GIL while it reads, and so do tokenmill's kernels.
    Exceptions from the reader are re-raised here, in order.
    """
    yield from _Reader(iterator, depth).items()


class ReadAhead:
    """The batches of a run's shards, each shard read while the one before it is worked on.

    :func:`prefetch` reads ahead within a shard; a shard of one batch (the
    common case for shards of a few MB) still waited for its whole read.
    Here, once a shard's last batch is read, the next shard of `shards`
    starts reading (at most `depth` batches ahead), so its read overlaps the
    tokenizing, writing and syncing of this one. A shard read ahead but not
    asked for (one a resumed run skips) is dropped when a later one is asked
    for, or at :meth:`close`.
    """

    def __init__(
        self,
        shards: Sequence[Shard],
        batch_size: int,
        columns: Sequence[str] | None = None,
        depth: int = 2,
    ) -> None:
        self._shards = list(shards)
        self._index = {shard.path: i for i, shard in enumerate(self._shards)}
        self._batch_size, self._columns, self._depth = batch_size, columns, depth
        self._lock = threading.Lock()
        self._started: dict[int, _Reader] = {}
        self._closed = False

    def _reader(self, index: int) -> _Reader:
        return _Reader(
            self._shards[index].iter_batches(self._batch_size, self._columns),
            self._depth,
            when_read=lambda: self._read_ahead(index + 1),
        )

    def _read_ahead(self, index: int) -> None:
        with self._lock:
            if not self._closed and index < len(self._shards) and index not in self._started:
                self._started[index] = self._reader(index)

    def batches(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        """The batches of `shard` (one of the run's), as :meth:`Shard.iter_batches` gives them."""
        index = self._index[shard.path]
        with self._lock:
            if self._closed:
                raise RuntimeError("ReadAhead.batches() after close()")
            dropped = [self._started.pop(i) for i in sorted(self._started) if i < index]
            reader = self._started.pop(index, None) or self._reader(index)
        for stale in dropped:
            stale.stop()
        return reader.items()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            readers, self._started = list(self._started.values()), {}
        for reader in readers:
            reader.stop()
