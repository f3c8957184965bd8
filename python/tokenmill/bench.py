"""`tokenmill bench`: the throughput suite, on the demo corpus or your own.

Each stage's kernel is timed with one thread and with every core, beside the
tool users would otherwise pick when it is installed (Python `tokenizers`,
datasketch, a Python best-fit decreasing, Hugging Face `transformers`'
masked-LM collator). Figures are medians of a few runs after a warm-up,
measured side by side in one process. The `benches/`
scripts run the same comparisons at full size on the shared corpora.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tokenmill import _core
from tokenmill._core import ConfigError
from tokenmill._fs import write_atomic
from tokenmill.dataset import open_dataset

SUITES = ("tokenize", "dedup", "pack", "bm25", "negatives", "corrupt")


@dataclass
class Measurement:
    suite: str
    implementation: str
    threads: int
    throughput: float
    unit: str
    baseline: str | None = None
    speedup: float | None = None


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    """Median wall time of `repeat` calls, after one warm-up call."""
    run()
    times = []
    for _ in range(max(repeat, 1)):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def python_best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[int]:
    """Best-fit decreasing in pure Python over a max segment tree of rooms,
    the approach TRL ships; the reference `pack` is measured against."""
    size = 1
    while size < capacity + 1:
        size *= 2
    tree = [0] * (2 * size)
    rows_with_room: list[list[int]] = [[] for _ in range(capacity + 1)]

    def set_room(room: int, present: bool) -> None:
        i = size + room
        tree[i] = room if present else 0
        i //= 2
        while i:
            tree[i] = max(tree[2 * i], tree[2 * i + 1])
            i //= 2

    def smallest_room_at_least(need: int) -> int:
        if tree[1] < need:
            return -1
        i = 1
        while i < size:  # go left whenever the left half has a big enough room
            i = 2 * i if tree[2 * i] >= need else 2 * i + 1
        return i - size

    row_of = [0] * len(lengths)
    rows = 0
    for item in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        need = lengths[item]
        room = smallest_room_at_least(need)
        if room < 0:
            row, room = rows, capacity
            rows += 1
        else:
            row = rows_with_room[room].pop()
            if not rows_with_room[room]:
                set_room(room, False)
        row_of[item] = row
        left = room - need
        if left:
            rows_with_room[left].append(row)
            set_room(left, True)
    return row_of


def _thread_counts() -> list[int]:
    cores = os.cpu_count() or 1
    return sorted({1, cores})


def _with_threads(threads: int, run: Callable[[], object]) -> Callable[[], object]:
    def wrapped() -> object:
        _core.set_num_threads(threads)
        try:
            return run()
        finally:
            _core.set_num_threads(0)

    return wrapped


def _bench_tokenize(texts: pa.Array, workdir: Path, repeat: int) -> list[Measurement]:
    from tokenmill.tokenizer import save_tokenizer

    trainer = _core.BpeTrainer()
    trainer.add(texts)
    tokenizer = trainer.train(8192)
    path = save_tokenizer(tokenizer, workdir / "tokenizer.json")
    tokens = sum(len(ids) for ids in tokenizer.tokenize(texts).to_pylist())
    out = []
    baseline = None
    try:
        import tokenizers

        reference = tokenizers.Tokenizer.from_file(str(path))
        as_list = texts.to_pylist()
        seconds = median_seconds(
            lambda: reference.encode_batch(as_list, add_special_tokens=False), repeat
        )
        baseline = "tokenizers encode_batch (all cores)"
        out.append(
            Measurement("tokenize", baseline, os.cpu_count() or 1, tokens / seconds, "tokens/s")
        )
    except ImportError:
        pass
    for threads in _thread_counts():
        seconds = median_seconds(_with_threads(threads, lambda: tokenizer.tokenize(texts)), repeat)
        out.append(
            Measurement(
                "tokenize",
                "tokenmill Tokenizer.tokenize",
                threads,
                tokens / seconds,
                "tokens/s",
                baseline,
            )
        )
    return out


def _bench_dedup(texts: pa.Array, repeat: int) -> list[Measurement]:
    megabytes = sum(len(t.encode()) for t in texts.to_pylist()) / 1e6
    out = []
    baseline = None
    try:
        import datasketch

        as_list = texts.to_pylist()

        def datasketch_run() -> None:
            for text in as_list:
                words = text.lower().split()
                sketch = datasketch.MinHash(num_perm=128)
                sketch.update_batch(
                    [" ".join(words[i : i + 5]).encode() for i in range(len(words) - 4)]
                )

        baseline = "datasketch MinHash (one core)"
        out.append(
            Measurement("dedup", baseline, 1, megabytes / median_seconds(datasketch_run, 1), "MB/s")
        )
    except ImportError:
        pass
    for threads in _thread_counts():
        seconds = median_seconds(
            _with_threads(threads, lambda: _core.minhash_signatures(texts)), repeat
        )
        out.append(
            Measurement(
                "dedup",
                "tokenmill MinHash, 128 permutations",
                threads,
                megabytes / seconds,
                "MB/s",
                baseline,
            )
        )
        seconds = median_seconds(_with_threads(threads, lambda: _core.text_hashes(texts)), repeat)
        out.append(
            Measurement(
                "dedup", "tokenmill exact hash (normalized)", threads, megabytes / seconds, "MB/s"
            )
        )
    return out


def _bench_pack(repeat: int, documents: int = 100_000, seq_len: int = 2048) -> list[Measurement]:
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(500), 1.0, documents), 1, seq_len).astype(np.uint32)
    windows = [lengths[i : i + 10_000] for i in range(0, documents, 10_000)]
    as_lists = [w.tolist() for w in windows]
    python = median_seconds(lambda: [python_best_fit_decreasing(w, seq_len) for w in as_lists], 1)
    ours = median_seconds(lambda: [_core.best_fit_decreasing(w, seq_len) for w in windows], repeat)
    baseline = "Python best-fit decreasing, segment tree"
    return [
        Measurement("pack", baseline, 1, documents / python, "documents/s"),
        Measurement(
            "pack", "tokenmill best-fit decreasing", 1, documents / ours, "documents/s", baseline
        ),
    ]


#: The corruption collators the `corrupt` suite times, by mode.
CORRUPT_COLLATORS = {
    "mlm": "MLMCollator",
    "span": "SpanCorruptionCollator",
    "bart": "DenoisingCollator",
    "prefix": "PrefixLMCollator",
    "ul2": "UL2Collator",
}


def _hf_mlm_collator(tokenizer_path: Path) -> Any | None:
    """Hugging Face's `DataCollatorForLanguageModeling` over the same
    tokenizer file, or None when `transformers` is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Imported by name: transformers is an optional extra, untyped to mypy.
            transformers: Any = importlib.import_module("transformers")
            tokenizer = transformers.PreTrainedTokenizerFast(
                tokenizer_file=str(tokenizer_path), mask_token="<mask>", pad_token="<pad>"
            )
            return transformers.DataCollatorForLanguageModeling(tokenizer, return_tensors="np")
    except ImportError:
        return None


