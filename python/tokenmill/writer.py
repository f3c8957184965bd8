"""The shard writer: fixed row groups, so the bytes do not depend on the batches."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


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


#: A row group this large is written before the next batch is made, not
#: beside it: holding it while the next one grows would double the peak.
INLINE_WRITE_BYTES = 64 << 20


class ShardWriter:
    """Writes row groups of exactly `row_group_rows` rows, whatever batches arrive.

    Fixed row groups make the output bytes independent of the read batch size.
    Each row group is encoded and compressed on a thread of its own (pyarrow
    lets go of the GIL there) while the stage makes the next one, since
    compressing token ids costs about as much as tokenizing them. One write
    is in flight at a time, so row groups land in order; its error is raised
    by the next :meth:`write` or by :meth:`close`.
    """

    def __init__(self, path: Path, schema: pa.Schema, fmt: str, row_group_rows: int) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenmill-write")
        self._in_flight: Future[None] | None = None
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
        # The batches live on only in `head` and `rest`: the write combines
        # `head` into one copy, and holding the list too would keep them after it.
        del table
        self._pending = rest.to_batches()
        self._pending_rows = rest.num_rows
        self._wait()
        self._in_flight = self._thread.submit(self._write_group, head, rows)
        if head.nbytes >= INLINE_WRITE_BYTES:
            del head
            self._wait()

    def _write_group(self, head: pa.Table, rows: int) -> None:
        head = head.combine_chunks()
        if self._format == "parquet":
            self._writer.write_table(head, row_group_size=rows)
        else:
            for batch in head.to_batches(max_chunksize=rows):
                self._writer.write_batch(batch)

    def _wait(self) -> None:
        """Waits for the write in flight; its exception, if any, is raised here."""
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()

    def close(self) -> None:
        try:
            if self._pending_rows:
                self._flush(self._pending_rows)
            self._wait()
        finally:
            self._thread.shutdown(wait=True)
            self._writer.close()
            if self._sink is not None:
                self._sink.close()
