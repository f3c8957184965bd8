"""What a run reports: metrics.jsonl, the summary table and the curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tokenmill._fs import write_atomic

from .config import TrainConfig, TrainResult
from .plan import DataPlan

METRICS = "metrics.jsonl"

#: The summary's name of each final metric; `accuracy` is named by family below.
SUMMARY_NAMES = {
    "loss": "eval loss",
    "perplexity": "eval perplexity",
    "bits_per_byte": "eval bits/byte",
    "accuracy": "eval token accuracy",
    "recall@10": "eval recall@10",
    "mrr@10": "eval MRR@10",
    "bm25_recall@10": "BM25 recall@10",
    "bm25_mrr@10": "BM25 MRR@10",
}
#: Where a family's accuracy is not that of every predicted token: an
#: encoder's is on the masked positions.
ACCURACY_NAMES = {"encoder": "eval mlm accuracy"}


class Recorder:
    """metrics.jsonl, written by rank 0 only (`active`). Resuming after step
    `keep_until`, it keeps the records up to that step and forgets the rest."""

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


def loss_means(losses: list[float], count: int = 5) -> tuple[float, float]:
    """Mean train loss of the first and of the last `count` steps: one
    step's loss is one batch's, too noisy to compare."""
    if not losses:
        return math.nan, math.nan
    return float(np.mean(losses[:count])), float(np.mean(losses[-count:]))


def summary(config: TrainConfig, plan: DataPlan, result: TrainResult, start: int, stop: int) -> str:
    """The table printed at the end of a run (and written to summary.txt)."""
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
    names = dict(SUMMARY_NAMES)
    names["accuracy"] = ACCURACY_NAMES.get(plan.family, names["accuracy"])
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