def _bench_corrupt(
    texts: pa.Array, workdir: Path, repeat: int, rows: int = 128, batches: int = 4
) -> list[Measurement]:
    """Each mode's collator over `batches` batches of `rows` rows of 512
    tokens (568 for span, which T5 corrupts into 512) from a 2-D array, with
    one thread and every core; mlm also from a list of `{"input_ids": [...]}`
    rows beside Hugging Face's collator, which takes that form."""
    from tokenmill import collate
    from tokenmill.objectives import objective
    from tokenmill.tokenizer import save_tokenizer

    trainer = _core.BpeTrainer()
    trainer.add(texts)
    tokenizer = trainer.train(8192)
    path = save_tokenizer(tokenizer, workdir / "corrupt-tokenizer.json")
    stream = tokenizer.tokenize(texts, eos_id=tokenizer.token_to_id("</s>")).flatten()
    ids = stream.to_numpy().astype(np.int64)
    if len(ids) == 0:
        raise ConfigError("the corpus has no tokens to corrupt; pass a corpus with text")

    def make_batches(width: int) -> list[np.ndarray]:
        need = rows * width * batches
        tiled = np.tile(ids, need // len(ids) + 1)[:need]
        return list(tiled.reshape(batches, rows, width))

    def run_all(collator: Callable[[Any], object], data: Sequence[Any]) -> Callable[[], object]:
        return lambda: [collator(b) for b in data]

    out = []
    baseline = None
    hf = _hf_mlm_collator(path)
    plain = make_batches(512)
    as_dicts = [[{"input_ids": row.tolist()} for row in b] for b in plain]
    if hf is not None:
        baseline = "HF DataCollatorForLanguageModeling (list of dicts)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seconds = median_seconds(run_all(hf, as_dicts), repeat)
        out.append(
            Measurement("corrupt", baseline, 1, plain[0].size * batches / seconds, "tokens/s")
        )
    mlm = collate.MLMCollator(path, return_tensors="np")
    seconds = median_seconds(_with_threads(1, run_all(mlm, as_dicts)), repeat)
    out.append(
        Measurement(
            "corrupt",
            "tokenmill MLMCollator (list of dicts)",
            1,
            plain[0].size * batches / seconds,
            "tokens/s",
            baseline,
        )
    )
    for mode, name in CORRUPT_COLLATORS.items():
        # Rows that corrupt into 512 inputs: span's are longer (T5's length helper).
        spec = objective(mode)
        width = spec.raw_length(spec.defaults(), 512) if spec.raw_length else 512
        data = plain if width == 512 else make_batches(width)
        collator = getattr(collate, name)(path, return_tensors="np")
        for threads in _thread_counts():
            seconds = median_seconds(_with_threads(threads, run_all(collator, data)), repeat)
            out.append(
                Measurement(
                    "corrupt",
                    f"tokenmill {name} (2-D array)",
                    threads,
                    rows * width * batches / seconds,
                    "tokens/s",
                    baseline if mode == "mlm" else None,
                )
            )
    return out


def _queries(texts: pa.Array, count: int | None = 2000, words: int = 8) -> pa.Array:
    """Eight-word spans of random documents, as the BM25 bench script makes
    them; with `count=None`, one span of each document, in order."""
    rng = np.random.default_rng(0)
    as_list = texts.to_pylist()
    out = []
    picks = range(len(as_list)) if count is None else rng.integers(0, len(as_list), count)
    for doc in picks:
        split = as_list[doc].split()
        start = int(rng.integers(0, max(len(split) - words, 1)))
        out.append(" ".join(split[start : start + words]))
    return pa.array(out)


def _bench_bm25(texts: pa.Array, repeat: int) -> list[Measurement]:
    queries = _queries(texts)
    out = []
    baseline = None
    try:
        import bm25s

        as_list = texts.to_pylist()
        reference = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
        reference.index(
            bm25s.tokenize(as_list, stopwords=None, show_progress=False), show_progress=False
        )
        query_list = queries.to_pylist()

        def bm25s_run() -> None:
            tokens = bm25s.tokenize(query_list, stopwords=None, show_progress=False)
            reference.retrieve(tokens, k=10, show_progress=False, n_threads=1)

        baseline = "bm25s retrieve, top 10 (one core)"
        seconds = median_seconds(bm25s_run, repeat)
        out.append(Measurement("bm25", baseline, 1, len(queries) / seconds, "queries/s"))
    except ImportError:
        pass
    index = _core.Bm25Index(texts)
    for threads in _thread_counts():
        seconds = median_seconds(_with_threads(threads, lambda: index.search(queries, 10)), repeat)
        out.append(
            Measurement(
                "bm25",
                "tokenmill Bm25Index.search, top 10",
                threads,
                len(queries) / seconds,
                "queries/s",
                baseline,
            )
        )
    return out


def _bench_negatives(texts: pa.Array, repeat: int, vectors: int = 20_000) -> list[Measurement]:
    """Mining as the `negatives` stage does it: every document's own crop as
    its query, ranked against all documents; and exact cosine mining over
    random 64-dimensional vectors."""
    queries = _queries(texts, count=None)
    rows = np.arange(len(texts), dtype=np.uint64)
    # A tiny corpus (the tests') has too few distinct texts for four negatives.
    k = 4 if len(texts) >= 100 else 1
    out = []
    if len(texts) > k:
        miner = _core.NegativeMiner(texts, strategy="bm25", num_negatives=k, column="text")
        for threads in _thread_counts():
            seconds = median_seconds(
                _with_threads(threads, lambda: miner.mine(queries, rows, rows, column="text")),
                repeat,
            )
            out.append(
                Measurement(
                    "negatives",
                    f"tokenmill BM25 mining over {len(texts):,} documents",
                    threads,
                    len(texts) / seconds,
                    "queries/s",
                )
            )
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(vectors, 64)).astype(np.float32)
    noisy = (docs + 0.5 * rng.normal(size=docs.shape)).astype(np.float32)
    for threads in _thread_counts():
        seconds = median_seconds(
            _with_threads(
                threads, lambda: _core.mine_embedding_arrays(docs, noisy, num_negatives=4)
            ),
            1,
        )
        out.append(
            Measurement(
                "negatives",
                f"tokenmill exact cosine mining, {vectors:,} x {vectors:,}, dim 64",
                threads,
                vectors / seconds,
                "queries/s",
            )
        )
    return out


