"""`dedup`: exact and MinHash-LSH near-duplicate removal across every shard.

Three phases, each resumable:

1. *sign*, shard by shard: per document a 128-bit content hash (exact) or a
   MinHash signature and its LSH band keys, written as raw little-endian
   files under ``OUT/.tokenmill/dedup``; a killed run skips signed shards.
2. *cluster*, once over all shards: documents sharing a band bucket are
   checked (estimated or exact Jaccard), joined by union-find, and one per
   cluster is kept. Buckets spill to disk past ``memory_budget``; signatures
   are memory-mapped, never loaded whole.
3. *filter*, shard by shard through the stage runner, which writes the kept
   rows, ``clusters.parquet`` and the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill import _core
from tokenmill._core import ConfigError, DataError, SchemaError, TokenmillError
from tokenmill._fs import atomic_path, remove_temporaries, write_atomic
from tokenmill.dataset import Dataset, Shard, open_dataset, prefetch
from tokenmill.options import Options, id_column_option, keywords_of, option, seed_option
from tokenmill.progress import StageProgress, progress_enabled
from tokenmill.runner import (
    DEFAULT_BATCH_ROWS,
    STATE_DIR,
    BatchContext,
    RunReport,
    Stage,
    locate_error,
    lock_outputs,
    output_name,
    refuse_foreign_output,
    refuse_output_over_input,
    refuse_unrecorded_files,
    remove_empty_output,
    run_stage,
    stage_fingerprint,
)
from tokenmill.stages._common import (
    as_text,
    at_row,
    check_nulls,
    filter_rows,
    null_row_error,
    null_rows,
    nulls_option,
    require_id_column,
    require_text,
    require_u64,
)

METHODS = ("exact", "minhash")
#: The most permutations a signature may have (`tokenmill_core::minhash::MAX_NUM_PERM`).
MAX_NUM_PERM = 8192
CLUSTERS_NAME = "clusters.parquet"
WORK_DIR = "dedup"
BUCKETS_DIR = "buckets"


@dataclass(frozen=True)
class DedupOptions(Options):
    """The options of `dedup` (and of `tokenmill dedup`)."""

    method: str = option(
        "minhash",
        "exact: equal content hashes; minhash: near duplicates by Jaccard.",
        choices=METHODS,
    )
    threshold: float = option(
        0.8, "Jaccard similarity from which two documents are duplicates (minhash)."
    )
    num_perm: int = option(128, low=1)
    ngram: int = option(5, "Shingle length, in words or characters.", low=1)
    shingle: str = option("word", choices=("word", "char"))
    lowercase: bool = option(True)
    collapse_whitespace: bool = option(True, flag="--collapse-whitespace/--keep-whitespace")
    strip_punctuation: bool = option(False, "Ignore punctuation and symbols.")
    verify: str = option(
        "estimate",
        "Confirm candidate pairs by estimated or exact Jaccard (minhash).",
        choices=("estimate", "exact"),
    )
    keep: str = option("first", "Which document of a cluster stays.", choices=("first", "longest"))
    text_column: str = option("text")
    token_column: str = option("input_ids", "Hashed by exact dedup when there is no text column.")
    id_column: str | None = id_column_option(
        "Document ids copied into clusters.parquet ('' for none)."
    )
    seed: int = seed_option("Seed of the MinHash permutations.")
    #: Bytes (the CLI's --memory-budget is in MiB).
    memory_budget: int = option(
        1 << 30,
        "MiB of LSH bucket records held in memory before they spill to disk.",
        low=1,
        unit=1 << 20,
    )
    #: A document whose text (or tokens) is null: a DataError ("error"), or
    #: dropped from the output, never clustered, and counted ("skip").
    nulls: str = nulls_option()

    def check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        check_nulls(self.nulls)
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(
                f"threshold {self.threshold} is outside (0, 1); pass --threshold between 0 "
                "and 1, e.g. 0.8"
            )
        if not 1 <= self.num_perm <= MAX_NUM_PERM or self.ngram < 1:
            raise ConfigError(f"--num-perm must be in [1, {MAX_NUM_PERM}] and --ngram at least 1")
        if self.shingle not in ("word", "char"):
            raise ConfigError(f"--shingle {self.shingle!r} is not 'word' or 'char'")
        if self.verify not in ("estimate", "exact"):
            raise ConfigError(f"--verify {self.verify!r} is not 'estimate' or 'exact'")
        if self.keep not in ("first", "longest"):
            raise ConfigError(f"--keep {self.keep!r} is not 'first' or 'longest'")
        require_u64(seed=self.seed, ngram=self.ngram, memory_budget=self.memory_budget)
        if self.memory_budget < 4096:
            raise ConfigError("the memory budget must be at least 4096 bytes")

    def normalization(self) -> dict[str, bool]:
        return {
            "lowercase": self.lowercase,
            "collapse_whitespace": self.collapse_whitespace,
            "strip_punctuation": self.strip_punctuation,
        }


@dataclass
class DedupSummary:
    method: str
    documents_in: int
    documents_out: int
    duplicates_removed: int
    clusters: int
    largest_cluster: int
    too_short: int
    bands: int = 0
    rows_per_band: int = 0
    pairs_checked: int = 0
    pairs_joined: int = 0
    spilled_partitions: int = 0
    #: Documents dropped for a null text (or token list), with `nulls="skip"`:
    #: neither clustered nor kept, so `documents_in` is `documents_out +
    #: duplicates_removed + rows_null`.
    rows_null: int = 0


@dataclass
class DedupReport:
    summary: DedupSummary
    run: RunReport
    clusters_path: Path
    signed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class _Source:
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


def _work_files(work: Path, shard: Shard) -> dict[str, Path]:
    stem = shard.path.stem
    names = ("sig", "bands", "len", "shingles", "offsets", "nulls")
    return {name: work / f"{stem}.{name}" for name in names}


def _skipped_rows(files: dict[str, Path], counts: dict[str, int]) -> npt.NDArray[np.int64]:
    """The shard rows skipped while signing for a null text, in order.

    Signatures are written for documents with text only, so signed document
    ``i`` of a shard is its ``i``-th row that is not listed here.
    """
    if not counts.get("rows_null", 0):
        return np.zeros(0, dtype=np.int64)
    return np.fromfile(files["nulls"], dtype="<u8").astype(np.int64)


def _signed_rows(
    null: npt.NDArray[np.int64], counts: dict[str, int]
) -> npt.NDArray[np.int64] | None:
    """The shard row of each signed document, or None when every row was signed."""
    if not len(null):
        return None
    return np.delete(np.arange(counts["rows"] + len(null), dtype=np.int64), null)


def _sign_fingerprint(options: DedupOptions, bands: int, rows: int) -> str:
    identity = {
        "version": _core.__version__,
        "bands": bands,
        "rows": rows,
        **{k: v for k, v in asdict(options).items() if k not in ("keep", "memory_budget")},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def _sign_shard(
    shard: Shard,
    options: DedupOptions,
    files: dict[str, Path],
    bands: int,
    rows: int,
    batch_size: int,
    bar: StageProgress,
) -> dict[str, int]:
    source = _Source(options, shard.schema)
    wanted = ["sig", "bands", "len", "nulls"]
    if options.method == "minhash" and options.verify == "exact":
        wanted += ["shingles", "offsets"]
    with contextlib.ExitStack() as files_in_progress:
        handles: dict[str, BinaryIO] = {}
        for name in wanted:
            temporary = files_in_progress.enter_context(atomic_path(files[name]))
            handles[name] = files_in_progress.enter_context(open(temporary, "wb"))
        return _sign_into(shard, source, options, handles, bands, rows, batch_size, bar)


def _sign_into(
    shard: Shard,
    source: _Source,
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


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _lengths(column: pa.Array, kind: str) -> npt.NDArray[np.uint64]:
    import pyarrow.compute as pc

    lengths = pc.list_value_length(column) if kind == "tokens" else pc.binary_length(column)
    return np.asarray(lengths.fill_null(0).to_numpy(zero_copy_only=False), dtype="<u8")


class _FilterStage(Stage):
    """Phase 3: keeps the rows phase 2 chose; a pure function of shard and mask."""

    name = "dedup"

    def __init__(
        self,
        options: DedupOptions,
        keep: dict[str, npt.NDArray[np.bool_]],
        decision: str,
        totals: dict[str, int],
        nulls: dict[str, npt.NDArray[np.int64]],
    ) -> None:
        self.options = options
        self.keep = keep
        #: Per shard, the rows skipped for a null text (never kept).
        self.nulls = nulls
        self.decision = decision
        self.totals = totals
        self.seed = options.seed
        self.id_column = options.id_column

    def params(self) -> dict[str, Any]:
        params = asdict(self.options)
        del params["memory_budget"]  # changes where buckets live, never the output
        params["decision"] = self.decision
        return params

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        return schema

    def manifest_totals(self) -> dict[str, int]:
        return self.totals

    def process(self, batch: pa.RecordBatch, ctx: BatchContext) -> pa.RecordBatch:
        end = ctx.first_row + batch.num_rows
        mask = self.keep[ctx.shard][ctx.first_row : end]
        kept = int(mask.sum())
        ctx.count("rows_in", batch.num_rows)
        ctx.count("rows_kept", kept)
        if self.options.nulls == "skip":
            null = self.nulls[ctx.shard]
            # Sorted row numbers: the batch's nulls are one slice of them.
            first, last = np.searchsorted(null, [ctx.first_row, end])
            ctx.count("rows_null", int(last - first))
        # Most batches keep every row: no copy of them (a long document
        # would be held twice while it is written).
        return batch if kept == batch.num_rows else filter_rows(batch, pa.array(mask))


def dedup(
    source: str | Path | Dataset,
    output: str | Path,
    options: DedupOptions | None = None,
    *,
    overwrite: bool = False,
    fmt: str = "parquet",
    batch_size: int = DEFAULT_BATCH_ROWS,
    progress: bool | None = None,
    **fields: Any,
) -> DedupReport:
    """Removes exact or near duplicates across every shard of `source`.

    `fields` are fields of :class:`DedupOptions`, over `options` (else the
    defaults). Writes the kept rows shard for shard, ``clusters.parquet``
    (one row per document that has a duplicate: shard, row, id, cluster,
    cluster size, kept) and a manifest whose totals hold the summary.
    """
    options = DedupOptions.parse(
        fields, what="dedup", base=options, also=("options", *keywords_of(dedup))
    )
    dataset = source if isinstance(source, Dataset) else open_dataset(source)
    out = Path(output)
    refuse_output_over_input(out, dataset)
    stems = [shard.path.stem for shard in dataset.shards]
    if len(set(stems)) != len(stems):
        raise ConfigError(
            f"{dataset.root}: two shards share a stem and would overwrite each other's "
            "output; rename one"
        )
    outputs = [output_name(shard, fmt) for shard in dataset.shards]
    if CLUSTERS_NAME in outputs:
        raise ConfigError(
            f"{dataset.shards[outputs.index(CLUSTERS_NAME)].path}: the shard's output would "
            f"overwrite dedup's cluster report {CLUSTERS_NAME}; rename the shard, or pass "
            "--format arrow"
        )
    for shard in dataset.shards:
        try:
            require_id_column(shard.schema, options.id_column)
            _Source(options, shard.schema)
        except TokenmillError as err:
            raise locate_error(err, shard) from None

    if options.method == "minhash":
        bands, rows = _core.optimal_bands(options.threshold, options.num_perm)
    else:
        bands, rows = 1, 1
    work = out / STATE_DIR / WORK_DIR
    if not overwrite:
        # dedup's report sits beside its work files; one without them is the user's.
        refuse_unrecorded_files(out, outputs if work.exists() else [*outputs, CLUSTERS_NAME])
    created = not out.exists()
    try:
        # One lock for the whole run, named after the report only dedup
        # writes: the work files are shared by every shard, and run_stage
        # takes the shards' locks for the last phase.
        with lock_outputs(out, [CLUSTERS_NAME]):
            return _sign_cluster_filter(
                dataset,
                out,
                options,
                bands,
                rows,
                created=created,
                overwrite=overwrite,
                fmt=fmt,
                batch_size=batch_size,
                progress=progress,
            )
    except BaseException:
        if created:
            remove_empty_output(out)
        raise


def _sign_cluster_filter(
    dataset: Dataset,
    out: Path,
    options: DedupOptions,
    bands: int,
    rows: int,
    *,
    created: bool,
    overwrite: bool,
    fmt: str,
    batch_size: int,
    progress: bool | None,
) -> DedupReport:
    """dedup's three phases, under its lock on `out`."""
    work = out / STATE_DIR / WORK_DIR
    if overwrite:
        shutil.rmtree(work, ignore_errors=True)
    # What a killed run left: half-written work files, spilled buckets and report.
    remove_temporaries(work)
    shutil.rmtree(work / BUCKETS_DIR, ignore_errors=True)
    remove_temporaries(out, [CLUSTERS_NAME])
    work.mkdir(parents=True, exist_ok=True)
    fingerprint = _sign_fingerprint(options, bands, rows)
    width = options.num_perm if options.method == "minhash" else 2

    signed: list[str] = []
    skipped: list[str] = []
    records: dict[str, dict[str, int]] = {}
    try:
        with StageProgress(
            f"dedup {options.method}: sign",
            dataset.num_rows,
            len(dataset.shards),
            progress_enabled(progress),
        ) as bar:
            for shard in dataset.shards:
                files = _work_files(work, shard)
                record_path = work / f"{shard.path.stem}.json"
                checksum = _core.file_checksum(shard.path)
                try:
                    record = json.loads(record_path.read_text())
                except (OSError, ValueError):
                    record = None
                if (
                    record is not None
                    and record["fingerprint"] == fingerprint
                    and record["input_checksum"] == checksum
                    and _size(files["sig"]) == record["counts"]["rows"] * width * 8
                    and _size(files["nulls"]) == record["counts"].get("rows_null", 0) * 8
                    and all(files[n].exists() for n in ("bands", "len"))
                ):
                    records[shard.name] = record["counts"]
                    skipped.append(shard.name)
                    bar.shard_done(rows_skipped=record["counts"]["rows"])
                    continue
                counts = _sign_shard(shard, options, files, bands, rows, batch_size, bar)
                write_atomic(
                    record_path,
                    json.dumps(
                        {"fingerprint": fingerprint, "input_checksum": checksum, "counts": counts}
                    ).encode(),
                )
                records[shard.name] = counts
                signed.append(shard.name)
                bar.shard_done()
    except BaseException:
        if created and not signed:
            shutil.rmtree(work, ignore_errors=True)
        raise

    nulls = {
        shard.name: _skipped_rows(_work_files(work, shard), records[shard.name])
        for shard in dataset.shards
    }
    signed_rows = {name: _signed_rows(null, records[name]) for name, null in nulls.items()}
    summary, keep, clusters = _cluster(dataset, options, work, bands, rows, records, signed_rows)
    decision = hashlib.sha256(b"".join(keep[s.name].tobytes() for s in dataset.shards))
    totals = {k: v for k, v in asdict(summary).items() if isinstance(v, int)}
    stage = _FilterStage(options, keep, decision.hexdigest()[:32], totals, nulls)
    if not overwrite:  # before clusters.parquet changes, not after
        refuse_foreign_output(out, stage_fingerprint(stage, fmt))
    clusters_path = out / CLUSTERS_NAME
    _write_clusters(dataset, options, clusters, keep, signed_rows, clusters_path)
    run = run_stage(
        stage,
        dataset,
        out,
        overwrite=overwrite,
        fmt=fmt,
        batch_size=batch_size,
        progress=progress,
    )
    return DedupReport(summary, run, clusters_path, signed, skipped)


