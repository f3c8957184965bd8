"""dedup's first phase, *sign*: per document a content hash or a MinHash
signature and its LSH band keys, shard by shard, into raw little-endian files
under ``OUT/.tokenmill/dedup``. Resumable through the runner's
:func:`tokenmill.runner.run_shards`: a killed run skips signed shards."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill import _core
from tokenmill._core import DataError, SchemaError, TokenmillError
from tokenmill._fs import atomic_path
from tokenmill.checks import as_text, at_row, locate_error, null_row_error, null_rows, require_text
from tokenmill.dataset import Dataset, Shard, prefetch
from tokenmill.output import ShardRecords
from tokenmill.progress import StageProgress, progress_enabled
from tokenmill.runner import ShardWork, run_shards

if TYPE_CHECKING:
    from tokenmill.stages.dedup import DedupOptions

#: Every work file a shard may have; which are written depends on the options.
WORK_FILES = ("sig", "bands", "len", "shingles", "offsets", "nulls")


@dataclass
class Signatures:
    """What the sign phase recorded of each shard (by name) and did this run."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    signed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def sign(
    dataset: Dataset,
    work: Path,
    options: DedupOptions,
    bands: int,
    rows: int,
    *,
    created: bool,
    batch_size: int,
    progress: bool | None,
) -> Signatures:
    """Signs every shard of `dataset` into `work` that an earlier run has not.

    When the output folder is this run's (`created`) and nothing was signed
    yet, a failure takes `work` away, so the folder can go too.
    """
    records = ShardRecords(work, sign_fingerprint(options, bands, rows))
    result = Signatures()
    try:
        with StageProgress(
            f"dedup {options.method}: sign",
            dataset.num_rows,
            len(dataset.shards),
            progress_enabled(progress),
        ) as bar:
            signer = _Signer(work, options, bands, rows, batch_size, bar)
            for done in run_shards(signer, dataset.shards, records, bar):
                result.counts[done.shard.name] = done.output
                (result.skipped if done.skipped else result.signed).append(done.shard.name)
    except BaseException:
        if created and not result.signed:
            shutil.rmtree(work, ignore_errors=True)
        raise
    return result


class _Signer(ShardWork):
    """One shard's work files, recorded as ``WORK/STEM.json`` with their counts."""

    def __init__(
        self,
        work: Path,
        options: DedupOptions,
        bands: int,
        rows: int,
        batch_size: int,
        bar: StageProgress,
    ) -> None:
        self.work, self.options, self.bands, self.rows = work, options, bands, rows
        self.batch_size, self.bar = batch_size, bar
        self.wanted = ["sig", "bands", "len", "nulls"]
        if options.method == "minhash" and options.verify == "exact":
            self.wanted += ["shingles", "offsets"]

    def record_name(self, shard: Shard) -> str:
        return shard.path.stem

    def files(self, shard: Shard) -> list[Path]:
        files = work_files(self.work, shard)
        return [files[name] for name in self.wanted]

    def run(self, shard: Shard) -> dict[str, Any]:
        source = Source(self.options, shard.schema)
        files = work_files(self.work, shard)
        with contextlib.ExitStack() as files_in_progress:
            handles: dict[str, BinaryIO] = {}
            for name in self.wanted:
                temporary = files_in_progress.enter_context(atomic_path(files[name]))
                handles[name] = files_in_progress.enter_context(open(temporary, "wb"))
            return _sign_into(
                shard,
                source,
                self.options,
                handles,
                self.bands,
                self.rows,
                self.batch_size,
                self.bar,
            )


class Source:
    """What phase 1 reads from a shard: text, or token ids for exact dedup."""

    def __init__(self, options: DedupOptions, schema: pa.Schema) -> None:
        self.options = options
        if options.text_column in schema.names or options.method == "minhash":
            require_text(schema, options.text_column)
            self.column, self.kind = options.text_column, "text"
        elif options.token_column in schema.names:
            self.column, self.kind = options.token_column, "tokens"
        else:
            raise SchemaError(
                f"neither a text column '{options.text_column}' nor a token column "
                f"'{options.token_column}' (the columns are: {', '.join(schema.names)}); "
                "name one with --text-column or --token-column"
            )


