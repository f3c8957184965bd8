"""The recipe: :func:`train` runs :class:`Recipe` through its steps, as a
torchtune recipe does: `setup` (data, model, optimizer, a checkpoint to
resume), `train` (the step loop, the final evaluation and checkpoint, the
summary), `save_checkpoint` and `cleanup` (the process group). The step
itself, :func:`train_step`, is a function of its own, which the GPU bench
times."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from torch import Tensor, nn

from tokenmill._core import ConfigError
from tokenmill._fs import write_atomic
from tokenmill.collate import IGNORE_INDEX

from .batches import (
    Stream,
    contrastive_stream,
    eval_token_batches,
    held_out,
    row_collator,
    to_device,
    token_stream,
)
from .checkpoint import (
    check_resume,
    checkpoint_path,
    load_checkpoint,
    restore,
    run_identity,
    write_checkpoint,
)
from .config import TrainConfig, TrainResult, learning_rate, validate
from .evaluate import ContrastiveEvaluation, Evaluation, LmEvaluation
from .models import FAMILIES, count_parameters, model_config
from .plan import DataPlan, plan_data
from .report import METRICS, Recorder, plot_metrics, summary

# --- The step -------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    """The torch device `--device` names (`auto`: CUDA when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name!r} is not a torch device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no CUDA device; pass --device cpu")
    return device


def build_model(plan: DataPlan, config: TrainConfig, *, use_flex: bool) -> nn.Module:
    """The model of the plan's family, sized for its data."""
    family = FAMILIES[plan.family]
    options = {name: getattr(config, name) for name in family.options}
    sizes = model_config(config.size, plan.vocab_size, max_seq_len=plan.max_len)
    return family(sizes, use_flex=use_flex, **options)


def build_optimizer(
    model: nn.Module, config: TrainConfig, *, fused: bool = False
) -> torch.optim.AdamW:
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
                loss, _ = trained(**to_device(batch, device))
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


# --- The recipe -----------------------------------------------------------


