"""The training loop: one function, :func:`train`, for every objective.

Data per objective (checked against the manifest before anything trains):

- `clm` reads `pack` output (packed rows with `seq_lens`) through
  :class:`~tokenmill.collate.CausalLMCollator`; documents of a row never
  attend each other and no loss crosses a document start.
- `mlm`, `span`, `bart`, `prefix`, `ul2` read `corrupt` output of the same
  mode: rows already corrupted (`input_ids`, `labels`, and `seq_lens` /
  `prefix_lens` where the mode keeps them). Corrupting offline makes each
  run's data a file you can inspect and the noise fixed per `corrupt
  --epoch`; for fresh noise every epoch, train your own loop on the
  collators of :mod:`tokenmill.collate`.
- `contrastive` reads `pairs` or `negatives` output through
  :class:`~tokenmill.contrastive.ContrastiveBatchSampler` and
  :class:`~tokenmill.contrastive.ContrastiveCollator`.

Held-out rows come from `eval_data`, or else a fixed `eval_fraction` of
DATA's rows (chosen by a keyed hash of the row index) that training never
reads. Batches follow a deterministic order (`TokenDataset`, or the
contrastive sampler), so a checkpoint stores the data position as (epoch,
batches seen) and a resumed run reproduces the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmill import _core
from tokenmill._core import ConfigError, DataError, SchemaError, ShardError
from tokenmill._fs import write_atomic
from tokenmill.collate import IGNORE_INDEX, CausalLMCollator
from tokenmill.contrastive import ContrastiveBatchSampler, ContrastiveCollator
from tokenmill.data import TokenDataset, _Columns
from tokenmill.dataset import Dataset, open_dataset
from tokenmill.models import (
    DecoderLM,
    DualEncoder,
    EncoderDecoder,
    EncoderMLM,
    count_parameters,
    model_config,
)
from tokenmill.objectives import OBJECTIVES, objective
from tokenmill.tokenizer import decoder_start_id, load_tokenizer
from tokenmill.tokenizer import pad_id as pad_id_of

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
#: Parquet datasets up to this size are decoded whole for training (see `_Rows`).
PRELOAD_PARQUET_BYTES = 256 << 20


@dataclass
class TrainConfig:
    objective: str
    data: str
    output: str
    size: str = "tiny"
    steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.1
    clip: float = 1.0
    device: str = "auto"
    seed: int = 0
    eval_data: str | None = None
    eval_fraction: float = 0.05
    eval_batches: int = 8
    eval_every: int = 0
    log_every: int = 10
    checkpoint_every: int = 0
    resume: bool = False
    overwrite: bool = False
    stop_at: int | None = None
    tokenizer: str | None = None
    vocab_size: int | None = None
    max_seq_len: int | None = None
    document_mask: bool = True
    temperature: float = 0.05
    symmetric: bool = False
    contrastive_max_len: int = 128
    compile: bool = False
    threads: int | None = None
    workers: int = 0
    plots: bool = True

    #: Fields a resumed run may change: they do not alter the trajectory.
    RUN_ONLY = (
        "output",
        "resume",
        "overwrite",
        "stop_at",
        "device",
        "threads",
        "workers",
        "plots",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "compile",
        "data",
        "eval_data",
        "tokenizer",
    )

    def trajectory(self) -> dict[str, Any]:
        """The settings a checkpoint must share with the run resuming it."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RUN_ONLY}


