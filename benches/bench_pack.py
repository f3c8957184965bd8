"""Packing decision throughput: tokenmill's best-fit decreasing against a
Python best-fit decreasing over a segment tree (the approach TRL ships),
side by side, one core, on the same web-like document lengths.

Both decide the same thing: which row each document goes to, in windows of
`--buffer` documents with rows of `--seq-len` tokens. Fill ratios are
printed beside the speed, and must agree.

    python benches/bench_pack.py [--documents 200000] [--out bench-out]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from _harness import REPO, median_seconds

os.environ["TOKENMILL_NUM_THREADS"] = "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--buffer", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    args = parser.parse_args()

    import tokenmill
    from tokenmill.bench import python_best_fit_decreasing

    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(500), 1.0, args.documents), 16, 32_000).astype(np.uint32)
    # Documents longer than a row are cut first, by both sides alike.
    full, tail = np.divmod(lengths, args.seq_len)
    pieces = np.concatenate([np.repeat(args.seq_len, full.sum()), tail[tail > 0]]).astype(np.uint32)
    pieces = rng.permutation(pieces)  # full pieces spread through the windows as in a shard
    windows = [pieces[i : i + args.buffer] for i in range(0, len(pieces), args.buffer)]
    as_lists = [w.tolist() for w in windows]

    def ours() -> int:
        return sum(
            int(tokenmill._core.best_fit_decreasing(w, args.seq_len).max()) + 1 for w in windows
        )

    def theirs() -> int:
        return sum(max(python_best_fit_decreasing(w, args.seq_len)) + 1 for w in as_lists)

    rows_ours, rows_theirs = ours(), theirs()
    fill_ours = pieces.sum() / (rows_ours * args.seq_len)
    fill_theirs = pieces.sum() / (rows_theirs * args.seq_len)
    seconds = {
        "Python best-fit decreasing, segment tree": median_seconds(theirs, 1),
        "tokenmill best_fit_decreasing (Rust)": median_seconds(ours, args.repeat),
    }
    baseline = seconds["Python best-fit decreasing, segment tree"]
    lines = [
        f"{args.documents:,} documents (log-normal lengths, median 500 tokens) cut into "
        f"{len(pieces):,} pieces of at most {args.seq_len}; windows of {args.buffer:,}; one thread",
        f"fill: tokenmill {fill_ours:.5f}, Python {fill_theirs:.5f}",
        "",
        "| implementation | documents/s | speed-up |",
        "|---|---:|---:|",
    ]
    for name, secs in seconds.items():
        lines.append(f"| {name} | {len(pieces) / secs / 1e6:.2f}M | {baseline / secs:.1f}x |")
    report = "\n".join(lines)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pack.md").write_text(report + "\n")
    (args.out / "pack.json").write_text(
        json.dumps({"seconds": seconds, "pieces": len(pieces)}) + "\n"
    )


if __name__ == "__main__":
    main()
