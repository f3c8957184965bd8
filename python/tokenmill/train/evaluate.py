"""Held-out evaluation: LM loss, perplexity, accuracy and bits per byte;
contrastive InfoNCE and retrieval (recall@10, MRR@10) next to BM25."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmill import _core
from tokenmill.collate import IGNORE_INDEX
from tokenmill.contrastive import ContrastiveCollator

from .batches import to_device
from .config import TrainConfig
from .plan import DataPlan

#: Held-out pools smaller than this make recall@10 coarse (and easy): warn.
MIN_RETRIEVAL_POOL = 100

#: Scores a model on held-out data: `(model, device, autocast) -> metrics`.
Evaluation = Callable[[nn.Module, torch.device, Callable[[], Any]], dict[str, float]]


# --- Retrieval ------------------------------------------------------------


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


# --- Language models ------------------------------------------------------


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
        inputs = to_device(batch, device)
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


class LmEvaluation:
    """The fixed held-out batches of an LM family; bits per byte only where
    the targets are the text itself, in order: span, ul2 and mlm targets are
    sentinels and fragments, bart's copy the text the encoder already reads."""

    def __init__(self, plan: DataPlan, batches: list[dict[str, Any]]) -> None:
        self.batches = batches
        self.bytes_per_id = (
            byte_lengths(plan.tokenizer)
            if plan.tokenizer is not None and plan.text_targets
            else None
        )

    def __call__(
        self, model: nn.Module, device: torch.device, autocast: Callable[[], Any]
    ) -> dict[str, float]:
        return evaluate_lm(model, self.batches, device, autocast, self.bytes_per_id)


# --- Dual encoders --------------------------------------------------------


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
        batch = to_device(collate(rows), device)
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


class ContrastiveEvaluation:
    """The held-out pairs, scored by the model and (once, up front) by BM25."""

    def __init__(
        self,
        eval_rows: pa.Table,
        collate: ContrastiveCollator,
        config: TrainConfig,
        echo: Callable[[str], None],
    ) -> None:
        self.eval_rows, self.collate, self.config = eval_rows, collate, config
        if eval_rows.num_rows < MIN_RETRIEVAL_POOL:
            echo(
                f"warning: retrieval is scored over a pool of only {eval_rows.num_rows} "
                f"held-out positives (random recall@10 = "
                f"{min(10, eval_rows.num_rows) / max(eval_rows.num_rows, 1):.2f}); "
                f"hold out {MIN_RETRIEVAL_POOL} or more rows (--eval or --eval-fraction)"
            )
        self.bm25: dict[str, float] = {}
        try:
            self.bm25 = bm25_baseline(eval_rows)
        except _core.TokenmillError as err:
            echo(f"bm25 baseline skipped: {err}")

    def __call__(
        self, model: nn.Module, device: torch.device, autocast: Callable[[], Any]
    ) -> dict[str, float]:
        metrics = evaluate_contrastive(
            model, self.eval_rows, self.collate, self.config, device, autocast
        )
        metrics.update({f"bm25_{k}": v for k, v in self.bm25.items()})
        return metrics