@dataclass
class TrainResult:
    output: Path
    losses: dict[int, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    parameters: int = 0
    summary: str = ""


# --- Checking the data ----------------------------------------------------


@dataclass
class DataPlan:
    """What the data is and how the model must be shaped for it."""

    family: str
    dataset: Dataset
    eval_dataset: Dataset | None
    columns: tuple[str, ...]
    pad_id: int
    decoder_start_id: int
    vocab_size: int
    max_len: int
    tokenizer: _core.Tokenizer | None
    prefix_layout: str = "decoder"
    #: The targets are the text itself, so bits per byte means something.
    text_targets: bool = False


def _check_stage(objective: str, dataset: Dataset) -> dict[str, Any]:
    """The manifest's params after checking the data was made for `objective`."""
    manifest = dataset.manifest
    stage = manifest.stage if manifest is not None else None
    params = manifest.params if manifest is not None else {}
    made_for = f"`{stage}`" + (f" --mode {params['mode']}" if stage == "corrupt" else "")
    names = dataset.schema.names
    if objective == "clm":
        if stage in ("corrupt", "pairs", "negatives") or "labels" in names:
            raise SchemaError(
                f"{dataset.root} was made by {made_for}, not for --objective clm: "
                "clm trains on packed token rows; run `tokenmill pack` on token shards"
            )
        if "input_ids" not in names:
            raise SchemaError(f"{dataset.root} has no input_ids; run `tokenmill pack` first")
        if stage != "pack" and "seq_lens" not in names:
            # Unpacked rows would train on padding-ragged batches and, with
            # rows longer than the model, fail later: ask for pack output.
            raise SchemaError(
                f"{dataset.root} was made by {made_for if stage else 'no tokenmill stage'} and "
                "holds unpacked rows: --objective clm trains on `tokenmill pack` output; "
                f"run `tokenmill pack {dataset.root} -o PACKED --seq-len N` and train on PACKED"
            )
    elif OBJECTIVES[objective].corrupts:
        if stage != "corrupt":
            raise SchemaError(
                f"{dataset.root} was made by {made_for if stage else 'no tokenmill stage'}, not "
                f"for --objective {objective}: run `tokenmill corrupt --mode {objective}` and "
                "train on its output"
            )
        if params.get("mode") != objective:
            raise SchemaError(
                f"{dataset.root} was corrupted with --mode {params.get('mode')}, not for "
                f"--objective {objective}; run `tokenmill corrupt --mode {objective}`"
            )
    elif stage not in ("pairs", "negatives") and not {"query", "positive"} <= set(names):
        raise SchemaError(
            f"{dataset.root} was made by {made_for if stage else 'no tokenmill stage'}; "
            "--objective contrastive reads `tokenmill pairs` or `negatives` output"
        )
    return params


def _scan_tokens(dataset: Dataset, columns: tuple[str, ...]) -> tuple[int, int]:
    """The largest token id and the longest row over the token columns (one
    streaming pass, before training, so a bad id fails now and not at step 10k)."""
    largest, longest = -1, 0
    for batch in dataset.iter_batches(8192, columns=list(columns)):
        for name in columns:
            column = batch.column(name)
            values = pc.list_flatten(column)
            if len(values):
                largest = max(largest, int(pc.max(values).as_py()))
            lengths = pc.list_value_length(column)
            if len(lengths):
                longest = max(longest, int(pc.max(lengths).as_py()))
    return largest, longest


def _check_seq_lens(dataset: Dataset) -> None:
    """Packed rows whose seq_lens do not cover them would fail at the first
    batch that holds one, after the run folder is written: find them now."""
    for shard in dataset.shards:
        first = 0
        for batch in shard.iter_batches(8192, columns=["input_ids", "seq_lens"]):
            seq_lens = batch.column("seq_lens")
            covered = np.bincount(
                pc.list_parent_indices(seq_lens).to_numpy(),
                weights=pc.list_flatten(seq_lens).to_numpy(zero_copy_only=False),
                minlength=batch.num_rows,
            ).astype(np.int64)
            lengths = pc.list_value_length(batch.column("input_ids")).fill_null(0).to_numpy()
            bad = np.flatnonzero(covered != lengths)
            if bad.size:
                row = first + int(bad[0])
                problem = (
                    f"seq_lens add up to {covered[bad[0]]} tokens, but the row holds "
                    f"{lengths[bad[0]]}"
                )
                fix = "train on `tokenmill pack` output, unedited"
                err = DataError(f"{shard.path}: row {row}: {problem}; {fix}")
                err.row, err.problem, err.fix = row, problem, fix
                raise err
            first += batch.num_rows


def plan_data(config: TrainConfig) -> DataPlan:
    """Opens and checks the data; every bad input is a typed error here."""
    spec = objective(config.objective)
    dataset = open_dataset(config.data)
    params = _check_stage(config.objective, dataset)
    eval_dataset = open_dataset(config.eval_data) if config.eval_data else None
    if eval_dataset is not None:
        eval_params = _check_stage(config.objective, eval_dataset)
        if spec.corrupts and eval_params.get("options") != params.get("options"):
            raise ConfigError(
                f"{eval_dataset.root} was corrupted with other options than {dataset.root}"
            )
    tokenizer_path = config.tokenizer or params.get("tokenizer")
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
    if config.objective == "contrastive" and tokenizer is None:
        query_type = dataset.schema.field("query").type
        if pa.types.is_string(query_type) or pa.types.is_large_string(query_type):
            raise ConfigError("the pairs hold text: pass --tokenizer tokenizer.json")
        if config.vocab_size is None:
            raise ConfigError(
                f"{dataset.root} holds token ids and names no tokenizer, so the model's "
                "vocabulary is unknown: pass --tokenizer or --vocab-size"
            )
    layout = str(params.get("options", {}).get("layout", "decoder"))
    shape = spec.layout(params.get("options"))
    family = shape.family

    names = dataset.schema.names
    columns = tuple(c for c in ("input_ids", "labels", "seq_lens", "prefix_lens") if c in names)
    if config.objective == "contrastive":
        largest, longest = -1, config.contrastive_max_len
        if tokenizer is None:  # token-id pairs: check their ids against --vocab-size
            id_columns = tuple(
                c
                for c in ("query", "positive")
                if c in names and pa.types.is_list(dataset.schema.field(c).type)
            )
            largest = _scan_tokens(dataset, id_columns)[0]
    else:
        token_columns = tuple(c for c in ("input_ids", "labels") if c in names)
        largest, longest = _scan_tokens(dataset, token_columns)
        if eval_dataset is not None:
            eval_largest, eval_longest = _scan_tokens(eval_dataset, token_columns)
            largest, longest = max(largest, eval_largest), max(longest, eval_longest)
        if config.objective == "clm" and "seq_lens" in names:
            for checked in (dataset, eval_dataset):
                if checked is not None:
                    _check_seq_lens(checked)
        if config.objective == "clm" or family == "encoder-decoder":
            longest += 1  # decoders read one token more than they predict from

    vocab_size = config.vocab_size or (tokenizer.vocab_size if tokenizer else largest + 1)
    if tokenizer is not None and vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f"--vocab-size {vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}"
        )
    if largest >= vocab_size:
        raise DataError(
            f"{dataset.root} holds token id {largest}, outside the model's vocabulary of "
            f"{vocab_size}: it was tokenized with another tokenizer; pass the right "
            "--tokenizer or a larger --vocab-size"
        )
    max_len = config.max_seq_len or max(longest, 1)
    if longest > max_len:
        raise DataError(
            f"{dataset.root} has rows of {longest} tokens, more than --max-seq-len {max_len}; "
            "pack or corrupt with a shorter --seq-len / --input-length"
        )
    pad = pad_id_of(tokenizer) if tokenizer is not None else 0
    start = shape.decoder_start
    # The collators' decoder start: one lookup for both (BART's is EOS).
    start_id = decoder_start_id(tokenizer, start) if tokenizer is not None and start else pad
    return DataPlan(
        family=family,
        dataset=dataset,
        eval_dataset=eval_dataset,
        columns=columns,
        pad_id=pad,
        decoder_start_id=start_id,
        vocab_size=vocab_size,
        max_len=max_len,
        tokenizer=tokenizer,
        prefix_layout=layout,
        text_targets=shape.text_targets,
    )


