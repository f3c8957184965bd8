"""The demo: a small real corpus from the Python installation itself, run
through every stage tokenmill has. No download."""

from __future__ import annotations

import ast
import itertools
import math
import sysconfig
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill._fs import atomic_path, write_atomic
from tokenmill.dataset import open_dataset
from tokenmill.inspection import describe
from tokenmill.stages.dedup import dedup
from tokenmill.stages.negatives import NegativeOptions, negatives
from tokenmill.stages.pack import pack
from tokenmill.stages.pairs import pairs
from tokenmill.stages.sample import sample
from tokenmill.stages.tokenize import tokenize
from tokenmill.tokenizer import save_tokenizer, train_tokenizer

#: Standard-library folders left out of the code slice: tests are huge and
#: repetitive, site-packages is not the standard library.
_SKIPPED_DIRS = {"test", "tests", "site-packages", "idle_test", "__pycache__"}


def _stdlib_sources() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(root.rglob("*.py")):
        parts = set(path.relative_to(root).parts[:-1])
        if parts & _SKIPPED_DIRS:
            continue
        files.append(path)
    return files


def _topics() -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield f"topic/{name}", topics[name]


def _docstrings(sources: list[Path]) -> Iterator[tuple[str, str]]:
    """Each module's docstrings (module, classes, functions) as one document."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sources:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # old escape sequences in some modules
                tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        parts = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    parts.append(doc)
        if parts:
            yield f"docstring/{path.relative_to(root)}", "\n\n".join(parts)


def _code(sources: list[Path], budget_bytes: int) -> Iterator[tuple[str, str]]:
    """A slice of standard-library source: every k-th file, up to `budget_bytes`."""
    root = Path(sysconfig.get_paths()["stdlib"])
    used = 0
    for path in sources[::4]:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if used + len(text) > budget_bytes:
            break
        used += len(text)
        yield f"code/{path.relative_to(root)}", text


def build_corpus(folder: str | Path, *, code_bytes: int = 3_000_000) -> Path:
    """Writes the demo corpus: three Parquet shards with `id`, `text` and `source` columns."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    sources = _stdlib_sources()
    parts: dict[str, Callable[[], Iterator[tuple[str, str]]]] = {
        "topics": _topics,
        "docstrings": lambda: _docstrings(sources),
        "code": lambda: _code(sources, code_bytes),
    }
    for name, documents in parts.items():
        rows = list(documents())
        table = pa.table(
            {
                "id": [doc_id for doc_id, _ in rows],
                "text": [text for _, text in rows],
                "source": [name] * len(rows),
            }
        )
        with atomic_path(out / f"{name}.parquet") as temporary:
            pq.write_table(table, temporary, compression="zstd")
    return out


#: Rows of this many tokens keep the demo's CPU training to seconds per family.
DEMO_SEQ_LEN = 128
#: Steps per family: enough for every family's loss to fall clearly.
DEMO_TRAIN_STEPS = 60
#: Step sizes per objective. The LM families learn a tiny model fast at a
#: high rate; InfoNCE collapses to uniform scores (loss ln(batch documents))
#: at that rate, so it gets a gentler one, a longer warmup, and more steps
#: (its steps are short: 64-token texts).
DEMO_LR = {"contrastive": 5e-4}
DEMO_WARMUP = {"contrastive": 10}
DEMO_STEPS_FACTOR = {"contrastive": 3}
DEMO_TEMPERATURE = 0.05


@dataclass
class DemoResult:
    folder: Path
    lines: list[str]


