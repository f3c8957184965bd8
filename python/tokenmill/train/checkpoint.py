"""The checkpoint: everything an exact resume needs (model, optimizer, step,
RNG, data position), and what a run must share with the run it resumes."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from tokenmill._core import ConfigError, ShardError
from tokenmill._fs import atomic_path

from .batches import Stream
from .config import TrainConfig
from .models import ModelConfig
from .plan import DataPlan

CHECKPOINT = "checkpoint.pt"
#: What a checkpoint holds.
KEYS = ("trajectory", "model_config", "model", "optimizer", "data", "rng", "step")


def checkpoint_path(config: TrainConfig) -> Path:
    """Where the run's checkpoint is, after checking `--resume` finds one and
    a fresh run does not overwrite one unasked."""
    output = Path(config.output)
    path = output / CHECKPOINT
    if config.resume and not path.exists():
        raise ConfigError(f"--resume, but {path} does not exist")
    if not config.resume and not config.overwrite and path.exists():
        raise ConfigError(
            f"{output} already holds a checkpoint: pass --resume to continue it or "
            "--overwrite to start again"
        )
    return path


def run_identity(config: TrainConfig, plan: DataPlan, world: int) -> dict[str, Any]:
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


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors alike
        raise ShardError(
            f"{path}: cannot read the checkpoint ({type(err).__name__}); it is truncated, "
            "corrupt or not a tokenmill checkpoint: pass --overwrite to start again"
        ) from None
    if not isinstance(checkpoint, dict) or not all(k in checkpoint for k in KEYS):
        raise ShardError(f"{path} is not a tokenmill checkpoint: pass --overwrite to start again")
    return checkpoint


def check_resume(
    checkpoint: dict[str, Any], path: Path, identity: dict[str, Any], model: ModelConfig
) -> None:
    """A ConfigError listing what differs when `checkpoint` was made with
    other settings, process count or data, or for another model."""
    saved = checkpoint["trajectory"]
    changed = {k: (saved.get(k), v) for k, v in identity.items() if saved.get(k) != v}
    if changed:
        what = ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in changed.items())
        raise ConfigError(
            f"{path} was made with another configuration, process count or "
            f"data: {what}; resume with what it was made with, or start a new run"
        )
    if checkpoint["model_config"] != asdict(model):
        raise ConfigError(
            f"{path} holds a model of {checkpoint['model_config']}, but this "
            "data needs another (vocabulary or row length changed); start a new run"
        )


def restore(
    checkpoint: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    stream: Stream,
) -> int:
    """Puts the model, optimizer, data position and RNG where the checkpoint
    left them; returns its step."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    stream.load_state_dict(checkpoint["data"])
    torch.set_rng_state(checkpoint["rng"])
    step: int = checkpoint["step"]
    return step


def write_checkpoint(
    output: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    stream: Stream,
    step: int,
    identity: dict[str, Any],
) -> None:
    """Everything an exact resume needs, written atomically."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "data": stream.state_dict(),
        "rng": torch.get_rng_state(),
        "trajectory": identity,
        "model_config": asdict(cast(Any, model).config),
    }
    # Synced, renamed into place and removed on failure, as every output is.
    with atomic_path(output / CHECKPOINT) as temporary:
        torch.save(state, temporary)
