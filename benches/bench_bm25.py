"""BM25 retrieval: tokenmill's index against bm25s, one thread, same corpus and queries.

Queries are eight-word spans of random documents; both score with Lucene's
BM25 (k1 1.5, b 0.75) over lowercased `\\w\\w+` words, no stopwords, and
return the top 10.

    python benches/bench_bm25.py [--corpus ../shared/corpora/pydocs] [--queries 2000]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from _harness import CORPORA, REPO, median_seconds, shown

os.environ["TOKENMILL_NUM_THREADS"] = "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPORA / "pydocs")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    args = parser.parse_args()

    import bm25s

    import tokenmill
    from tokenmill._core import Bm25Index

    texts = tokenmill.open_dataset(args.corpus).to_table(columns=["text"]).column("text")
    texts = texts.combine_chunks()
    as_list = texts.to_pylist()
    rng = np.random.default_rng(0)
    queries = []
    for doc in rng.integers(0, len(as_list), args.queries):
        words = as_list[doc].split()
        start = int(rng.integers(0, max(len(words) - 8, 1)))
        queries.append(" ".join(words[start : start + 8]))
    query_array = pa.array(queries)

    ours = Bm25Index(texts)
    theirs = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    theirs.index(bm25s.tokenize(as_list, stopwords=None, show_progress=False), show_progress=False)

    def bm25s_search() -> None:
        tokens = bm25s.tokenize(queries, stopwords=None, show_progress=False)
        theirs.retrieve(tokens, k=10, show_progress=False, n_threads=1)

    seconds = {
        "bm25s (numpy backend, n_threads=1), tokenizing included": median_seconds(
            bm25s_search, args.repeat
        ),
        "tokenmill Bm25Index.search, tokenizing included": median_seconds(
            lambda: ours.search(query_array, 10), args.repeat
        ),
    }
    build = {
        "bm25s index": median_seconds(
            lambda: bm25s.BM25(method="lucene").index(
                bm25s.tokenize(as_list, stopwords=None, show_progress=False), show_progress=False
            ),
            1,
        ),
        "tokenmill index": median_seconds(lambda: Bm25Index(texts), args.repeat),
    }
    baseline = seconds["bm25s (numpy backend, n_threads=1), tokenizing included"]
    lines = [
        f"corpus: {shown(args.corpus)} ({len(as_list)} documents), {len(queries)} queries, top 10, "
        "one thread",
        "",
        "| implementation | queries/s | speed-up |",
        "|---|---:|---:|",
    ]
    for name, secs in seconds.items():
        lines.append(f"| {name} | {len(queries) / secs:,.0f} | {baseline / secs:.1f}x |")
    lines.append("")
    lines.append("index build: " + ", ".join(f"{name} {secs:.2f}s" for name, secs in build.items()))
    report = "\n".join(lines)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bm25.md").write_text(report + "\n")
    (args.out / "bm25.json").write_text(json.dumps({"search": seconds, "build": build}) + "\n")


if __name__ == "__main__":
    main()
