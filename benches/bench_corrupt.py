"""Corruption throughput: tokenmill's collators against the implementations
users would otherwise pick, side by side in one run, on one core, over real
tokens of the Python documentation.

1. mlm: `MLMCollator` vs Hugging Face `DataCollatorForLanguageModeling`,
   [32, 512] batches; tokenmill also from a 2-D numpy array, from an Arrow
   list array, and the raw kernel (`Corruptor.corrupt`, Arrow in and out).
2. span: `SpanCorruptionCollator` vs a numpy rewrite of the Flax T5
   example's collator (`reference_t5.py`), [32, 568] rows -> 512 / 114.
3. whole-word mlm at 128, 512, 2048 and 8192 tokens per row (the same
   tokens per batch) vs `DataCollatorForLanguageModeling(whole_word_mask=True)`
   (transformers 5 replaced `DataCollatorForWholeWordMask` with it; it finds
   words from offset gaps, so both sides use a WordPiece tokenizer trained
   here: a byte-level BPE's offsets have no gaps and make each row one word).
4. bart: `DenoisingCollator` vs a per-sample PyTorch noiser in the style of
   fairseq's `DenoisingDataset` (`reference_bart.py`), [32, 512] rows.
5. ceiling: numpy copy of an int32 buffer of one batch.

Tokenizers are trained here on the corpus; nothing is downloaded.

    python benches/bench_corrupt.py [--batches 16] [--repeat 5] [--out bench-out]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ["TOKENMILL_NUM_THREADS"] = "1"
os.environ["RAYON_NUM_THREADS"] = "1"

import numpy as np
import pyarrow as pa

from _harness import CORPORA, REPO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_bart import TorchBartNoiser
from reference_t5 import NumpyT5Collator

ROWS = 32
Result = dict[str, Any]


@dataclass
class Job:
    """One implementation's pass over its batches, timed by :func:`race`."""

    run: Callable[[Any], object]
    batches: Sequence[Any]
    tokens: int
    passes: int


def tokens_per_second(
    run: Callable[[Any], object], batches: Sequence[Any], tokens: int, passes: int
) -> Job:
    """A pass of `run` over `batches` (`tokens` input tokens), best of `passes`."""
    return Job(run, batches, tokens, passes)


# "turns": the jobs of a section take turns, pass by pass, so a burst of
# load from elsewhere hits every side alike, and each pass starts with caches
# the previous job filled, as a collator's does in a loader. "blocks": each
# job's passes run back to back (as timeit does), so later passes find the
# job's own batches still in cache.
SCHEDULE = "turns"


def race(results: list[Result]) -> list[Result]:
    """Times the jobs of one section (a warm-up batch each, then passes in
    the order :data:`SCHEDULE` says); keeps each job's best pass."""
    jobs: list[Job] = [r.pop("job") for r in results]
    for job in jobs:
        job.run(job.batches[0])
    best = [float("inf")] * len(jobs)
    if SCHEDULE == "turns":
        order = [
            i
            for round_ in range(max(job.passes for job in jobs))
            for i, job in enumerate(jobs)
            if round_ < job.passes
        ]
    else:
        order = [i for i, job in enumerate(jobs) for _ in range(job.passes)]
    # As timeit does: no cyclic collection of one side's garbage (the Python
    # lists of the baselines) lands in another side's pass.
    gc.collect()
    gc.disable()
    try:
        for i in order:
            job = jobs[i]
            started = time.perf_counter()
            for batch in job.batches:
                job.run(batch)
            best[i] = min(best[i], time.perf_counter() - started)
    finally:
        gc.enable()
    for result, job, seconds in zip(results, jobs, best, strict=True):
        result["tokens_per_s"] = job.tokens / seconds
    return results


def arrow_rows(block: np.ndarray) -> pa.Array:
    rows, width = block.shape
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    values = pa.array(block.reshape(-1).astype(np.uint32))
    return pa.ListArray.from_arrays(offsets, values)


