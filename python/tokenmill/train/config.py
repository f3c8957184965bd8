"""What a run is asked to do: :class:`TrainConfig`, checked by :func:`validate`,
and what it did: :class:`TrainResult`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tokenmill._core import ConfigError
from tokenmill.objectives import OBJECTIVES
from tokenmill.options import option

#: Named model sizes; `base` is GPT-2 small (124M parameters with GPT-2's vocabulary).
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_head": 4, "d_model": 128},
    "small": {"n_layer": 6, "n_head": 8, "d_model": 512},
    "base": {"n_layer": 12, "n_head": 12, "d_model": 768},
}


@dataclass
class TrainConfig:
    """Every setting of a run; `tokenmill train`'s options are made from these fields."""

    objective: str = option(
        help="clm reads `pack` output; mlm/span/bart/prefix/ul2 read `corrupt` output of "
        "that mode; contrastive reads `pairs` or `negatives` output.",
        choices=tuple(OBJECTIVES),
    )
    data: str = option(help="The training data (the command's DATA).", path=True)
    output: str = option(help="Run folder.", flag="-o/--output", path=True)
    size: str = option("tiny", "Model size.", choices=tuple(SIZES))
    steps: int = option(200, "Optimizer steps.", low=1)
    batch_size: int = option(8, "Rows per micro-batch.", low=1)
    grad_accum: int = option(1, "Micro-batches per step.", low=1)
    lr: float = option(3e-4, "Peak learning rate.")
    min_lr_ratio: float = option(0.1, "The cosine decay's floor, as a share of --lr.")
    warmup: int = option(20, "Steps of linear warmup.", low=0)
    weight_decay: float = option(0.1, "AdamW weight decay (not on embeddings, norms, biases).")
    clip: float = option(1.0, "Gradient norm clip.")
    device: str = option("auto", "auto, cpu, cuda, cuda:1...")
    seed: int = option(0, "Seed of initialization, held-out split and data order.", low=0)
    eval_data: str | None = option(
        None,
        "Held-out data made like DATA (default: hold out --eval-fraction of DATA's rows).",
        flag="--eval",
        path=True,
    )
    eval_fraction: float = option(0.05, "Share of DATA's rows held out without --eval.")
    eval_batches: int = option(8, "Batches per evaluation.", low=1)
    eval_every: int = option(0, "Steps between evaluations; 0: at the end.", low=0)
    log_every: int = option(10, "Steps between log lines.", low=1)
    checkpoint_every: int = option(0, "Steps between checkpoints; 0: at the end.", low=0)
    resume: bool = option(False, "Continue the checkpoint in the run folder exactly.")
    overwrite: bool = option(False, "Start again over an existing run folder.")
    stop_at: int | None = option(None, "Stop (and checkpoint) at this step.", low=1)
    tokenizer: str | None = option(
        None,
        "Vocabulary size, padding and bits per byte; `corrupt` output names its own.",
        path=True,
    )
    vocab_size: int | None = option(None, "Default: the tokenizer's.", low=1)
    max_seq_len: int | None = option(None, "Default: the longest row.", low=1)
    document_mask: bool = option(True, "clm: keep the documents of a packed row apart.")
    temperature: float = option(0.05, "contrastive: the InfoNCE temperature.")
    symmetric: bool = option(False, "contrastive: add the document-to-query loss.")
    contrastive_max_len: int = option(128, "contrastive: longest query or document.", low=1)
    compile: bool = option(False, "torch.compile the model.")
    threads: int | None = option(None, "torch's CPU threads.", flag="--torch-threads", low=1)
    workers: int = option(0, "DataLoader worker processes.", low=0)
    plots: bool = option(True, "Write curves.png.")

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


def validate(config: TrainConfig) -> None:
    """A ConfigError for any setting out of its domain, before anything is read."""
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


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at `steps`."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)