def run_demo(
    folder: str | Path = "demo-out",
    *,
    vocab_size: int = 8192,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
    train_steps: int = DEMO_TRAIN_STEPS,
    plots: bool = True,
) -> DemoResult:
    """Builds the corpus and runs every stage on it, printing what each made;
    then, with `train_steps` > 0 and PyTorch installed, trains a tiny model
    of every family on it for that many steps on the CPU (`plots`: write
    each run's curves.png)."""
    out = Path(folder)
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        echo(line)

    started = time.perf_counter()
    corpus = build_corpus(out / "corpus")
    summary = describe(corpus, examples=0)
    text = next(c for c in summary.columns if c.name == "text")
    text_mb = (text.text_bytes or 0) / 1e6
    say(f"corpus     {summary.rows:,} documents, {text_mb:.1f} MB of text -> {corpus}")

    deduped = dedup(corpus, out / "dedup", overwrite=True, progress=progress)
    d = deduped.summary
    say(
        f"dedup      minhash at Jaccard 0.8: {d.documents_in:,} -> {d.documents_out:,} documents "
        f"({d.clusters:,} clusters, largest {d.largest_cluster:,}) -> {deduped.run.output}"
    )
    corpus = deduped.run.output
    text = next(c for c in describe(corpus, examples=0).columns if c.name == "text")
    text_mb = (text.text_bytes or 0) / 1e6

    tick = time.perf_counter()
    tokenizer = train_tokenizer(corpus, vocab_size, progress=progress)
    tokenizer_path = save_tokenizer(tokenizer, out / "tokenizer.json")
    say(
        f"tokenizer  byte-level BPE, {tokenizer.vocab_size:,} tokens "
        f"({time.perf_counter() - tick:.1f}s) -> {tokenizer_path}"
    )

    report = tokenize(corpus, out / "tokens", tokenizer_path, overwrite=True, progress=progress)
    rate = report.tokens / max(report.seconds, 1e-9)
    say(
        f"tokenize   {report.tokens:,} tokens, {text_mb * 1e6 / max(report.tokens, 1):.2f} "
        f"bytes/token, {rate / 1e6:.2f}M tokens/s -> {report.output}"
    )

    held_out = sample(
        out / "tokens", out / "valid", 0.05, seed=0, overwrite=True, progress=progress
    )
    kept = sample(
        out / "tokens",
        out / "train",
        0.05,
        seed=0,
        invert=True,
        overwrite=True,
        progress=progress,
    )
    valid_rows = held_out.manifest.totals["rows"] if held_out.manifest else 0
    train_rows = kept.manifest.totals["rows"] if kept.manifest else 0
    say(
        f"sample     {train_rows:,} train / {valid_rows:,} validation documents "
        f"(5% held out by row key) -> {kept.output}, {held_out.output}"
    )

    packed = pack(out / "train", out / "packed", 1024, overwrite=True, progress=progress)
    fill = packed.manifest.ratios["fill"] if packed.manifest else 0.0
    say(
        f"pack       {packed.rows:,} rows of <= 1024 tokens by best-fit decreasing, "
        f"fill {fill:.2%} -> {packed.output}"
    )

    # Cropping needs a few words per document: keep those with at least 16.
    table = open_dataset(corpus).to_table(columns=["id", "text"])
    if table.num_rows > 4:
        import pyarrow.compute as pc

        words = pc.list_value_length(pc.utf8_split_whitespace(table.column("text")))
        long_enough = table.filter(pc.greater_equal(words, 16))
        folder = out / "contrastive-docs"
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "docs.parquet") as temporary:
            pq.write_table(long_enough, temporary, compression="zstd")
        made = pairs(folder, out / "pairs", "crop", seed=0, overwrite=True, progress=progress)
        say(
            f"pairs      {made.rows:,} (query, positive) rows by independent cropping "
            f"(Contriever) -> {made.output}"
        )
        mined = negatives(
            out / "pairs",
            out / "negatives",
            NegativeOptions(strategy="bm25", num_negatives=4),
            overwrite=True,
            progress=progress,
        )
        totals = mined.manifest.totals if mined.manifest else {}
        say(
            f"negatives  4 BM25-hard negatives per row (ranks 0-99, margin 0.95), "
            f"{totals.get('negatives_topped_up', 0):,} random top-ups, "
            f"{mined.seconds:.1f}s -> {mined.output}"
        )

    if train_steps > 0:
        _train_every_family(out, tokenizer_path, train_steps, progress, say, plots=plots)

    say(
        f"done in {time.perf_counter() - started:.1f}s; look inside with: "
        f"tokenmill inspect {out / 'tokens'} --tokenizer {tokenizer_path}"
    )
    write_atomic(out / "summary.txt", ("\n".join(lines) + "\n").encode())
    return DemoResult(out, lines)


