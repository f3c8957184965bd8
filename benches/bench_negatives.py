"""Negative mining at scale: time and peak memory of `tokenmill negatives`.

The shared corpora hold ~1,200 documents, too few for this, so the corpus is
synthetic: `--docs` documents of 40 to 120 words drawn from a Zipf(1.1)
vocabulary of 50,000 words, each paired with a query of 8 to 16 words
cropped from it, and, for the embedding strategy, random 64-dimensional
vectors (the query a noisy copy of its positive). Each strategy runs in a
fresh process through the full stage (Parquet in, Parquet out) with every
core; the figure is that process's peak RSS (`ru_maxrss`), which includes
the input table held to build the corpus.

    python benches/bench_negatives.py [--docs 100000] [--strategy bm25 --strategy embedding]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from _harness import REPO


def synthetic_pairs(folder: Path, docs: int, dim: int, shards: int = 4) -> Path:
    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}" for i in range(50_000)])
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    weights = ranks**-1.1
    weights /= weights.sum()
    lengths = rng.integers(40, 121, docs)
    words = rng.choice(len(vocab), size=int(lengths.sum()), p=weights)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    positives, queries = [], []
    for i in range(docs):
        doc = vocab[words[starts[i] : starts[i + 1]]]
        span = int(rng.integers(8, 17))
        at = int(rng.integers(0, len(doc) - span + 1))
        positives.append(" ".join(doc))
        queries.append(" ".join(doc[at : at + span]))
    vectors = rng.normal(size=(docs, dim)).astype(np.float32)
    noisy = (vectors + 0.5 * rng.normal(size=(docs, dim))).astype(np.float32)
    table = pa.table(
        {
            "id": np.arange(docs, dtype=np.int64),
            "query": queries,
            "positive": positives,
            "query_embedding": pa.FixedSizeListArray.from_arrays(pa.array(noisy.ravel()), dim),
            "positive_embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-docs // shards)
    for s in range(shards):
        pq.write_table(table.slice(s * per, per), folder / f"part-{s}.parquet")
    return folder


def run_one(source: Path, strategy: str, k: int, out: Path) -> dict[str, float]:
    """Runs in a child process, so its peak RSS is this strategy's alone."""
    import tokenmill

    started = time.perf_counter()
    report = tokenmill.negatives(
        source,
        out,
        tokenmill.NegativeOptions(strategy=strategy, num_negatives=k),
        overwrite=True,
        progress=False,
    )
    seconds = time.perf_counter() - started
    totals = report.manifest.totals if report.manifest else {}
    return {
        "seconds": seconds,
        "rows": float(totals.get("rows", 0)),
        "topped_up": float(totals.get("negatives_topped_up", 0)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--num-negatives", type=int, default=4)
    parser.add_argument(
        "--strategy", action="append", choices=["random", "bm25", "embedding"], default=None
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    parser.add_argument("--child", nargs=2, metavar=("SOURCE", "STRATEGY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        source, strategy = Path(args.child[0]), args.child[1]
        result = run_one(source, strategy, args.num_negatives, source.parent / f"out-{strategy}")
        print(json.dumps(result))
        return

    strategies = args.strategy or ["random", "bm25", "embedding"]
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        source = synthetic_pairs(Path(scratch) / "pairs", args.docs, args.dim)
        print(f"synthetic corpus: {time.perf_counter() - started:.1f}s", file=sys.stderr)
        results = {}
        for strategy in strategies:
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(source),
                    strategy,
                    "--num-negatives",
                    str(args.num_negatives),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            results[strategy] = json.loads(child.stdout.strip().splitlines()[-1])
    lines = [
        f"{args.docs:,} queries x {args.docs:,} documents (synthetic), "
        f"{args.num_negatives} negatives per row, {os.cpu_count()} threads, full stage",
        "",
        "| strategy | time | queries/s | peak RSS | top-ups |",
        "|---|---:|---:|---:|---:|",
    ]
    for strategy, r in results.items():
        lines.append(
            f"| {strategy} | {r['seconds']:.1f}s | {r['rows'] / r['seconds']:,.0f} | "
            f"{r['peak_rss_mib']:,.0f} MiB | {int(r['topped_up']):,} |"
        )
    report = "\n".join(lines)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "negatives.md").write_text(report + "\n")
    (args.out / "negatives.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
