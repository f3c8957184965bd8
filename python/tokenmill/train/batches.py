"""Batches: collators from rows to the model family's keyword arguments,
the held-out split, and the endless, resumable streams of micro-batches.

Token rows (`pack` and `corrupt` output) come through
:class:`~tokenmill.data.TokenDataset`, whose `subset` leaves the held-out
rows out; pairs through :class:`~tokenmill.contrastive.ContrastiveBatchSampler`
and :class:`~tokenmill.contrastive.ContrastiveCollator`. Either order is a
pure function of the seed and the epoch, so (epoch, batches seen) pins down
where a :class:`Stream` stands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch
from torch import Tensor

from tokenmill import _core
from tokenmill._core import ConfigError, DataError
from tokenmill.collate import IGNORE_INDEX, CausalLMCollator
from tokenmill.contrastive import ContrastiveBatchSampler, ContrastiveCollator
from tokenmill.data import TokenDataset
from tokenmill.dataset import Dataset

from .config import TrainConfig
from .plan import DataPlan

#: Parquet datasets up to this size are decoded whole for training
#: (`TokenDataset(preload=True)`).
PRELOAD_PARQUET_BYTES = 256 << 20

Collate = Callable[[list[dict[str, Any]]], dict[str, Any]]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on `device`: the model's keyword arguments."""
    return {
        k: v.to(device, non_blocking=True)
        for k, v in batch.items()
        if isinstance(v, Tensor) and k != "num_tokens"
    }


# --- Collators ------------------------------------------------------------


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


#: The collator of token rows, by the stage that made them (`DataPlan.kind`).
ROW_COLLATORS: dict[str, Callable[[DataPlan, TrainConfig], Collate]] = {
    "pack": lambda plan, config: ClmBatch(pad_id=plan.pad_id, document_mask=config.document_mask),
    "corrupt": lambda plan, config: CorruptedRowCollator(
        plan.family, pad_id=plan.pad_id, decoder_start_id=plan.decoder_start_id
    ),
}


def row_collator(plan: DataPlan, config: TrainConfig) -> Collate:
    """The collator of the plan's token rows."""
    return ROW_COLLATORS[plan.kind](plan, config)


# --- Streams --------------------------------------------------------------


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


def _preload(dataset: Dataset) -> bool:
    """TokenDataset holds one decoded Parquet shard at a time, so a shuffled
    epoch over several decodes a shard per row: hold small datasets whole
    instead (large ones should be Arrow IPC)."""
    shards = dataset.shards
    return any(s.format == "parquet" for s in shards) and (
        sum(s.size_bytes for s in shards) <= PRELOAD_PARQUET_BYTES
    )


def token_stream(
    plan: DataPlan, member: npt.NDArray[np.bool_] | None, collate: Collate, config: TrainConfig
) -> Stream:
    """The training batches of token rows: those of `member` (None: all)."""
    dataset = TokenDataset(
        plan.dataset,
        batch_size=config.batch_size,
        seed=config.seed,
        columns=plan.columns,
        drop_last=True,
        subset=member,
        preload=_preload(plan.dataset),
    )

    def batches(epoch: int, seen: int) -> Iterator[dict[str, Any]]:
        dataset.set_epoch(epoch)
        dataset.load_state_dict(dataset.state_dict(batches_seen=seen))
        # A generator of its own keeps the loader off the global RNG, which
        # a resumed run must find exactly as the checkpoint left it.
        loader = dataset.loader(
            num_workers=config.workers,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(config.seed),
        )
        for batch in loader:
            # A short last batch would weigh its rows more: drop it, as drop_last does.
            if batch["input_ids"].shape[0] == config.batch_size:
                yield batch

    return Stream(batches)


def eval_token_batches(
    plan: DataPlan, member: npt.NDArray[np.bool_] | None, collate: Collate, config: TrainConfig
) -> list[dict[str, Any]]:
    """The first `eval_batches` batches of the held-out rows, in order: the
    rows of `member` of the data, or (None) all of the eval data."""
    source = plan.eval_dataset or plan.dataset
    rows = TokenDataset(
        source,
        batch_size=config.batch_size,
        shuffle=False,
        columns=plan.columns,
        rank=0,
        world_size=1,
        subset=member,
        preload=_preload(source),
    )
    loader = rows.loader(collate_fn=collate, generator=torch.Generator().manual_seed(0))
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == config.eval_batches:
            break
    return out


def _pairs_table(dataset: Dataset) -> pa.Table:
    names = [c for c in ("query", "positive", "negatives") if c in dataset.schema.names]
    return dataset.to_table(columns=names)


def contrastive_stream(
    plan: DataPlan, config: TrainConfig, rank: int, world: int
) -> tuple[Stream, pa.Table, ContrastiveCollator]:
    """The training batches of pairs, the held-out pairs and their collator."""
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