def _chunk_documents(source: Path, folder: Path, length: int) -> Path:
    """Token documents cut into chunks of 2 to `length` tokens, as one shard."""
    import numpy as np

    tokens = open_dataset(source).to_table(columns=["input_ids"]).column("input_ids")
    pieces = []
    for chunk in tokens.chunks:
        offsets = chunk.offsets.to_numpy()
        values = chunk.values
        for start, end in itertools.pairwise(offsets):
            for piece in range(int(start), int(end), length):
                if min(int(end), piece + length) - piece >= 2:
                    pieces.append((piece, min(int(end), piece + length), values))
    flat = pa.concat_arrays([v.slice(a, b - a) for a, b, v in pieces])
    offsets = np.concatenate([[0], np.cumsum([b - a for a, b, _ in pieces])]).astype(np.int32)
    column = pa.ListArray.from_arrays(pa.array(offsets), flat)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "chunks.parquet") as temporary:
        pq.write_table(pa.table({"input_ids": column}), temporary)
    return folder


def _train_every_family(
    out: Path,
    tokenizer_path: Path,
    steps: int,
    progress: bool | None,
    say: Callable[[str], None],
    *,
    plots: bool = True,
) -> None:
    try:
        from tokenmill.train import TrainConfig, loss_means, train
    except ImportError:
        say("train      skipped: PyTorch is not installed (pip install torch)")
        return
    from tokenmill.objectives import CORRUPT_MODES as MODES
    from tokenmill.stages.corrupt import corrupt

    tick = time.perf_counter()
    # The prefix split needs 2 tokens per document, and packing a long
    # document leaves a tail of any length: cut documents into chunks of at
    # most DEMO_SEQ_LEN first, keep those of 2 tokens or more, then pack.
    _chunk_documents(out / "train", out / "chunks", DEMO_SEQ_LEN)
    pack(out / "chunks", out / "packed-128", DEMO_SEQ_LEN, overwrite=True, progress=progress)
    for mode in MODES:
        corrupt(
            out / "packed-128",
            out / f"corrupt-{mode}",
            mode,
            tokenizer_path,
            overwrite=True,
            progress=progress,
        )
    say(
        f"corrupt    {', '.join(MODES)} from rows packed to {DEMO_SEQ_LEN} tokens "
        f"({time.perf_counter() - tick:.1f}s) -> {out / 'corrupt-MODE'}"
    )
    sources = {"clm": out / "packed-128", "contrastive": out / "negatives"}
    for objective in ("clm", *MODES, "contrastive"):
        data = sources.get(objective, out / f"corrupt-{objective}")
        if not data.exists():
            continue
        config = TrainConfig(
            objective=objective,
            data=str(data),
            output=str(out / "runs" / objective),
            steps=steps * DEMO_STEPS_FACTOR.get(objective, 1),
            batch_size=8,
            lr=DEMO_LR.get(objective, 2e-3),
            warmup=min(steps, DEMO_WARMUP.get(objective, max(1, steps // 10))),
            device="cpu",
            tokenizer=str(tokenizer_path),
            eval_batches=4,
            log_every=max(1, steps // 10),
            contrastive_max_len=64,
            temperature=DEMO_TEMPERATURE,
            # Hold out enough pairs that recall@10 is not near-certain by chance.
            eval_fraction=0.15 if objective == "contrastive" else 0.05,
            overwrite=True,
            threads=2,
            plots=plots,
        )
        result = train(config, echo=lambda _: None)
        first, last = loss_means(list(result.losses.values()))
        final = result.final
        extra = ""
        if "bits_per_byte" in final:
            extra = f", {final['bits_per_byte']:.2f} bits/byte"
        if objective == "contrastive":
            # Uniform scores give ln(documents per batch): the loss must fall below it.
            documents = config.batch_size * (1 + _negatives_per_row(data))
            extra = (
                f" (uniform ln({documents}) = {math.log(documents):.2f})"
                f", recall@10 {final['recall@10']:.2f} over {int(final['pool'])} "
                f"(BM25 {final.get('bm25_recall@10', 0):.2f}, "
                f"random {final['random_recall@10']:.2f})"
            )
        say(
            f"train      {objective:<11} tiny, {config.steps} steps on CPU in "
            f"{result.seconds:4.1f}s: "
            f"train loss {first:.2f} -> {last:.2f} (mean of first / last 5 steps), "
            f"eval loss {final['loss']:.2f}{extra} -> {result.output}"
        )


def _negatives_per_row(data: Path) -> int:
    dataset = open_dataset(data)
    if "negatives" not in dataset.schema.names:
        return 0
    column = dataset.to_table(columns=["negatives"]).column("negatives")
    import pyarrow.compute as pc

    lengths = pc.list_value_length(column)
    return int(pc.max(lengths).as_py() or 0)
