"""`dedup`: exact and MinHash-LSH near-duplicate removal across every shard.

Three phases, each resumable:

1. *sign*, shard by shard (:mod:`tokenmill.stages.dedup_sign`): per document
   a 128-bit content hash (exact) or a MinHash signature and its LSH band
   keys, written as raw little-endian files under ``OUT/.tokenmill/dedup``;
   a killed run skips signed shards.
2. *cluster*, once over all shards (:mod:`tokenmill.stages.dedup_cluster`):
   documents sharing a band bucket are checked (estimated or exact Jaccard),
   joined by union-find, and one per cluster is kept. Buckets spill to disk
   past ``memory_budget``; signatures are memory-mapped, never loaded whole.
3. *filter*, shard by shard through the stage runner (here), which writes
   the kept rows, ``clusters.parquet`` and the manifest.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tokenmill import _core
from tokenmill._core import ConfigError, TokenmillError
from tokenmill._fs import remove_temporaries
from tokenmill.checks import check_nulls, filter_rows, locate_error, require_id_column, require_u64
from tokenmill.dataset import Dataset, open_dataset
from tokenmill.options import Options, id_column_option, keywords_of, option, seed_option
from tokenmill.output import (
    STATE_DIR,
    lock_outputs,
    refuse_foreign_output,
    refuse_output_over_input,
    refuse_unrecorded_files,
    remove_empty_output,
)
from tokenmill.runner import (
    DEFAULT_BATCH_ROWS,
    BatchContext,
    RunReport,
    Stage,
    output_name,
    run_stage,
    stage_fingerprint,
)
from tokenmill.stages._common import nulls_option
from tokenmill.stages.dedup_cluster import (
    BUCKETS_DIR,
    DedupSummary,
    cluster_documents,
    write_clusters,
)
from tokenmill.stages.dedup_sign import Source, sign, signed_rows, skipped_rows, work_files

METHODS = ("exact", "minhash")
#: The most permutations a signature may have (`tokenmill_core::minhash::MAX_NUM_PERM`).
MAX_NUM_PERM = 8192
CLUSTERS_NAME = "clusters.parquet"
WORK_DIR = "dedup"


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
    num_perm: int = option(128, "Permutations per MinHash signature.", low=1)
    ngram: int = option(5, "Shingle length, in words or characters.", low=1)
    shingle: str = option("word", "Shingles of words or of characters.", choices=("word", "char"))
    lowercase: bool = option(True, "Lowercase text before shingling.")
    collapse_whitespace: bool = option(
        True,
        "Treat every run of whitespace as one space.",
        flag="--collapse-whitespace/--keep-whitespace",
    )
    strip_punctuation: bool = option(False, "Ignore punctuation and symbols.")
    verify: str = option(
        "estimate",
        "Confirm candidate pairs by estimated or exact Jaccard (minhash).",
        choices=("estimate", "exact"),
    )
    keep: str = option("first", "Which document of a cluster stays.", choices=("first", "longest"))
    text_column: str = option("text", "The text column hashed (else the token column).")
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
class DedupReport:
    summary: DedupSummary
    run: RunReport
    clusters_path: Path
    signed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


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
            Source(options, shard.schema)
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
    signatures = sign(
        dataset,
        work,
        options,
        bands,
        rows,
        created=created,
        batch_size=batch_size,
        progress=progress,
    )
    counts = signatures.counts
    nulls = {
        shard.name: skipped_rows(work_files(work, shard), counts[shard.name])
        for shard in dataset.shards
    }
    where = {name: signed_rows(null, counts[name]) for name, null in nulls.items()}
    summary, keep, clusters = cluster_documents(dataset, options, work, bands, rows, counts, where)
    decision = hashlib.sha256(b"".join(keep[s.name].tobytes() for s in dataset.shards))
    totals = {k: v for k, v in asdict(summary).items() if isinstance(v, int)}
    stage = _FilterStage(options, keep, decision.hexdigest()[:32], totals, nulls)
    if not overwrite:  # before clusters.parquet changes, not after
        refuse_foreign_output(out, stage_fingerprint(stage, fmt))
    clusters_path = out / CLUSTERS_NAME
    write_clusters(dataset, options, clusters, keep, where, clusters_path)
    run = run_stage(
        stage,
        dataset,
        out,
        overwrite=overwrite,
        fmt=fmt,
        batch_size=batch_size,
        progress=progress,
    )
    return DedupReport(summary, run, clusters_path, signatures.signed, signatures.skipped)


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
