"""The training layer: one function, :func:`train`, for every objective.

Data per objective (checked against the manifest before anything trains;
which stage's output each objective reads is `Objective.reads` in
:mod:`tokenmill.objectives`):

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

The modules, by job: :mod:`~tokenmill.train.config` (the settings),
:mod:`~tokenmill.train.plan` (opening and checking the data),
:mod:`~tokenmill.train.batches` (collators, the held-out split, streams),
:mod:`~tokenmill.train.models` (the model families),
:mod:`~tokenmill.train.evaluate` (held-out metrics, BM25),
:mod:`~tokenmill.train.loop` (the step and the recipe),
:mod:`~tokenmill.train.checkpoint` and :mod:`~tokenmill.train.report`
(metrics.jsonl, summary, curves).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The settings import without PyTorch, so the CLI can build `tokenmill train`'s
# options from them; everything else loads (with torch) on first use.
from tokenmill.train.config import SIZES, TrainConfig, TrainResult, learning_rate, validate

if TYPE_CHECKING:
    from tokenmill.train.batches import (
        PRELOAD_PARQUET_BYTES,
        ClmBatch,
        CorruptedRowCollator,
        Stream,
        contrastive_stream,
        eval_token_batches,
        held_out,
        row_collator,
        token_stream,
    )
    from tokenmill.train.checkpoint import CHECKPOINT, load_checkpoint
    from tokenmill.train.evaluate import (
        MIN_RETRIEVAL_POOL,
        bm25_baseline,
        byte_lengths,
        evaluate_contrastive,
        evaluate_lm,
        retrieval_metrics,
    )
    from tokenmill.train.loop import (
        Recipe,
        accumulate,
        build_model,
        build_optimizer,
        target_count,
        train,
        train_step,
    )
    from tokenmill.train.plan import DataPlan, plan_data
    from tokenmill.train.report import METRICS, loss_means, plot_metrics

#: The modules that need PyTorch, searched in order for a name not yet loaded.
_TORCH_MODULES = ("batches", "checkpoint", "evaluate", "loop", "plan", "report")


def __getattr__(name: str) -> Any:
    for module in _TORCH_MODULES:
        loaded = importlib.import_module(f"tokenmill.train.{module}")
        if name in getattr(loaded, "__all__", ()) or (
            not name.startswith("_") and hasattr(loaded, name)
        ):
            value = getattr(loaded, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module 'tokenmill.train' has no attribute {name!r}")


__all__ = [
    "CHECKPOINT",
    "METRICS",
    "MIN_RETRIEVAL_POOL",
    "PRELOAD_PARQUET_BYTES",
    "SIZES",
    "ClmBatch",
    "CorruptedRowCollator",
    "DataPlan",
    "Recipe",
    "Stream",
    "TrainConfig",
    "TrainResult",
    "accumulate",
    "bm25_baseline",
    "build_model",
    "build_optimizer",
    "byte_lengths",
    "contrastive_stream",
    "eval_token_batches",
    "evaluate_contrastive",
    "evaluate_lm",
    "held_out",
    "learning_rate",
    "load_checkpoint",
    "loss_means",
    "plan_data",
    "plot_metrics",
    "retrieval_metrics",
    "row_collator",
    "target_count",
    "token_stream",
    "train",
    "train_step",
    "validate",
]