def work_files(work: Path, shard: Shard) -> dict[str, Path]:
    stem = shard.path.stem
    return {name: work / f"{stem}.{name}" for name in WORK_FILES}


def skipped_rows(files: dict[str, Path], counts: dict[str, int]) -> npt.NDArray[np.int64]:
    """The shard rows skipped while signing for a null text, in order.

    Signatures are written for documents with text only, so signed document
    ``i`` of a shard is its ``i``-th row that is not listed here.
    """
    if not counts.get("rows_null", 0):
        return np.zeros(0, dtype=np.int64)
    return np.fromfile(files["nulls"], dtype="<u8").astype(np.int64)


def signed_rows(
    null: npt.NDArray[np.int64], counts: dict[str, int]
) -> npt.NDArray[np.int64] | None:
    """The shard row of each signed document, or None when every row was signed."""
    if not len(null):
        return None
    return np.delete(np.arange(counts["rows"] + len(null), dtype=np.int64), null)


def sign_fingerprint(options: DedupOptions, bands: int, rows: int) -> str:
    identity = {
        "version": _core.__version__,
        "bands": bands,
        "rows": rows,
        **{k: v for k, v in asdict(options).items() if k not in ("keep", "memory_budget")},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def _sign_into(
    shard: Shard,
    source: Source,
    options: DedupOptions,
    handles: dict[str, BinaryIO],
    bands: int,
    rows: int,
    batch_size: int,
    bar: StageProgress,
) -> dict[str, int]:
    documents = too_short = first_row = shingles_written = skipped = 0
    if "offsets" in handles:
        np.zeros(1, dtype="<u8").tofile(handles["offsets"])
    for batch in prefetch(shard.iter_batches(batch_size, columns=[source.column])):
        column = as_text(batch.column(source.column))
        kept: npt.NDArray[np.int64] | None = None
        try:
            # A null is no text: never one cluster of every null, never kept as data.
            null = null_rows(column)
            if null.any():
                if options.nulls == "error":
                    raise null_row_error(int(np.flatnonzero(null)[0]), source.column)
                (np.flatnonzero(null) + first_row).astype("<u8").tofile(handles["nulls"])
                skipped += int(null.sum())
                kept = np.flatnonzero(~null)
                column = column.filter(pa.array(~null))
            if options.method == "exact":
                halves = (
                    _core.text_hashes(column, column=source.column, **options.normalization())
                    if source.kind == "text"
                    else _core.token_hashes(column, column=source.column)
                )
                signatures, keys = halves, halves[:, :1]
                short = np.zeros(len(halves), dtype=bool)
            else:
                signatures, short = _core.minhash_signatures(
                    column,
                    column=source.column,
                    num_perm=options.num_perm,
                    ngram=options.ngram,
                    shingle=options.shingle,
                    seed=options.seed,
                    **options.normalization(),
                )
                keys = _core.band_keys(signatures, bands, rows)
                if "shingles" in handles:
                    values, offsets = _core.shingle_sets(
                        column,
                        column=source.column,
                        ngram=options.ngram,
                        shingle=options.shingle,
                        **options.normalization(),
                    )
                    values.astype("<u8").tofile(handles["shingles"])
                    (offsets[1:] + shingles_written).astype("<u8").tofile(handles["offsets"])
                    shingles_written += len(values)
        except TokenmillError as err:
            row = getattr(err, "row", None)
            if isinstance(err, DataError) and kept is not None and row is not None:
                err = at_row(err, int(kept[row]))  # a row of the batch as read
            raise locate_error(err, shard, first_row) from None
        signatures.astype("<u8").tofile(handles["sig"])
        np.ascontiguousarray(keys).astype("<u8").tofile(handles["bands"])
        _lengths(column, source.kind).tofile(handles["len"])
        documents += len(column)
        too_short += int(short.sum())
        first_row += batch.num_rows
        bar.advance(batch.num_rows, 0)
    return {"rows": documents, "too_short": too_short, "rows_null": skipped}


def _lengths(column: pa.Array, kind: str) -> npt.NDArray[np.uint64]:
    lengths = pc.list_value_length(column) if kind == "tokens" else pc.binary_length(column)
    return np.asarray(lengths.fill_null(0).to_numpy(zero_copy_only=False), dtype="<u8")