# --- Batches --------------------------------------------------------------


def _pad(rows: list[npt.NDArray[Any]], value: int) -> tuple[npt.NDArray[np.int64], Any]:
    """Right-padded `[rows, longest]` int64 and the `[rows]` lengths."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    out = np.full((len(rows), int(lengths.max(initial=1))), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out, lengths


def _segments(row: dict[str, Any]) -> npt.NDArray[np.int64]:
    """Document lengths of one row: `seq_lens` when the row has them; for a
    decoder prefix row without them, each document is a run of -100 labels
    (its prefix) followed by a run of targets; else the whole row."""
    if "seq_lens" in row:
        return np.asarray(row["seq_lens"], dtype=np.int64)
    length = len(row["input_ids"])
    if "prefix_lens" in row and len(row["prefix_lens"]) > 1:
        prefix = np.asarray(row["labels"]) == IGNORE_INDEX
        starts = np.flatnonzero(prefix[1:] & ~prefix[:-1]) + 1
        return np.diff(np.concatenate([[0], starts, [length]])).astype(np.int64)
    return np.array([length], dtype=np.int64)


class CorruptedRowCollator:
    """Pads rows of the `corrupt` stage (`input_ids`, `labels`, ...) into
    the keyword arguments of the model family, plus `num_tokens`."""

    def __init__(self, family: str, *, pad_id: int, decoder_start_id: int) -> None:
        self.family = family
        self.pad_id = pad_id
        self.decoder_start_id = decoder_start_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        inputs, lengths = _pad([r["input_ids"] for r in rows], self.pad_id)
        labels, label_lengths = _pad([r["labels"] for r in rows], IGNORE_INDEX)
        out: dict[str, Any] = {"input_ids": inputs, "labels": labels}
        if self.family == "encoder-decoder":
            decoder_inputs = np.full_like(labels, self.pad_id)
            decoder_inputs[:, 0] = self.decoder_start_id
            decoder_inputs[:, 1:] = np.where(
                labels[:, :-1] == IGNORE_INDEX, self.pad_id, labels[:, :-1]
            )
            width = labels.shape[1]
            out["decoder_input_ids"] = decoder_inputs
            out["attention_mask"] = (np.arange(inputs.shape[1]) < lengths[:, None]).astype(np.int64)
            out["decoder_attention_mask"] = (np.arange(width) < label_lengths[:, None]).astype(
                np.int64
            )
        else:
            # Packed rows: per-token document ids (-1 on padding) and
            # positions restarting at every document; for the prefix LM,
            # each document's first prefix_len tokens form its prefix.
            documents = np.full(inputs.shape, -1, dtype=np.int64)
            positions = np.zeros(inputs.shape, dtype=np.int64)
            prefix = np.zeros(inputs.shape, dtype=bool)
            next_document = 0
            for i, row in enumerate(rows):
                segments = _segments(row)
                count = len(segments)
                starts = np.concatenate([[0], np.cumsum(segments)[:-1]])
                documents[i, : lengths[i]] = np.repeat(np.arange(count) + next_document, segments)
                positions[i, : lengths[i]] = np.arange(lengths[i]) - np.repeat(starts, segments)
                if "prefix_lens" in row:
                    prefix_lens = np.asarray(row["prefix_lens"], dtype=np.int64)
                    prefix[i, : lengths[i]] = positions[i, : lengths[i]] < np.repeat(
                        prefix_lens, segments
                    )
                next_document += count
            out["document_ids"] = documents
            out["position_ids"] = positions
            if self.family == "decoder":
                out["prefix_mask"] = prefix
        tensors: dict[str, Any] = {k: torch.from_numpy(v) for k, v in out.items()}
        tensors["num_tokens"] = int(lengths.sum())
        return tensors


class ClmBatch:
    """CausalLMCollator's output as DecoderLM's keyword arguments."""

    def __init__(self, *, pad_id: int, document_mask: bool) -> None:
        self.document_mask = document_mask
        self.collate = CausalLMCollator(pad_id=pad_id, mask_document_starts=document_mask)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate(rows)
        real = batch["attention_mask"]
        out: dict[str, Any] = {"input_ids": batch["input_ids"], "labels": batch["labels"]}
        if self.document_mask:
            out["document_ids"] = batch["document_ids"]
            out["position_ids"] = batch["position_ids"]
        # Else plain causal attention over the row, documents and all: padding
        # is right of every real token, so no real query reaches it.
        out["num_tokens"] = int(real.sum())
        return out


class _Rows(TokenDataset):
    """A TokenDataset over a subset of the rows: training skips the held-out
    rows; evaluation reads only them, in order."""

    def __init__(self, source: Dataset, *, member: npt.NDArray[np.bool_], **kwargs: Any) -> None:
        super().__init__(source, **kwargs)
        self.member = member
        self._subset: tuple[int, npt.NDArray[np.int64]] | None = None
        shards = self.dataset.shards
        if any(s.format == "parquet" for s in shards) and (
            sum(s.size_bytes for s in shards) <= PRELOAD_PARQUET_BYTES
        ):
            # TokenDataset holds one decoded Parquet shard at a time, so a
            # shuffled epoch over several decodes a shard per row: hold
            # small datasets whole instead (large ones should be Arrow IPC).
            for number, shard in enumerate(shards):
                table = shard.read(self.columns)
                self._loaded[number] = {c: _Columns(table.column(c)) for c in self.columns}

    def order(self) -> npt.NDArray[np.int64]:
        if self._subset is None or self._subset[0] != self.epoch:
            full = super().order()
            self._subset = (self.epoch, full[self.member[full]])
        return self._subset[1]


def held_out(rows: int, fraction: float, seed: int) -> npt.NDArray[np.bool_]:
    """Which rows are held out: a keyed hash of the row index, at least one row."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"--eval-fraction {fraction} is not in (0, 1)")
    if rows < 2:
        raise DataError("the data has fewer than 2 rows: nothing to hold out; pass --eval")
    draws = _core.uniform(np.arange(rows, dtype=np.uint64), seed=seed, stage="train-eval", epoch=0)
    mask = draws < fraction
    if not mask.any():
        mask[int(np.argmin(draws))] = True
    return mask