def dict_rows(block: np.ndarray) -> list[dict[str, list[int]]]:
    return [{"input_ids": row.tolist()} for row in block]


def blocks(stream: np.ndarray, count: int, rows: int, width: int) -> list[np.ndarray]:
    need = count * rows * width
    if len(stream) < need:
        stream = np.tile(stream, need // len(stream) + 1)
    return list(stream[:need].reshape(count, rows, width))


def entry(
    section: str, implementation: str, form: str, job: Job, baseline: str | None = None
) -> Result:
    return {
        "section": section,
        "implementation": implementation,
        "input": form,
        "job": job,
        "baseline": baseline,
    }


# --- 1. mlm ---------------------------------------------------------------


def bench_mlm(
    stream: np.ndarray, bpe_path: Path, hf_tokenizer: Any, count: int, repeat: int
) -> list[Result]:
    from transformers import DataCollatorForLanguageModeling

    from tokenmill.collate import MLMCollator

    data = blocks(stream, count, ROWS, 512)
    tokens = count * ROWS * 512
    as_dicts = [dict_rows(b) for b in data]
    as_arrow = [arrow_rows(b) for b in data]
    hf = DataCollatorForLanguageModeling(hf_tokenizer, mlm_probability=0.15, return_tensors="pt")
    ours = MLMCollator(bpe_path, return_tensors="pt", seed=0)
    base = "HF DataCollatorForLanguageModeling"
    out = [entry("mlm", base, "list of dicts", tokens_per_second(hf, as_dicts, tokens, repeat))]
    for form, batches in (("list of dicts", as_dicts), ("2-D numpy", data), ("Arrow", as_arrow)):
        rate = tokens_per_second(ours, batches, tokens, repeat)
        out.append(entry("mlm", "tokenmill MLMCollator", form, rate, base))
    kernel = tokens_per_second(
        lambda a: ours.corruptor.corrupt(a, seed=0), as_arrow, tokens, repeat
    )
    out.append(entry("mlm", "tokenmill Corruptor.corrupt (kernel)", "Arrow", kernel, base))
    return race(out)


# --- 2. span --------------------------------------------------------------


def bench_span(stream: np.ndarray, bpe_path: Path, count: int, repeat: int) -> list[Result]:
    from tokenmill import _core
    from tokenmill.collate import SpanCorruptionCollator
    from tokenmill.tokenizer import sentinel_ids

    raw, target = _core.t5_input_and_target_lengths(512)
    data = blocks(stream, count, ROWS, raw)
    tokens = count * ROWS * raw
    as_dicts = [dict_rows(b) for b in data]
    as_arrow = [arrow_rows(b) for b in data]
    ours = SpanCorruptionCollator(bpe_path, return_tensors="np", seed=0)
    tok = ours.tokenizer
    eos = tok.token_to_id("</s>")
    assert eos is not None
    reference = NumpyT5Collator(sentinel_ids(tok), eos, ours.pad_id, seed=0)
    for made in (ours(as_dicts[0]), reference(as_dicts[0])):
        assert made["input_ids"].shape == (ROWS, 512), made["input_ids"].shape
        assert made["labels"].shape == (ROWS, target), made["labels"].shape
    base = "numpy Flax T5 collator"
    out = [
        entry(
            "span", base, "list of dicts", tokens_per_second(reference, as_dicts, tokens, repeat)
        ),
        entry("span", base, "2-D numpy", tokens_per_second(reference, data, tokens, repeat)),
    ]
    for form, batches in (("list of dicts", as_dicts), ("2-D numpy", data), ("Arrow", as_arrow)):
        rate = tokens_per_second(ours, batches, tokens, repeat)
        out.append(entry("span", "tokenmill SpanCorruptionCollator", form, rate, base))
    # The reference returns no attention mask (static shapes need none); so,
    # for the same three outputs, neither does this one.
    same_outputs = SpanCorruptionCollator(
        bpe_path, return_tensors="np", seed=0, return_attention_mask=False
    )
    assert set(same_outputs(data[0])) == set(reference(data[0]))
    for form, batches in (("list of dicts", as_dicts), ("2-D numpy", data), ("Arrow", as_arrow)):
        rate = tokens_per_second(same_outputs, batches, tokens, repeat)
        name = "tokenmill SpanCorruptionCollator, no attention_mask"
        out.append(entry("span", name, form, rate, base))
    kernel = tokens_per_second(
        lambda a: ours.corruptor.corrupt(a, seed=0), as_arrow, tokens, repeat
    )
    out.append(entry("span", "tokenmill Corruptor.corrupt (kernel)", "Arrow", kernel, base))
    return race(out)


# --- 3. whole-word mlm scaling --------------------------------------------


def train_wordpiece(texts: list[str], path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=16_000,
        special_tokens=["<pad>", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.save(str(path))


def wordpiece_stream(texts: list[str], hf_tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every document's ids and character offsets, one stream; offsets are
    shifted per document, with a gap so a document never continues a word."""
    encoded = hf_tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets, base = [], [], 0
    for row_ids, row_offsets in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        if not row_ids:
            continue
        spans = np.asarray(row_offsets, dtype=np.int64) + base
        ids.append(np.asarray(row_ids, dtype=np.int64))
        offsets.append(spans)
        base = int(spans[-1, 1]) + 1
    return np.concatenate(ids), np.concatenate(offsets)


def bench_whole_word(
    texts: list[str],
    workdir: Path,
    lengths: Sequence[int],
    batch_tokens: int,
    count: int,
    repeat: int,
) -> list[Result]:
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    from tokenmill.collate import MLMCollator

    path = workdir / "wordpiece.json"
    train_wordpiece(texts, path)
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(path), mask_token="[MASK]", pad_token="<pad>", unk_token="[UNK]"
    )
    ids, offsets = wordpiece_stream(texts, hf_tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random token replacement is not supported"
        hf = DataCollatorForLanguageModeling(
            hf_tokenizer, whole_word_mask=True, mlm_probability=0.15, return_tensors="pt"
        )
    # HF whole-word masking replaces every chosen token by the mask; so does ours here.
    ours = MLMCollator(path, whole_word=True, mask_rate=1.0, random_rate=0.0, return_tensors="pt")
    out: list[Result] = []
    tokens = count * batch_tokens
    for length in lengths:
        rows = batch_tokens // length
        id_blocks = blocks(ids, count, rows, length)
        offset_blocks = list(
            np.tile(offsets, (tokens // len(offsets) + 1, 1))[:tokens].reshape(
                count, rows, length, 2
            )
        )
        hf_batches = [
            [
                {
                    "input_ids": r.tolist(),
                    "offset_mapping": o.tolist(),
                    "special_tokens_mask": [0] * length,
                }
                for r, o in zip(b, ob, strict=True)
            ]
            for b, ob in zip(id_blocks, offset_blocks, strict=True)
        ]
        our_batches = [dict_rows(b) for b in id_blocks]
        section: list[Result] = []
        base = f"HF whole_word_mask, L={length}"
        section.append(
            entry(
                "whole-word",
                base,
                "list of dicts",
                tokens_per_second(hf, hf_batches, tokens, min(repeat, 2)),
            )
        )
        rate = tokens_per_second(ours, our_batches, tokens, repeat)
        section.append(
            entry("whole-word", f"tokenmill whole-word, L={length}", "list of dicts", rate, base)
        )
        rate = tokens_per_second(ours, id_blocks, tokens, repeat)
        section.append(
            entry("whole-word", f"tokenmill whole-word, L={length}", "2-D numpy", rate, base)
        )
        out += race(section)
    return out


# --- 4. bart --------------------------------------------------------------


def bench_bart(stream: np.ndarray, bpe_path: Path, count: int, repeat: int) -> list[Result]:
    from tokenmill.collate import DenoisingCollator

    ours = DenoisingCollator(bpe_path, return_tensors="pt", seed=0)
    tok = ours.tokenizer
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    assert bos is not None and eos is not None
    data = blocks(stream, count, ROWS, 512)
    for block in data:  # fairseq's rows: <s> ... </s>
        block[:, 0], block[:, -1] = bos, eos
    tokens = count * ROWS * 512
    as_dicts = [dict_rows(b) for b in data]
    as_arrow = [arrow_rows(b) for b in data]
    as_tensors = [list(_torch().from_numpy(b)) for b in data]
    options = ours.options
    word_start = [
        (token := tok.id_to_token(i)) is None
        or ours.corruptor.vocab.is_special(i)
        or token.startswith(("\u0120", "\u010a", "\u2581"))
        for i in range(tok.vocab_size)
    ]
    reference = TorchBartNoiser(
        word_start,
        options["sentence_end_ids"],
        mask_id=options["mask_id"],
        pad_id=ours.pad_id,
        eos_id=eos,
        vocab_size=tok.vocab_size,
        seed=0,
    )
    base = "PyTorch fairseq-style DenoisingDataset"
    out = [
        entry(
            "bart",
            base,
            "list of tensors",
            tokens_per_second(reference, as_tensors, tokens, repeat),
        )
    ]
    for form, batches in (("list of dicts", as_dicts), ("2-D numpy", data), ("Arrow", as_arrow)):
        rate = tokens_per_second(ours, batches, tokens, repeat)
        out.append(entry("bart", "tokenmill DenoisingCollator", form, rate, base))
    kernel = tokens_per_second(
        lambda a: ours.corruptor.corrupt(a, seed=0), as_arrow, tokens, repeat
    )
    out.append(entry("bart", "tokenmill Corruptor.corrupt (kernel)", "Arrow", kernel, base))
    return race(out)


def _torch() -> Any:
    import torch

    return torch


# --- 5. ceiling -----------------------------------------------------------


def bench_copy(count: int, repeat: int) -> list[Result]:
    data = [np.arange(ROWS * 512, dtype=np.int32) + i for i in range(count)]
    rate = tokens_per_second(np.copy, data, count * ROWS * 512, repeat)
    return race([entry("ceiling", "numpy copy of an int32 batch", "2-D numpy", rate)])


# --- report ---------------------------------------------------------------


def with_ratios(results: list[Result]) -> list[Result]:
    """Each tokenmill figure against its baseline fed the same input form, or,
    where the baseline did not take that form, against its fastest form."""
    bases: dict[str, dict[str, float]] = {}
    for r in results:
        if r["baseline"] is None:
            bases.setdefault(r["implementation"], {})[r["input"]] = r["tokens_per_s"]
    for r in results:
        r["speedup"] = r["baseline_input"] = None
        forms = bases.get(r["baseline"] or "")
        if forms:
            form = r["input"] if r["input"] in forms else max(forms, key=forms.__getitem__)
            r["baseline_input"] = form
            r["speedup"] = r["tokens_per_s"] / forms[form]
    return results


def table(results: list[Result]) -> str:
    lines = [
        "| section | implementation | input | tokens/s | vs baseline (its input) |",
        "|---|---|---|---:|---:|",
    ]
    for r in results:
        ratio = ""
        if r["speedup"] is not None:
            ratio = f"{r['speedup']:.1f}x ({r['baseline_input']})"
        lines.append(
            f"| {r['section']} | {r['implementation']} | {r['input']} | "
            f"{r['tokens_per_s'] / 1e6:,.2f}M | {ratio} |"
        )
    return "\n".join(lines)


def chart(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = list(dict.fromkeys(r["section"] for r in results))
    heights = [sum(r["section"] == s for r in results) for s in sections]
    figure, axes = plt.subplots(
        len(sections),
        1,
        figsize=(10, 0.32 * sum(heights) + 1.2 * len(sections)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for axis, section in zip(axes[:, 0], sections, strict=True):
        rows = [r for r in results if r["section"] == section]
        axis.barh(
            [f"{r['implementation']} ({r['input']})" for r in rows],
            [r["tokens_per_s"] for r in rows],
            color=["#2a6fdb" if "tokenmill" in r["implementation"] else "#999999" for r in rows],
        )
        axis.invert_yaxis()
        axis.set_xscale("log")
        axis.set_xlim(left=min(r["tokens_per_s"] for r in rows) / 4)
        axis.set_title(f"{section} (tokens/s, one core)", loc="left")
        axis.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPORA / "pydocs")
    parser.add_argument("--batches", type=int, default=16, help="batches per measured pass")
    # Five: on a shared 2-core VM a pass, or a whole process, can run a
    # third slower than the next; the best of five settles.
    parser.add_argument("--repeat", type=int, default=5, help="passes; the best counts")
    parser.add_argument(
        "--sections",
        default="mlm,span,whole-word,bart,ceiling",
        help="comma-separated subset of mlm,span,whole-word,bart,ceiling",
    )
    parser.add_argument("--lengths", default="128,512,2048,8192", help="whole-word row lengths")
    parser.add_argument(
        "--schedule",
        choices=["turns", "blocks"],
        default="turns",
        help="turns: sides alternate pass by pass (cold caches); blocks: each side's passes "
        "back to back (timeit's way)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    global SCHEDULE
    SCHEDULE = args.schedule

    import torch
    from transformers import PreTrainedTokenizerFast

    import tokenmill
    from tokenmill import _core
    from tokenmill.dataset import open_dataset
    from tokenmill.tokenizer import save_tokenizer

    started = time.perf_counter()
    texts = open_dataset(args.corpus).to_table(columns=["text"]).column("text").combine_chunks()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        bpe = tokenmill.train_tokenizer(args.corpus, 16_000, progress=False)
        bpe_path = save_tokenizer(bpe, workdir / "bpe.json")
        stream = bpe.tokenize(texts, eos_id=bpe.token_to_id("</s>")).flatten().to_numpy()
        stream = stream.astype(np.int64)
        hf_bpe = PreTrainedTokenizerFast(
            tokenizer_file=str(bpe_path),
            mask_token="<mask>",
            pad_token="<pad>",
            bos_token="<s>",
            eos_token="</s>",
        )
        print(
            f"{len(stream):,} tokens of {args.corpus.name} (byte-level BPE, 16k); "
            f"setup {time.perf_counter() - started:.1f}s; load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        _core.set_num_threads(1)
        torch.set_num_threads(1)
        if "ceiling" in sections:
            results += bench_copy(args.batches, args.repeat)
        if "mlm" in sections:
            results += bench_mlm(stream, bpe_path, hf_bpe, args.batches, args.repeat)
        if "span" in sections:
            results += bench_span(stream, bpe_path, args.batches, args.repeat)
        if "bart" in sections:
            results += bench_bart(stream, bpe_path, max(args.batches // 4, 1), args.repeat)
        if "whole-word" in sections:
            lengths = [int(n) for n in args.lengths.split(",")]
            results += bench_whole_word(
                texts.to_pylist(),
                workdir,
                lengths,
                batch_tokens=max(ROWS * 512, max(lengths)),
                count=max(args.batches // 2, 1),
                repeat=args.repeat,
            )
    results = with_ratios(results)
    load = os.getloadavg()
    report = "\n".join(
        [
            f"one thread; batches of {ROWS} rows ({args.batches} per pass, best of {args.repeat}, "
            f"passes in {args.schedule}); "
            f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end",
            "",
            table(results),
        ]
    )
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "corrupt.md").write_text(report + "\n")
    (args.out / "corrupt.json").write_text(
        json.dumps({"load_average": load, "results": results}, indent=2) + "\n"
    )
    chart(results, args.out / "corrupt.png")
    print(f"wrote {args.out / 'corrupt.md'}, corrupt.json, corrupt.png")


if __name__ == "__main__":
    main()
