"""Dedup throughput: tokenmill's MinHash against datasketch, side by side, one core.

Both hash the same shingles (word 5-grams of lowercased, whitespace-collapsed
text) with 128 permutations. datasketch is timed twice: as users call it
(Python builds the shingle strings, `update_batch` hashes them) and handed
the shingles ready-made, which isolates its hashing. Exact dedup is timed as
MB/s of 128-bit content hashing, with and without normalization.

    python benches/bench_dedup.py [--corpus ../shared/corpora/licenses] [--out bench-out]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from _harness import CORPORA, REPO, median_seconds, shown

DEFAULT_CORPUS = CORPORA / "licenses"

# One core for every contender: set before the Rust pool starts.
os.environ["TOKENMILL_NUM_THREADS"] = "1"
os.environ["RAYON_NUM_THREADS"] = "1"


def _shingles(text: str, n: int = 5) -> list[bytes]:
    words = text.lower().split()
    return [" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import datasketch

    import tokenmill

    texts = tokenmill.open_dataset(args.corpus).to_table(columns=["text"]).column("text")
    texts = texts.combine_chunks()
    as_list = texts.to_pylist()
    mb = sum(len(t.encode()) for t in as_list) / 1e6

    def datasketch_as_used() -> None:
        for text in as_list:
            sketch = datasketch.MinHash(num_perm=128)
            sketch.update_batch(_shingles(text))

    ready = [_shingles(text) for text in as_list]

    def datasketch_hashing_only() -> None:
        for shingles in ready:
            sketch = datasketch.MinHash(num_perm=128)
            sketch.update_batch(shingles)

    seconds = {
        "datasketch MinHash, shingling in Python (as used)": median_seconds(datasketch_as_used, 1),
        "datasketch MinHash, shingles given": median_seconds(datasketch_hashing_only, 1),
        "tokenmill minhash.signatures (Arrow in, numpy out)": median_seconds(
            lambda: tokenmill.minhash.signatures(texts), args.repeat
        ),
        "tokenmill exact hash, lowercase + whitespace": median_seconds(
            lambda: tokenmill._core.text_hashes(texts), args.repeat
        ),
        "tokenmill exact hash, raw bytes": median_seconds(
            lambda: tokenmill._core.text_hashes(texts, lowercase=False, collapse_whitespace=False),
            args.repeat,
        ),
    }
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        seconds["tokenmill dedup stage, minhash (sign, LSH, cluster, write)"] = median_seconds(
            lambda: tokenmill.dedup(
                args.corpus, Path(scratch) / "o", overwrite=True, progress=False
            ),
            args.repeat,
        )

    baseline = seconds["datasketch MinHash, shingling in Python (as used)"]
    lines = [
        f"corpus: {shown(args.corpus)} ({len(as_list)} documents, {mb:.1f} MB), one thread, "
        "128 permutations, word 5-grams",
        "",
        "| implementation | seconds | MB/s | speed-up vs datasketch as used |",
        "|---|---:|---:|---:|",
    ]
    for name, secs in seconds.items():
        lines.append(f"| {name} | {secs:.3f} | {mb / secs:.1f} | {baseline / secs:.1f}x |")
    report = "\n".join(lines)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dedup.md").write_text(report + "\n")
    (args.out / "dedup.json").write_text(
        json.dumps({"mb": mb, "seconds": seconds}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