class Stream:
    """An endless, resumable stream of micro-batches: (epoch, batches seen)
    pins down exactly where it stands."""

    def __init__(self, batches: Callable[[int, int], Iterator[dict[str, Any]]]) -> None:
        self._batches = batches
        self.epoch = 0
        self.seen = 0
        self._iterator: Iterator[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_seen": self.seen}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.seen = state["epoch"], state["batches_seen"]
        self._iterator = None

    def __next__(self) -> dict[str, Any]:
        for _ in range(2):
            if self._iterator is None:
                self._iterator = self._batches(self.epoch, self.seen)
            batch = next(self._iterator, None)
            if batch is not None:
                self.seen += 1
                return batch
            self.epoch, self.seen, self._iterator = self.epoch + 1, 0, None
        raise DataError("an epoch of the training data holds no batch; lower --batch-size")


def _token_stream(
    plan: DataPlan, member: npt.NDArray[np.bool_], collate: Any, config: TrainConfig
) -> Stream:
    dataset = _Rows(
        plan.dataset,
        member=member,
        batch_size=config.batch_size,
        seed=config.seed,
        columns=plan.columns,
        drop_last=True,
    )

    def batches(epoch: int, seen: int) -> Iterator[dict[str, Any]]:
        dataset.set_epoch(epoch)
        dataset.load_state_dict(dataset.state_dict(batches_seen=seen))
        # A generator of its own keeps the loader off the global RNG, which
        # a resumed run must find exactly as the checkpoint left it.
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=config.batch_size,
            num_workers=config.workers,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(config.seed),
        )
        for batch in loader:
            # A short last batch would weigh its rows more: drop it, as drop_last does.
            if batch["input_ids"].shape[0] == config.batch_size:
                yield batch

    return Stream(batches)


def _eval_token_batches(
    plan: DataPlan, member: npt.NDArray[np.bool_] | None, collate: Any, config: TrainConfig
) -> list[dict[str, Any]]:
    source = plan.eval_dataset or plan.dataset
    if member is None:
        member = np.ones(source.num_rows, dtype=bool)
    rows = _Rows(
        source,
        member=member,
        batch_size=config.batch_size,
        shuffle=False,
        columns=plan.columns,
        rank=0,
        world_size=1,
    )
    loader = torch.utils.data.DataLoader(
        rows,
        batch_size=config.batch_size,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
    )
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == config.eval_batches:
            break
    return out


# --- Contrastive data -----------------------------------------------------


def _pairs_table(dataset: Dataset) -> pa.Table:
    names = [c for c in ("query", "positive", "negatives") if c in dataset.schema.names]
    return dataset.to_table(columns=names)


def _contrastive(
    plan: DataPlan, config: TrainConfig, rank: int, world: int
) -> tuple[Stream, pa.Table, ContrastiveCollator]:
    table = _pairs_table(plan.dataset)
    if plan.eval_dataset is not None:
        train_rows, eval_rows = table, _pairs_table(plan.eval_dataset)
    else:
        hold = held_out(table.num_rows, config.eval_fraction, config.seed)
        train_rows = table.filter(pa.array(~hold))
        eval_rows = table.filter(pa.array(hold))
    collate = ContrastiveCollator(
        plan.tokenizer,
        pad_id=plan.pad_id,
        query_max_length=config.contrastive_max_len,
        doc_max_length=config.contrastive_max_len,
    )
    # One sampler per epoch: batches share no text, so in-batch negatives are true negatives.
    # Under DDP it gives every rank as many batches (an odd last one is dropped):
    # else one rank would start its next epoch a step before the others, and a
    # resume, which restores rank 0's position on every rank, would misplace them.
    sampler = ContrastiveBatchSampler(
        train_rows,
        config.batch_size,
        seed=config.seed,
        drop_last=True,
        num_replicas=world,
        rank=rank,
    )

    def batches(epoch: int, seen: int) -> Iterator[dict[str, Any]]:
        sampler.set_epoch(epoch)
        for indices in sampler.batches()[seen:]:
            batch = collate(train_rows.take(pa.array(indices)))
            batch["num_tokens"] = int(
                batch["query_attention_mask"].sum() + batch["doc_attention_mask"].sum()
            )
            yield batch

    return Stream(batches), eval_rows, collate


def retrieval_metrics(ranked: npt.NDArray[np.int64], k: int = 10) -> dict[str, float]:
    """recall@k and MRR@k when query `i`'s only relevant document is document `i`."""
    gold = np.arange(len(ranked))[:, None]
    hits = ranked[:, :k] == gold
    found = hits.any(axis=1)
    rank = np.where(found, hits.argmax(axis=1) + 1, np.inf)
    return {f"recall@{k}": float(found.mean()), f"mrr@{k}": float((1.0 / rank).mean())}


def bm25_baseline(eval_rows: pa.Table, k: int = 10) -> dict[str, float]:
    """BM25 over the held-out positives, queried by the held-out queries."""
    positives, queries = eval_rows.column("positive"), eval_rows.column("query")
    index = _core.Bm25Index(positives.combine_chunks())
    ids, _ = index.search(queries.combine_chunks(), min(k, eval_rows.num_rows))
    return retrieval_metrics(np.asarray(ids, dtype=np.int64), k)


# --- Evaluation -----------------------------------------------------------