def run_bench(
    corpus: str | Path | None = None,
    *,
    suites: Sequence[str] = SUITES,
    repeat: int = 3,
    output: str | Path | None = None,
    png: bool = False,
) -> list[Measurement]:
    """Runs the suites and returns their measurements; writes `bench.json`,
    `bench.md` and, with `png`, `bench.png` to `output` when given."""
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ConfigError(
            f"no suite named {', '.join(unknown)}; the suites are {', '.join(SUITES)}"
        )
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        if corpus is None:
            from tokenmill.demo import build_corpus

            corpus = build_corpus(workdir / "corpus", code_bytes=1_000_000)
        texts = open_dataset(corpus).to_table(columns=["text"]).column("text").combine_chunks()
        results: list[Measurement] = []
        if "tokenize" in suites:
            results += _bench_tokenize(texts, workdir, repeat)
        if "dedup" in suites:
            results += _bench_dedup(texts, repeat)
        if "pack" in suites:
            results += _bench_pack(repeat)
        if "bm25" in suites:
            results += _bench_bm25(texts, repeat)
        if "negatives" in suites:
            results += _bench_negatives(texts, repeat)
        if "corrupt" in suites:
            results += _bench_corrupt(texts, workdir, repeat)
    baselines = {(m.suite, m.implementation): m.throughput for m in results if m.baseline is None}
    for m in results:
        if m.baseline is not None and (m.suite, m.baseline) in baselines:
            m.speedup = m.throughput / baselines[(m.suite, m.baseline)]
    if output is not None:
        folder = Path(output)
        write_atomic(
            folder / "bench.json", json.dumps([asdict(m) for m in results], indent=2).encode()
        )
        write_atomic(folder / "bench.md", (format_table(results) + "\n").encode())
        if png:
            save_chart(results, folder / "bench.png")
    return results


