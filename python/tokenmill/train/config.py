"""What a run is asked to do: :class:`TrainConfig`, checked by :func:`validate`,
and what it did: :class:`TrainResult`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tokenmill._core import ConfigError


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