def byte_lengths(tokenizer: _core.Tokenizer) -> npt.NDArray[np.int64]:
    """UTF-8 bytes each token id stands for (0 for special tokens).

    A byte-level BPE token is written in GPT-2's byte alphabet, one
    character per byte, so its length is exact; other tokenizers fall back
    to decoding the id alone."""
    special = set(_core.special_tokens())
    byte_level = '"ByteLevel"' in tokenizer.to_str(pretty=False)
    lengths = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    for token_id in range(tokenizer.vocab_size):
        token = tokenizer.id_to_token(token_id)
        if token is None or token in special:
            continue
        if byte_level:
            lengths[token_id] = len(token)
        else:
            lengths[token_id] = len(tokenizer.decode([token_id], skip_special_tokens=True).encode())
    return lengths


def _targets(model: nn.Module, batch: dict[str, Any], logits: Tensor) -> tuple[Tensor, Tensor]:
    labels = batch["labels"]
    if getattr(model, "shifts_labels", False):
        return logits[:, :-1], labels[:, 1:]
    if getattr(model, "gathers_targets", False):
        return logits, labels[labels != IGNORE_INDEX]
    return logits, labels


@torch.no_grad()
def evaluate_lm(
    model: nn.Module,
    batches: list[dict[str, Any]],
    device: torch.device,
    autocast: Callable[[], Any],
    bytes_per_id: npt.NDArray[np.int64] | None,
) -> dict[str, float]:
    """Held-out loss (token-weighted), perplexity, accuracy on scored
    tokens, and bits per byte: the summed loss in bits over the UTF-8 bytes
    the scored tokens stand for."""
    model.eval()
    nats, tokens, correct, size = 0.0, 0, 0, 0
    for batch in batches:
        inputs = _to_device(batch, device)
        with autocast():
            _, logits = model(**inputs)
        logits, targets = _targets(model, inputs, logits)
        scored = targets != IGNORE_INDEX
        nats += float(
            F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                targets.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
        )
        tokens += int(scored.sum())
        correct += int(((logits.argmax(-1) == targets) & scored).sum())
        if bytes_per_id is not None:
            ids = targets[scored].cpu().numpy()
            size += int(bytes_per_id[np.clip(ids, 0, len(bytes_per_id) - 1)].sum())
    model.train()
    loss = nats / max(tokens, 1)
    out = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "accuracy": correct / max(tokens, 1),
    }
    if bytes_per_id is not None and size:
        out["bits_per_byte"] = nats / math.log(2) / size
        out["bytes_per_token"] = size / max(tokens, 1)
    return out


@torch.no_grad()
def evaluate_contrastive(
    model: nn.Module,
    eval_rows: pa.Table,
    collate: ContrastiveCollator,
    config: TrainConfig,
    device: torch.device,
    autocast: Callable[[], Any],
) -> dict[str, float]:
    """InfoNCE loss over held-out batches, and retrieval of each held-out
    query's positive among all held-out positives (recall@10, MRR@10), with
    the pool's size and the recall@10 of a random ranking (10 / pool)."""
    model.eval()
    encoder: Any = model
    losses, queries, documents = [], [], []
    for start in range(0, eval_rows.num_rows, config.batch_size):
        rows = eval_rows.slice(start, config.batch_size)
        batch = _to_device(collate(rows), device)
        with autocast():
            loss, _ = model(**batch)
            queries.append(encoder.encode(batch["query_input_ids"], batch["query_attention_mask"]))
            count = rows.num_rows
            documents.append(
                encoder.encode(batch["doc_input_ids"][:count], batch["doc_attention_mask"][:count])
            )
        if start // config.batch_size < config.eval_batches:
            losses.append(float(loss))
    scores = torch.cat(queries) @ torch.cat(documents).T
    ranked = scores.topk(min(10, scores.shape[1]), dim=1).indices.cpu().numpy()
    model.train()
    pool = scores.shape[1]
    return {
        "loss": float(np.mean(losses)),
        **retrieval_metrics(ranked),
        "pool": float(pool),
        "random_recall@10": min(10, pool) / pool,
    }


# --- The loop -------------------------------------------------------------


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True)
        for k, v in batch.items()
        if isinstance(v, Tensor) and k != "num_tokens"
    }


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at `steps`."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name!r} is not a torch device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no CUDA device; pass --device cpu")
    return device


def _optimizer(model: nn.Module, config: TrainConfig, *, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices of the blocks only: not on
    biases and norms (1-D) nor on embeddings (token, position, and so the
    tied LM head), as GPT-2 and nanoGPT do. `parameters()` yields a shared
    tensor once, so a tied embedding lands in one group."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay: list[nn.Parameter] = []
    keep: list[nn.Parameter] = []
    for param in model.parameters():
        (decay if param.dim() >= 2 and id(param) not in embeddings else keep).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), fused=fused)


def target_count(model: nn.Module, batch: dict[str, Any]) -> int:
    """The targets a micro-batch scores: label positions that are not -100
    (after the decoder's shift), or one per query for contrastive batches."""
    labels = batch["labels"]
    if labels.dim() == 1:
        return int(labels.numel())
    if getattr(model, "shifts_labels", False):
        labels = labels[:, 1:]
    return int((labels != IGNORE_INDEX).sum())