def format_table(results: Sequence[Measurement]) -> str:
    lines = [
        "| suite | implementation | threads | throughput | vs baseline |",
        "|---|---|---:|---:|---:|",
    ]
    for m in results:
        ratio = f"{m.speedup:.1f}x" if m.speedup is not None else ""
        lines.append(
            f"| {m.suite} | {m.implementation} | {m.threads} | "
            f"{m.throughput:,.0f} {m.unit} | {ratio} |"
        )
    return "\n".join(lines)


def save_chart(results: Sequence[Measurement], path: Path) -> None:
    """One bar chart per suite, throughput on a log scale."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as missing:
        raise ConfigError("--png needs matplotlib; pip install matplotlib") from missing
    suites = [s for s in SUITES if any(m.suite == s for m in results)]
    figure, axes = plt.subplots(len(suites), 1, figsize=(9, 2.2 * len(suites) + 0.5), squeeze=False)
    for axis, suite in zip(axes[:, 0], suites, strict=True):
        rows = [m for m in results if m.suite == suite]
        labels = [f"{m.implementation} ({m.threads}t)" for m in rows]
        axis.barh(
            labels,
            [m.throughput for m in rows],
            color=[
                "#999999"
                if m.baseline is None and "tokenmill" not in m.implementation
                else "#2a6fdb"
                for m in rows
            ],
        )
        axis.set_xscale("log")
        # Start below the slowest bar, so every bar shows its length on the log axis.
        axis.set_xlim(left=min(m.throughput for m in rows) / 4)
        axis.set_xlabel(rows[0].unit)
        axis.set_title(suite, loc="left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
