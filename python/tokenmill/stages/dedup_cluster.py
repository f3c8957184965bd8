"""dedup's second phase, *cluster*, once over all shards: documents sharing a
band bucket are checked (estimated or exact Jaccard), joined by union-find,
and one per cluster is kept. Buckets spill to disk past ``memory_budget``;
signatures are memory-mapped, never loaded whole. Also the cluster report,
``clusters.parquet``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill import _core
from tokenmill._fs import atomic_path
from tokenmill.dataset import Dataset
from tokenmill.stages.dedup_sign import work_files

if TYPE_CHECKING:
    from tokenmill.stages.dedup import DedupOptions

#: Where buckets spill, under the work folder.
BUCKETS_DIR = "buckets"


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


def cluster_documents(
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
    files = [work_files(work, shard) for shard in dataset.shards]
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


def write_clusters(
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