def accumulate(
    trained: nn.Module,
    model: nn.Module,
    batches: list[dict[str, Any]],
    device: torch.device,
    autocast: Callable[[], Any],
    *,
    distributed: bool = False,
) -> Tensor:
    """Forward and backward over one step's micro-batches. The gradient is
    that of the loss summed over every target of the window (all
    micro-batches, all ranks) divided by their count, so a micro-batch with
    more targets weighs more, as it would in one big batch. Returns this
    rank's share of the window's token-weighted loss (its targets' summed
    loss over every rank's target count), on the device (no sync): on one
    process the loss itself; under DDP, summed over ranks, the global loss."""
    counts = [target_count(model, b) for b in batches]
    total: Tensor | float = float(max(sum(counts), 1))
    scale = 1.0
    if distributed:
        # DDP averages gradients over ranks: scale by the world size so the
        # result is the sum over every rank's targets / the global count.
        scale = float(dist.get_world_size())
        total_tensor = torch.tensor(float(sum(counts)), device=device)
        dist.all_reduce(total_tensor)
        total = total_tensor.clamp(min=1)
    window = torch.zeros((), device=device)
    for micro, (batch, count) in enumerate(zip(batches, counts, strict=True)):
        sync = contextlib.nullcontext()
        if distributed and micro < len(batches) - 1:
            sync = trained.no_sync()  # type: ignore[operator]
        with sync:
            with autocast():
                loss, _ = trained(**_to_device(batch, device))
            # `loss` is the mean over this micro-batch's targets.
            (loss * (count * scale) / total).backward()
        window += loss.detach().float() * (count / total)
    return window


def train_step(
    trained: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[dict[str, Any]],
    device: torch.device,
    autocast: Callable[[], Any],
    *,
    clip: float,
    distributed: bool = False,
) -> tuple[Tensor, Tensor]:
    """One optimizer step (the path `train` takes, and the GPU bench times):
    accumulate, clip, AdamW. Returns (loss, grad norm) on the device."""
    loss = accumulate(trained, model, batches, device, autocast, distributed=distributed)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip or float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, norm


def build_model(plan: DataPlan, config: TrainConfig, *, use_flex: bool) -> nn.Module:
    mc = model_config(config.size, plan.vocab_size, max_seq_len=plan.max_len)
    if plan.family == "decoder":
        return DecoderLM(mc, use_flex=use_flex)
    if plan.family == "encoder":
        return EncoderMLM(mc, use_flex=use_flex)
    if plan.family == "encoder-decoder":
        return EncoderDecoder(mc, use_flex=use_flex)
    return DualEncoder(
        mc, temperature=config.temperature, symmetric=config.symmetric, use_flex=use_flex
    )


def _validate(config: TrainConfig) -> None:
    for name in ("steps", "batch_size", "grad_accum", "eval_batches", "log_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(config, name)} is below 1")
    # NaN passes every comparison below, and inf trains to NaN weights: both
    # are refused first, before any check that would let them through.
    for name in ("lr", "weight_decay", "clip", "eval_fraction", "temperature"):
        value = getattr(config, name)
        if not math.isfinite(value):
            raise ConfigError(f"--{name.replace('_', '-')} {value} is not a finite number")
    if not 0.0 <= config.min_lr_ratio <= 1.0:
        raise ConfigError(f"min_lr_ratio {config.min_lr_ratio} is not in [0, 1]")
    if config.warmup < 0 or config.lr <= 0 or config.clip < 0:
        raise ConfigError("--warmup must be >= 0, --lr > 0 and --clip >= 0")
    if config.weight_decay < 0 or config.temperature <= 0:
        raise ConfigError("--weight-decay must be >= 0 and --temperature > 0")
    if config.eval_data is None and not 0.0 < config.eval_fraction < 1.0:
        raise ConfigError(
            f"--eval-fraction {config.eval_fraction} is not in (0, 1): pass a fraction "
            "in (0, 1), or held-out data with --eval"
        )
    if config.stop_at is not None and not 0 < config.stop_at <= config.steps:
        raise ConfigError(f"--stop-at {config.stop_at} is not in [1, --steps {config.steps}]")


class _Recorder:
    """metrics.jsonl, written by rank 0 only."""

    def __init__(self, path: Path, active: bool, keep_until: int | None) -> None:
        self.path = path
        self.active = active
        self.records: list[dict[str, Any]] = []
        if active and keep_until is not None and path.exists():
            # A resumed run redoes the steps after its checkpoint: forget them.
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if record["step"] <= keep_until:
                    self.records.append(record)
        if active:
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in self.records).encode())

    def add(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        # Bare NaN and Infinity are not JSON: a metric with no finite value is null.
        record = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in record.items()
        }
        self.records.append(record)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def _identity(config: TrainConfig, plan: DataPlan, world: int) -> dict[str, Any]:
    """What a checkpoint must share with the run resuming it: the settings
    that shape the trajectory, the process count and global batch (the data
    order and the gradient depend on them), and the data itself (its row
    count and its manifest's fingerprint; the path may move)."""
    manifest = plan.dataset.manifest
    return {
        **config.trajectory(),
        "world_size": world,
        "global_batch": config.batch_size * config.grad_accum * world,
        "data_rows": plan.dataset.num_rows,
        "data_fingerprint": manifest.fingerprint if manifest is not None else None,
    }


#: Held-out pools smaller than this make recall@10 coarse (and easy): warn.
MIN_RETRIEVAL_POOL = 100


