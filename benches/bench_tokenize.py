"""Tokenization throughput: tokenmill beside the encoders users would otherwise pick.

Every implementation runs the same tokenizer.json over the same documents,
in one child process per thread count (RAYON_NUM_THREADS is set before any
library loads, and the child is pinned to that many cores), and is timed
only once its ids equal Python `tokenizers`' on every document; a peer
that gives other ids, or cannot load the file, is listed as such and not
timed.

- **cold**: a fresh instance's first pass over the corpus (loading excluded);
- **unseen**: a fresh instance that has encoded the odd documents, timed
  on the even ones: a stream of new documents of the same kind, as a
  stage or collator sees;
- **warm**: the median of `--repeat` further passes over the whole corpus
  on one instance (encoders that cache whole text segments gain most here).

Each peer is called through its fastest bulk API, named in the table.

    python benches/bench_tokenize.py [--corpora pydocs debref] [--threads 1 2] [--out bench-out]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import CORPORA, REPO

SHARED_TOKENIZERS = REPO.parent / "shared" / "tokenizers"
TOKENIZERS = {
    "trained 32k BPE": None,  # made from pydocs by `tokenmill tokenizer train`
    "gpt2": SHARED_TOKENIZERS / "gpt2.json",
    "cl100k": SHARED_TOKENIZERS / "cl100k_base.json",
    "o200k": SHARED_TOKENIZERS / "o200k_base.json",
    "bert wordpiece": SHARED_TOKENIZERS / "bert-base-uncased-wordpiece.json",
}
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def _tiktoken(path: Path, threads: int) -> Callable[[list[str]], Any] | None:
    """A tiktoken Encoding over a byte-level BPE file (its ids are tiktoken's ranks)."""
    import tiktoken

    config = json.loads(path.read_text())
    if config["model"]["type"] != "BPE":
        return None
    pre = config["pre_tokenizer"]
    steps = pre.get("pretokenizers", [pre]) if pre else []
    split = [s for s in steps if s["type"] == "Split"]
    pattern = split[0]["pattern"]["Regex"] if split else GPT2_PATTERN
    byte_chars = _byte_chars()
    ranks = {}
    for token, token_id in config["model"]["vocab"].items():
        if all(c in byte_chars for c in token):
            ranks[bytes(byte_chars[c] for c in token)] = token_id
    encoding = tiktoken.Encoding("bench", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})

    def run(texts: list[str]) -> Any:
        return encoding.encode_ordinary_batch(texts, num_threads=threads)

    return run


def _byte_chars() -> dict[str, int]:
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _peers(path: Path, threads: int) -> dict[str, Callable[[], Callable[[list[str]], Any]]]:
    """Constructors of each peer's bulk encoder; each call is a fresh instance."""
    import tokenizers

    def hf(fast: bool) -> Callable[[list[str]], Any]:
        reference = tokenizers.Tokenizer.from_file(str(path))
        reference.no_truncation()
        reference.no_padding()
        method = reference.encode_batch_fast if fast else reference.encode_batch
        return lambda texts: method(texts, add_special_tokens=False)

    peers: dict[str, Callable[[], Callable[[list[str]], Any]]] = {
        "tokenizers encode_batch": lambda: hf(False),
        "tokenizers encode_batch_fast": lambda: hf(True),
        "tiktoken encode_ordinary_batch": lambda: _tiktoken(path, threads) or _unsupported(),
    }
    try:
        import fastokens

        def fastokens_run() -> Callable[[list[str]], Any]:
            encoder = fastokens.Tokenizer.from_file(str(path))
            return lambda texts: encoder.encode_batch_flat(texts, add_special_tokens=False)

        peers["fastokens encode_batch_flat"] = fastokens_run
    except ImportError:
        pass
    try:
        import gigatoken

        def gigatoken_run() -> Callable[[list[str]], Any]:
            encoder = gigatoken.Tokenizer(str(path))
            return lambda texts: encoder.encode_batch(texts)

        peers["gigatoken encode_batch (awkward array)"] = gigatoken_run
    except ImportError:
        pass
    return peers


def _unsupported() -> Callable[[list[str]], Any]:
    raise NotImplementedError("not a byte-level BPE")


def _as_lists(name: str, result: Any) -> list[list[int]]:
    """Each peer's output as id lists, for the identity check only."""
    import numpy as np

    if name.startswith("tokenizers"):
        return [e.ids for e in result]
    if name.startswith("fastokens"):
        ids, offsets = result
        flat = np.frombuffer(ids, dtype="<u4")
        bounds = np.frombuffer(offsets, dtype="<u8")
        return [flat[a:b].tolist() for a, b in itertools.pairwise(bounds)]
    if name.startswith("gigatoken"):
        return [list(map(int, row)) for row in result.to_list()]
    return [list(row) for row in result]