def _cluster(
    dataset: Dataset,
    options: DedupOptions,
    work: Path,
    bands: int,
    rows: int,
    records: dict[str, dict[str, int]],
    signed_rows: dict[str, npt.NDArray[np.int64] | None],
) -> tuple[DedupSummary, dict[str, npt.NDArray[np.bool_]], npt.NDArray[np.uint64]]:
    """Clusters the signed documents; each shard's keep mask covers all its
    rows, a row skipped for a null text never kept."""
    files = [_work_files(work, shard) for shard in dataset.shards]
    exact_verify = options.method == "minhash" and options.verify == "exact"
    width = options.num_perm if options.method == "minhash" else 2
    cluster, stats = _core.cluster_minhash_files(
        [f["sig"] for f in files],
        [f["bands"] for f in files],
        num_perm=width,
        bands=bands,
        # Exact hashes join only when both 64-bit halves agree.
        threshold=options.threshold if options.method == "minhash" else 1.0,
        scratch_dir=work / BUCKETS_DIR,
        memory_budget=options.memory_budget,
        shingle_files=[f["shingles"] for f in files] if exact_verify else None,
        offset_files=[f["offsets"] for f in files] if exact_verify else None,
    )
    n = len(cluster)
    index = np.arange(n, dtype=np.uint64)
    sizes = np.bincount(cluster.astype(np.int64), minlength=n)
    if options.keep == "first":
        kept = cluster == index
    else:
        lengths = np.concatenate([np.fromfile(f["len"], dtype="<u8") for f in files])
        order = np.lexsort((index, -lengths.astype(np.int64), cluster))
        first_in_cluster = np.ones(n, dtype=bool)
        first_in_cluster[1:] = cluster[order][1:] != cluster[order][:-1]
        kept = np.zeros(n, dtype=bool)
        kept[order[first_in_cluster]] = True
    keep: dict[str, npt.NDArray[np.bool_]] = {}
    start = 0
    for shard in dataset.shards:
        count = records[shard.name]["rows"]
        part = kept[start : start + count]
        where = signed_rows[shard.name]
        if where is not None:
            every_row = np.zeros(count + records[shard.name]["rows_null"], dtype=bool)
            every_row[where] = part
            part = every_row
        keep[shard.name] = part
        start += count
    multi = sizes > 1
    skipped = sum(r.get("rows_null", 0) for r in records.values())
    summary = DedupSummary(
        method=options.method,
        documents_in=n + skipped,
        documents_out=int(kept.sum()),
        duplicates_removed=int(n - kept.sum()),
        clusters=int(multi.sum()),
        largest_cluster=int(sizes.max()) if n else 0,
        too_short=sum(r["too_short"] for r in records.values()),
        bands=bands if options.method == "minhash" else 0,
        rows_per_band=rows if options.method == "minhash" else 0,
        pairs_checked=int(stats["pairs_checked"]),
        pairs_joined=int(stats["pairs_joined"]),
        spilled_partitions=int(stats["spilled_partitions"]),
        rows_null=skipped,
    )
    return summary, keep, cluster