def train(config: TrainConfig, *, echo: Callable[[str], None] = print) -> TrainResult:
    """Trains `config.objective` on `config.data` into `config.output`; see the module docstring."""
    _validate(config)
    output = Path(config.output)
    checkpoint_path = output / CHECKPOINT
    if config.resume and not checkpoint_path.exists():
        raise ConfigError(f"--resume, but {checkpoint_path} does not exist")
    if not config.resume and not config.overwrite and checkpoint_path.exists():
        raise ConfigError(
            f"{output} already holds a checkpoint: pass --resume to continue it or "
            "--overwrite to start again"
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    plan = plan_data(config)
    # Which rows are held out is settled (and a dataset too small to split
    # refused) before the run folder is written.
    hold = None
    if plan.family != "dual-encoder" and plan.eval_dataset is None:
        hold = held_out(plan.dataset.num_rows, config.eval_fraction, config.seed)
    identity = _identity(config, plan, world)
    checkpoint: dict[str, Any] | None = None
    if config.resume:
        checkpoint = _load_checkpoint(checkpoint_path)
        saved = checkpoint["trajectory"]
        changed = {k: (saved.get(k), v) for k, v in identity.items() if saved.get(k) != v}
        if changed:
            what = ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in changed.items())
            raise ConfigError(
                f"{checkpoint_path} was made with another configuration, process count or "
                f"data: {what}; resume with what it was made with, or start a new run"
            )
        if checkpoint["model_config"] != asdict(
            model_config(config.size, plan.vocab_size, max_seq_len=plan.max_len)
        ):
            raise ConfigError(
                f"{checkpoint_path} holds a model of {checkpoint['model_config']}, but this "
                "data needs another (vocabulary or row length changed); start a new run"
            )

    distributed = world > 1
    rank = 0
    device = _device(config.device)
    owns_group = False
    if distributed:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
            owns_group = True
        rank = dist.get_rank()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    main = rank == 0
    if config.threads:
        torch.set_num_threads(config.threads)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    if main:
        output.mkdir(parents=True, exist_ok=True)
        write_atomic(output / "config.json", (json.dumps(asdict(config), indent=2) + "\n").encode())

    # Same seed, same init on every rank: DDP then starts from identical replicas.
    torch.manual_seed(config.seed)
    model = build_model(plan, config, use_flex=cuda).to(device)
    optimizer = _optimizer(model, config, fused=cuda)

    def autocast() -> Any:
        if cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # Data: the stream to train on and the fixed held-out batches.
    bm25: dict[str, float] = {}
    eval_rows: pa.Table | None = None
    contrastive_collate: ContrastiveCollator | None = None
    eval_batches: list[dict[str, Any]] = []
    if plan.family == "dual-encoder":
        stream, eval_rows, contrastive_collate = _contrastive(plan, config, rank, world)
        if main:
            if eval_rows.num_rows < MIN_RETRIEVAL_POOL:
                echo(
                    f"warning: retrieval is scored over a pool of only {eval_rows.num_rows} "
                    f"held-out positives (random recall@10 = "
                    f"{min(10, eval_rows.num_rows) / max(eval_rows.num_rows, 1):.2f}); "
                    f"hold out {MIN_RETRIEVAL_POOL} or more rows (--eval or --eval-fraction)"
                )
            try:
                bm25 = bm25_baseline(eval_rows)
            except _core.TokenmillError as err:
                echo(f"bm25 baseline skipped: {err}")
    else:
        if config.objective == "clm":
            collate: Any = ClmBatch(pad_id=plan.pad_id, document_mask=config.document_mask)
        else:
            collate = CorruptedRowCollator(
                plan.family, pad_id=plan.pad_id, decoder_start_id=plan.decoder_start_id
            )
        train_member = ~hold if hold is not None else np.ones(plan.dataset.num_rows, dtype=bool)
        stream = _token_stream(plan, train_member, collate, config)
        if main:
            eval_batches = _eval_token_batches(plan, hold, collate, config)
    # Bits per byte only where the targets are the text itself, in order:
    # span, ul2 and mlm targets are sentinels and fragments, bart's copy
    # the text the encoder already reads.
    bytes_per_id = (
        byte_lengths(plan.tokenizer) if plan.tokenizer is not None and plan.text_targets else None
    )

    start = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        stream.load_state_dict(checkpoint["data"])
        torch.set_rng_state(checkpoint["rng"])
        start = checkpoint["step"]
    trained: nn.Module = model
    if config.compile:
        trained = torch.compile(model)  # type: ignore[assignment]
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(trained, device_ids=[device.index] if cuda else None)

    recorder = _Recorder(output / METRICS, main, start if checkpoint is not None else None)
    result = TrainResult(output=output, parameters=count_parameters(model))
    if main:
        echo(
            f"train {config.objective}: {plan.family} {config.size} "
            f"({result.parameters / 1e6:.2f}M parameters), {config.steps} steps of "
            f"{config.batch_size}x{config.grad_accum}"
            + (f"x{world} ranks" if distributed else "")
            + f" on {device}"
            + (f", resumed at step {start}" if start else "")
        )

    def evaluate(step: int) -> dict[str, float]:
        if plan.family == "dual-encoder":
            assert eval_rows is not None and contrastive_collate is not None
            metrics = evaluate_contrastive(
                model, eval_rows, contrastive_collate, config, device, autocast
            )
            metrics.update({f"bm25_{k}": v for k, v in bm25.items()})
        else:
            metrics = evaluate_lm(model, eval_batches, device, autocast, bytes_per_id)
        recorder.add({"step": step, "split": "eval", **metrics})
        return metrics

    stop = config.stop_at or config.steps
    started = time.perf_counter()
    window_tokens, window_start = 0, time.perf_counter()
    # Losses stay on the device until a log step: one host sync (and under
    # DDP one all-reduce) per log interval, not per step.
    pending: list[tuple[int, Tensor]] = []
    pending_tokens = 0
    for step in range(start, stop):
        lr = learning_rate(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batches = [next(stream) for _ in range(config.grad_accum)]
        pending_tokens += sum(b["num_tokens"] for b in batches)
        loss, norm = train_step(
            trained,
            model,
            optimizer,
            batches,
            device,
            autocast,
            clip=config.clip,
            distributed=distributed,
        )
        done = step + 1
        pending.append((done, loss))
        # The records depend on the step alone, not on where a run started
        # or stopped: a resumed run writes what the uninterrupted one does.
        log = done % config.log_every == 0 or done in (1, config.steps)
        evaluating = bool(config.eval_every) and done % config.eval_every == 0
        evaluating = evaluating and done < config.steps
        if log or evaluating or done == stop:
            flushed = torch.stack([t for _, t in pending])
            if distributed:
                # Each rank holds its share of every step's loss and its own
                # tokens: the sums over ranks are the global batch's (in
                # float64, exact for any token count; NCCL and Gloo take it).
                flushed = flushed.double()
                flushed = torch.cat([flushed, flushed.new_tensor([pending_tokens])])
                dist.all_reduce(flushed)
                flushed, pending_tokens = flushed[:-1], int(flushed[-1])
            values = flushed.tolist()
            for at, value in zip((s for s, _ in pending), values, strict=True):
                if not math.isfinite(value):
                    raise ConfigError(
                        f"the training loss is {value} at step {at}: the run diverged; "
                        "train again with a lower --lr or a --clip such as 1.0"
                    )
            result.losses.update(zip((s for s, _ in pending), values, strict=True))
            window_tokens += pending_tokens
            pending.clear()
            pending_tokens = 0
        if main and log:
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            recorder.add(
                {
                    "step": done,
                    "split": "train",
                    "loss": result.losses[done],
                    "lr": lr,
                    "grad_norm": float(norm),
                    "tokens_per_s": window_tokens / elapsed,
                }
            )
            window_tokens, window_start = 0, time.perf_counter()
        if main and evaluating:
            metrics = evaluate(done)
            echo(
                f"  step {done}: train loss {result.losses[done]:.4f}, "
                f"eval loss {metrics['loss']:.4f}"
            )
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < stop:
            _save(output, model, optimizer, stream, done, identity, main)
    if main and stop == config.steps:
        result.final = evaluate(stop)
    _save(output, model, optimizer, stream, stop, identity, main)
    result.seconds = time.perf_counter() - started
    if main:
        result.summary = _summary(config, plan, result, start, stop)
        echo(result.summary)
        write_atomic(output / "summary.txt", (result.summary + "\n").encode())
        if config.plots:
            plot_metrics(recorder.records, output / "curves.png", config.objective)
    if distributed:
        dist.barrier()
        if owns_group:
            # A group left alive makes NCCL warn at exit (and may leave its
            # work unfinished); a group the caller made is the caller's to end.
            dist.destroy_process_group()
    return result


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors alike
        raise ShardError(
            f"{path}: cannot read the checkpoint ({type(err).__name__}); it is truncated, "
            "corrupt or not a tokenmill checkpoint: pass --overwrite to start again"
        ) from None
    keys = ("trajectory", "model_config", "model", "optimizer", "data", "rng", "step")
    if not isinstance(checkpoint, dict) or not all(k in checkpoint for k in keys):
        raise ShardError(f"{path} is not a tokenmill checkpoint: pass --overwrite to start again")
    return checkpoint


def _save(
    output: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    stream: Stream,
    step: int,
    identity: dict[str, Any],
    main: bool,
) -> None:
    """Everything an exact resume needs; written atomically by rank 0."""
    if not main:
        return
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "data": stream.state_dict(),
        "rng": torch.get_rng_state(),
        "trajectory": identity,
        "model_config": asdict(cast(Any, model).config),
    }
    temporary = output / (CHECKPOINT + ".tmp")
    torch.save(state, temporary)
    temporary.replace(output / CHECKPOINT)