def measure(corpus: Path, tokenizer_path: Path, repeat: int) -> dict[str, Any]:
    """Runs in a child whose thread count was fixed before any library loaded."""
    import pyarrow as pa

    import tokenmill

    threads = tokenmill.num_threads()
    column = tokenmill.open_dataset(corpus).to_table(columns=["text"]).column("text")
    texts = column.combine_chunks()
    as_list = texts.to_pylist()
    text_bytes = sum(len(t.encode()) for t in as_list)
    expected = [
        e.ids for e in _peers(tokenizer_path, threads)["tokenizers encode_batch_fast"]()(as_list)
    ]
    tokens = sum(len(ids) for ids in expected)

    odd, even = as_list[1::2], as_list[0::2]
    even_bytes = sum(len(t.encode()) for t in even)
    arrow = {id(as_list): texts, id(odd): pa.array(odd), id(even): pa.array(even)}

    def ours() -> Callable[[list[str]], Any]:
        # A fresh instance, not load_tokenizer's: nothing warmed it yet.
        tokenizer = tokenmill._core.Tokenizer.from_file(tokenizer_path)
        return lambda documents: tokenizer.tokenize(arrow[id(documents)])

    rows: dict[str, dict[str, Any]] = {}
    candidates = {"tokenmill Tokenizer.tokenize (Arrow in, Arrow out)": ours}
    candidates.update(_peers(tokenizer_path, threads))
    for name, make in candidates.items():
        try:
            run = make()
            started = time.perf_counter()
            result = run(as_list)
            cold = time.perf_counter() - started
        except Exception as err:  # a peer that cannot take this file
            rows[name] = {"status": f"cannot load ({type(err).__name__})"}
            continue
        got = result.to_pylist() if name.startswith("tokenmill") else _as_lists(name, result)
        if got != expected:
            rows[name] = {"status": "ids differ"}
            continue
        # The slow references once more, the fast ones `repeat` times.
        passes = 1 if cold > 1.0 else repeat
        times = []
        for _ in range(passes):
            started = time.perf_counter()
            run(as_list)
            times.append(time.perf_counter() - started)
        fresh = make()
        fresh(odd)
        started = time.perf_counter()
        fresh(even)
        unseen = (time.perf_counter() - started) * text_bytes / even_bytes
        rows[name] = {
            "status": "ok",
            "cold": cold,
            "unseen": unseen,
            "warm": statistics.median(times),
        }

    with tempfile.TemporaryDirectory() as scratch:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            tokenmill.tokenize(
                corpus,
                Path(scratch) / "out",
                tokenizer_path,
                eos=False,
                overwrite=True,
                progress=False,
            )
            times.append(time.perf_counter() - started)
        stage = statistics.median(times)
        rows["tokenmill tokenize stage (Parquet in, Parquet out, checksums)"] = {
            "status": "ok",
            "cold": stage,
            "unseen": None,
            "warm": None,
        }
    encoder = tokenmill.load_tokenizer(tokenizer_path).encoder
    return {
        "threads": threads,
        "documents": len(as_list),
        "text_bytes": text_bytes,
        "tokens": tokens,
        "encoder": encoder,
        "rows": rows,
    }


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="*", default=["pydocs", "debref"])
    parser.add_argument("--tokenizers", nargs="*", default=list(TOKENIZERS))
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, os.cpu_count() or 1])
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        # Peers that start pools of their own get no more cores than the
        # thread count either.
        threads = int(os.environ["RAYON_NUM_THREADS"])
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
        print(json.dumps(measure(args.child[0], args.child[1], args.repeat)))
        return

    import tokenmill
    from tokenmill.tokenizer import save_tokenizer

    args.out.mkdir(parents=True, exist_ok=True)
    trained = args.out / "bench-tokenizer-32k.json"
    if not trained.exists():
        save_tokenizer(
            tokenmill.train_tokenizer(CORPORA / "pydocs", 32_000, progress=False), trained
        )
    paths = {name: (TOKENIZERS[name] or trained) for name in args.tokenizers}
    lines = [
        f"{os.cpu_count()} cores, load average before: {_load()}; cold = a fresh instance's "
        "first pass, warm = median of later passes; MB/s of UTF-8 text",
        "",
    ]
    results = []
    for corpus_name in args.corpora:
        for tokenizer_name, path in paths.items():
            for threads in sorted(set(args.threads)):
                env = dict(
                    os.environ, RAYON_NUM_THREADS=str(threads), TOKENMILL_NUM_THREADS=str(threads)
                )
                command = [sys.executable, __file__, "--repeat", str(args.repeat), "--child"]
                child = subprocess.run(
                    [*command, str(CORPORA / corpus_name), str(path)],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                result = json.loads(child.stdout)
                result.update(corpus=corpus_name, tokenizer=tokenizer_name)
                results.append(result)
                lines += _table(result)
                print("\n".join(_table(result)), flush=True)
    lines.append(f"load average after: {_load()}")
    (args.out / "tokenize.md").write_text("\n".join(lines) + "\n")
    (args.out / "tokenize.json").write_text(json.dumps(results, indent=2) + "\n")


def _table(result: dict[str, Any]) -> list[str]:
    megabytes = result["text_bytes"] / 1e6
    rows = result["rows"]
    lines = [
        f"**{result['corpus']}** ({megabytes:.1f} MB, {result['tokens']:,} tokens), "
        f"**{result['tokenizer']}**, {result['threads']} thread(s); tokenmill: {result['encoder']}",
        "",
        "| implementation | cold MB/s | unseen MB/s | warm MB/s | unseen vs encode_batch |",
        "|---|---:|---:|---:|---:|",
    ]
    baseline = rows["tokenizers encode_batch"].get("unseen")
    for name, row in rows.items():
        if row["status"] != "ok":
            lines.append(f"| {name} | {row['status']} | | | |")
            continue
        cells = [f"{megabytes / row[k]:.1f}" if row[k] else "" for k in ("cold", "unseen", "warm")]
        ratio = f"{baseline / row['unseen']:.1f}x" if row["unseen"] and baseline else ""
        lines.append(f"| {name} | {' | '.join(cells)} | {ratio} |")
    return [*lines, ""]


if __name__ == "__main__":
    main()