def _write_clusters(
    dataset: Dataset,
    options: DedupOptions,
    cluster: npt.NDArray[np.uint64],
    keep: dict[str, npt.NDArray[np.bool_]],
    signed_rows: dict[str, npt.NDArray[np.int64] | None],
    path: Path,
) -> None:
    """One row per document with a duplicate. `cluster` indexes signed
    documents; the report names rows of the shard, and clusters by their
    first document's place in the dataset, rows skipped for a null counted."""
    sizes = np.bincount(cluster.astype(np.int64), minlength=len(cluster))
    in_cluster = sizes[cluster.astype(np.int64)] > 1
    cluster_ids = cluster
    if any(where is not None for where in signed_rows.values()):
        places: list[npt.NDArray[np.uint64]] = []
        offset = 0
        for shard in dataset.shards:
            where = signed_rows[shard.name]
            rows_of = np.arange(len(keep[shard.name])) if where is None else where
            places.append(rows_of.astype(np.uint64) + np.uint64(offset))
            offset += len(keep[shard.name])
        cluster_ids = np.concatenate(places)[cluster.astype(np.int64)]
    parts: list[pa.Table] = []
    start = 0
    for shard in dataset.shards:
        where = signed_rows[shard.name]
        count = len(keep[shard.name]) if where is None else len(where)
        signed = np.flatnonzero(in_cluster[start : start + count])
        rows = signed if where is None else where[signed]
        if len(rows):
            columns: dict[str, Any] = {
                "shard": pa.array([shard.name] * len(rows)),
                "row": pa.array(rows, type=pa.int64()),
            }
            if options.id_column and options.id_column in shard.schema.names:
                ids = shard.read([options.id_column]).column(options.id_column)
                columns["id"] = ids.take(pa.array(rows)).cast(pa.string())
            else:
                columns["id"] = pa.nulls(len(rows), type=pa.string())
            columns["cluster"] = pa.array(cluster_ids[start + signed], type=pa.uint64())
            columns["cluster_size"] = pa.array(
                sizes[cluster[start + signed].astype(np.int64)], type=pa.int64()
            )
            columns["kept"] = pa.array(keep[shard.name][rows])
            parts.append(pa.table(columns))
        start += count
    schema = pa.schema(
        [
            ("shard", pa.string()),
            ("row", pa.int64()),
            ("id", pa.string()),
            ("cluster", pa.uint64()),
            ("cluster_size", pa.int64()),
            ("kept", pa.bool_()),
        ]
    )
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    with atomic_path(path) as temporary:
        pq.write_table(table.cast(schema), temporary, compression="zstd")


def dedup_report_lines(report: DedupReport) -> Sequence[str]:
    s = report.summary
    lines = [
        f"dedup {s.method}: {s.documents_in:,} documents in, {s.documents_out:,} out "
        f"({s.duplicates_removed:,} duplicates removed); {s.clusters:,} clusters, "
        f"largest {s.largest_cluster:,}; {s.too_short:,} too short to shingle (kept)"
        + (f"; {s.rows_null:,} null (skipped)" if s.rows_null else ""),
    ]
    if s.method == "minhash":
        lines.append(
            f"LSH: {s.bands} bands x {s.rows_per_band} rows; {s.pairs_checked:,} candidate "
            f"pairs checked, {s.pairs_joined:,} joined"
        )
    lines.append(f"clusters: {report.clusters_path}")
    return lines