def loss_means(losses: list[float], count: int = 5) -> tuple[float, float]:
    """Mean train loss of the first and of the last `count` steps: one
    step's loss is one batch's, too noisy to compare."""
    if not losses:
        return math.nan, math.nan
    return float(np.mean(losses[:count])), float(np.mean(losses[-count:]))


def _summary(
    config: TrainConfig, plan: DataPlan, result: TrainResult, start: int, stop: int
) -> str:
    losses = list(result.losses.values())
    first, last = loss_means(losses)
    rows = [
        ("objective", f"{config.objective} ({plan.family}, {config.size})"),
        ("parameters", f"{result.parameters / 1e6:.2f}M"),
        ("steps", f"{start} -> {stop} of {config.steps} in {result.seconds:.1f}s"),
        ("train loss", f"{first:.4f} -> {last:.4f} (mean of the first / last 5 steps)"),
    ]
    if stop < config.steps:
        rows.append(("stopped", f"at step {stop}; continue with --resume"))
    names = {
        "loss": "eval loss",
        "perplexity": "eval perplexity",
        "bits_per_byte": "eval bits/byte",
        "accuracy": "eval mlm accuracy" if config.objective == "mlm" else "eval token accuracy",
        "recall@10": "eval recall@10",
        "mrr@10": "eval MRR@10",
        "bm25_recall@10": "BM25 recall@10",
        "bm25_mrr@10": "BM25 MRR@10",
    }
    for key, label in names.items():
        if key in result.final:
            rows.append((label, f"{result.final[key]:.4f}"))
    if "pool" in result.final:
        pool = int(result.final["pool"])
        rows.append(
            ("retrieval pool", f"{pool} positives; random recall@10 {min(10, pool) / pool:.4f}")
        )
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


def plot_metrics(records: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Loss curves (train and eval) and the eval metrics, as one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is a dev extra: no plot without it
        return None
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    extra = [
        k for k in ("accuracy", "bits_per_byte", "recall@10", "mrr@10") if evals and k in evals[-1]
    ]
    figure, axes = plt.subplots(1, 1 + bool(extra), figsize=(5 + 5 * bool(extra), 3.6))
    axes = np.atleast_1d(axes)
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    if evals:
        axes[0].plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="eval")
    axes[0].set(xlabel="step", ylabel="loss", title=f"{title}: loss")
    axes[0].legend()
    for key in extra:
        axes[1].plot([r["step"] for r in evals], [r[key] for r in evals], "o-", label=key)
    if extra:
        axes[1].set(xlabel="step", title=f"{title}: held-out metrics")
        axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