class Recipe:
    """One run of `tokenmill train`; see the module docstring."""

    def __init__(self, config: TrainConfig, *, echo: Callable[[str], None] = print) -> None:
        validate(config)
        self.config = config
        self.echo = echo
        self.output = Path(config.output)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.distributed = self.world > 1
        self.rank = 0
        self.owns_group = False
        self.start = 0
        self.result = TrainResult(output=self.output)
        # Losses stay on the device until a log step: one host sync (and under
        # DDP one all-reduce) per log interval, not per step.
        self._pending: list[tuple[int, Tensor]] = []
        self._pending_tokens = 0
        self._window_tokens, self._window_start = 0, time.perf_counter()

    @property
    def main(self) -> bool:
        """Rank 0, which evaluates and writes."""
        return self.rank == 0

    def autocast(self) -> Any:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- setup ------------------------------------------------------------

    def setup(self) -> None:
        """Checks everything that can be wrong before writing anything, then
        builds the model, the optimizer and the data, and resumes."""
        config = self.config
        path = checkpoint_path(config)
        self.plan = plan_data(config)
        # Which rows are held out is settled (and a dataset too small to split
        # refused) before the run folder is written.
        self.hold: npt.NDArray[np.bool_] | None = None
        if self.plan.kind != "pairs" and self.plan.eval_dataset is None:
            self.hold = held_out(self.plan.dataset.num_rows, config.eval_fraction, config.seed)
        self.identity = run_identity(config, self.plan, self.world)
        checkpoint: dict[str, Any] | None = None
        if config.resume:
            checkpoint = load_checkpoint(path)
            sizes = model_config(config.size, self.plan.vocab_size, max_seq_len=self.plan.max_len)
            check_resume(checkpoint, path, self.identity, sizes)
        self._setup_processes()
        if self.main:
            self.output.mkdir(parents=True, exist_ok=True)
            config_json = json.dumps(asdict(config), indent=2) + "\n"
            write_atomic(self.output / "config.json", config_json.encode())
        cuda = self.device.type == "cuda"
        # Same seed, same init on every rank: DDP then starts from identical replicas.
        torch.manual_seed(config.seed)
        self.model = build_model(self.plan, config, use_flex=cuda).to(self.device)
        self.optimizer = build_optimizer(self.model, config, fused=cuda)
        self.stream, self.evaluation = self._setup_data()
        if checkpoint is not None:
            self.start = restore(checkpoint, self.model, self.optimizer, self.stream)
        self.trained = self._wrap(self.model)
        keep_until = self.start if checkpoint is not None else None
        self.recorder = Recorder(self.output / METRICS, self.main, keep_until)
        self.result.parameters = count_parameters(self.model)
        if self.main:
            self.echo(
                f"train {config.objective}: {self.plan.family} {config.size} "
                f"({self.result.parameters / 1e6:.2f}M parameters), {config.steps} steps of "
                f"{config.batch_size}x{config.grad_accum}"
                + (f"x{self.world} ranks" if self.distributed else "")
                + f" on {self.device}"
                + (f", resumed at step {self.start}" if self.start else "")
            )

    def _setup_processes(self) -> None:
        """The device, and under DDP the process group (NCCL on CUDA, Gloo on the CPU)."""
        self.device = pick_device(self.config.device)
        if self.distributed:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if not dist.is_initialized():
                dist.init_process_group(backend)
                self.owns_group = True
            self.rank = dist.get_rank()
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True

    def _setup_data(self) -> tuple[Stream, Evaluation | None]:
        """The stream to train on and, on rank 0, the held-out evaluation."""
        plan, config = self.plan, self.config
        if plan.kind == "pairs":
            stream, eval_rows, collate = contrastive_stream(plan, config, self.rank, self.world)
            if not self.main:
                return stream, None
            return stream, ContrastiveEvaluation(eval_rows, collate, config, self.echo)
        rows = row_collator(plan, config)
        member = ~self.hold if self.hold is not None else None
        stream = token_stream(plan, member, rows, config)
        if not self.main:
            return stream, None
        return stream, LmEvaluation(plan, eval_token_batches(plan, self.hold, rows, config))

    def _wrap(self, model: nn.Module) -> nn.Module:
        """What the steps call: the model, compiled and under DDP as asked."""
        trained = model
        if self.config.compile:
            trained = torch.compile(model)  # type: ignore[assignment]
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            cuda = self.device.type == "cuda"
            trained = DistributedDataParallel(
                trained, device_ids=[self.device.index] if cuda else None
            )
        return trained

    # --- train ------------------------------------------------------------

    def train(self) -> TrainResult:
        """Steps from the start (0 or the checkpoint's) to `--stop-at` or
        `--steps`; then, at `--steps`, the final evaluation; the checkpoint
        and the summary."""
        config = self.config
        stop = config.stop_at or config.steps
        started = time.perf_counter()
        self._window_tokens, self._window_start = 0, time.perf_counter()
        for step in range(self.start, stop):
            lr = learning_rate(config, step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batches = [next(self.stream) for _ in range(config.grad_accum)]
            self._pending_tokens += sum(b["num_tokens"] for b in batches)
            loss, norm = train_step(
                self.trained,
                self.model,
                self.optimizer,
                batches,
                self.device,
                self.autocast,
                clip=config.clip,
                distributed=self.distributed,
            )
            done = step + 1
            self._pending.append((done, loss))
            # The records depend on the step alone, not on where a run started
            # or stopped: a resumed run writes what the uninterrupted one does.
            log = done % config.log_every == 0 or done in (1, config.steps)
            evaluating = bool(config.eval_every) and done % config.eval_every == 0
            evaluating = evaluating and done < config.steps
            if log or evaluating or done == stop:
                self._flush()
            if self.main and log:
                self._log(done, lr, norm)
            if self.main and evaluating:
                metrics = self.evaluate(done)
                self.echo(
                    f"  step {done}: train loss {self.result.losses[done]:.4f}, "
                    f"eval loss {metrics['loss']:.4f}"
                )
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < stop:
                self.save_checkpoint(done)
        if self.main and stop == config.steps:
            self.result.final = self.evaluate(stop)
        self.save_checkpoint(stop)
        self.result.seconds = time.perf_counter() - started
        if self.main:
            self._report(stop)
        return self.result

    def _flush(self) -> None:
        """Brings the pending losses to the host (summed over ranks under
        DDP) and refuses a diverged run."""
        flushed = torch.stack([t for _, t in self._pending])
        tokens = self._pending_tokens
        if self.distributed:
            # Each rank holds its share of every step's loss and its own
            # tokens: the sums over ranks are the global batch's (in
            # float64, exact for any token count; NCCL and Gloo take it).
            flushed = flushed.double()
            flushed = torch.cat([flushed, flushed.new_tensor([tokens])])
            dist.all_reduce(flushed)
            flushed, tokens = flushed[:-1], int(flushed[-1])
        values = flushed.tolist()
        steps = [s for s, _ in self._pending]
        for at, value in zip(steps, values, strict=True):
            if not math.isfinite(value):
                raise ConfigError(
                    f"the training loss is {value} at step {at}: the run diverged; "
                    "train again with a lower --lr or a --clip such as 1.0"
                )
        self.result.losses.update(zip(steps, values, strict=True))
        self._window_tokens += tokens
        self._pending.clear()
        self._pending_tokens = 0

    def _log(self, done: int, lr: float, norm: Tensor) -> None:
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        self.recorder.add(
            {
                "step": done,
                "split": "train",
                "loss": self.result.losses[done],
                "lr": lr,
                "grad_norm": float(norm),
                "tokens_per_s": self._window_tokens / elapsed,
            }
        )
        self._window_tokens, self._window_start = 0, time.perf_counter()

    def evaluate(self, step: int) -> dict[str, float]:
        """The held-out metrics at `step`, recorded (rank 0 only)."""
        assert self.evaluation is not None
        metrics = self.evaluation(self.model, self.device, self.autocast)
        self.recorder.add({"step": step, "split": "eval", **metrics})
        return metrics

    def _report(self, stop: int) -> None:
        self.result.summary = summary(self.config, self.plan, self.result, self.start, stop)
        self.echo(self.result.summary)
        write_atomic(self.output / "summary.txt", (self.result.summary + "\n").encode())
        if self.config.plots:
            plot_metrics(self.recorder.records, self.output / "curves.png", self.config.objective)

    # --- checkpoint and cleanup -------------------------------------------

    def save_checkpoint(self, step: int) -> None:
        """Everything an exact resume needs at `step`; written by rank 0."""
        if self.main:
            write_checkpoint(
                self.output, self.model, self.optimizer, self.stream, step, self.identity
            )

    def cleanup(self) -> None:
        """Waits for every rank, and ends a process group this run made."""
        if self.distributed:
            dist.barrier()
            if self.owns_group:
                # A group left alive makes NCCL warn at exit (and may leave its
                # work unfinished); a group the caller made is the caller's to end.
                dist.destroy_process_group()


def train(config: TrainConfig, *, echo: Callable[[str], None] = print) -> TrainResult:
    """Trains `config.objective` on `config.data` into `config.output`; see
    :mod:`tokenmill.train`."""
    recipe = Recipe(config, echo=echo)
    recipe.setup()
    result = recipe.train()
    recipe.cleanup()
    return result
