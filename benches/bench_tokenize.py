"""Tokenization throughput: tokenmill against Python `tokenizers`, side by side.

Both run the same tokenizer.json (a byte-level BPE trained here on the
corpus) over the same documents, in one process per thread count, and both
produce identical ids (checked before timing). Each figure is the median of
`--repeat` runs after one warm-up.

    python benches/bench_tokenize.py [--corpus ../shared/corpora/pydocs] [--out bench-out]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _harness import CORPORA, REPO, median_seconds

DEFAULT_CORPUS = CORPORA / "pydocs"


def measure(corpus: Path, tokenizer_path: Path, repeat: int) -> dict[str, Any]:
    """Runs in a child whose RAYON_NUM_THREADS was set before either library loaded."""
    import pyarrow as pa
    import tokenizers

    import tokenmill

    table = tokenmill.open_dataset(corpus).to_table(columns=["text"])
    texts = table.column("text").combine_chunks()
    as_list = texts.to_pylist()
    text_bytes = sum(len(t.encode()) for t in as_list)

    ours = tokenmill.load_tokenizer(tokenizer_path)
    theirs = tokenizers.Tokenizer.from_file(str(tokenizer_path))
    reference = [e.ids for e in theirs.encode_batch(as_list, add_special_tokens=False)]
    produced = ours.tokenize(texts).to_pylist()
    if produced != reference:
        raise SystemExit("token ids differ from Python tokenizers: refusing to time")
    tokens = sum(len(ids) for ids in reference)

    runs = {
        "tokenizers encode_batch": lambda: theirs.encode_batch(as_list, add_special_tokens=False),
        "tokenizers encode_batch_fast": lambda: theirs.encode_batch_fast(
            as_list, add_special_tokens=False
        ),
        "tokenmill Tokenizer.tokenize (Arrow in, Arrow out)": lambda: ours.tokenize(texts),
    }
    seconds = {name: median_seconds(run, repeat) for name, run in runs.items()}

    with tempfile.TemporaryDirectory() as scratch:

        def stage() -> None:
            tokenmill.tokenize(
                corpus, Path(scratch) / "out", tokenizer_path, overwrite=True, progress=False
            )

        seconds["tokenmill tokenize stage (Parquet in, Parquet out)"] = median_seconds(
            stage, repeat
        )
    del pa
    return {
        "threads": tokenmill.num_threads(),
        "documents": len(as_list),
        "text_bytes": text_bytes,
        "tokens": tokens,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    parser.add_argument("--vocab-size", type=int, default=32_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, os.cpu_count() or 1])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = measure(args.corpus, args.child, args.repeat)
        print(json.dumps(result))
        return

    import tokenmill
    from tokenmill.tokenizer import save_tokenizer

    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer_path = args.out / "bench-tokenizer.json"
    save_tokenizer(
        tokenmill.train_tokenizer(args.corpus, args.vocab_size, progress=False), tokenizer_path
    )
    results = []
    for threads in sorted(set(args.threads)):
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENMILL_NUM_THREADS=str(threads))
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--corpus",
                str(args.corpus),
                "--repeat",
                str(args.repeat),
                "--child",
                str(tokenizer_path),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(child.stdout))

    lines = [
        f"corpus: {args.corpus} ({results[0]['documents']} documents, "
        f"{results[0]['text_bytes'] / 1e6:.1f} MB, {results[0]['tokens']:,} tokens, "
        f"byte-level BPE with {args.vocab_size:,} tokens)",
        "",
        "| threads | implementation | tokens/s | MB/s | vs tokenizers encode_batch |",
        "|---:|---|---:|---:|---:|",
    ]
    for result in results:
        baseline = result["seconds"]["tokenizers encode_batch"]
        for name, secs in result["seconds"].items():
            lines.append(
                f"| {result['threads']} | {name} | {result['tokens'] / secs / 1e6:.2f}M | "
                f"{result['text_bytes'] / secs / 1e6:.1f} | {baseline / secs:.2f}x |"
            )
    report = "\n".join(lines)
    print(report)
    (args.out / "tokenize.md").write_text(report + "\n")
    (args.out / "tokenize.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
