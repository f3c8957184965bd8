"""`TokenDataset`: token shards as a PyTorch dataset, shuffled, sliced and resumable.

Every epoch is a permutation of all rows of all shards, a pure function of
`(seed, epoch)`. Rank `r` of `W` takes every W-th row of it; inside a rank,
consecutive blocks of `batch_size` rows go to DataLoader workers in turn,
starting with worker 0 at the first block not yet consumed, which is the
order the DataLoader hands their batches back in. So "this rank
has consumed `b` batches" pins down exactly where every worker resumes, and a
resumed run yields the batches an uninterrupted one would have.

    dataset = TokenDataset("packed/", batch_size=8, seed=0)
    loader = DataLoader(dataset, batch_size=8, num_workers=4,
                        collate_fn=CausalLMCollator())
    for step, batch in enumerate(loader): ...
    state = dataset.state_dict(batches_seen=step + 1)   # save with the checkpoint
    dataset.load_state_dict(state)                      # on resume, before iterating

Shards written as Arrow IPC (`--format arrow`) are memory-mapped: rows reach
the collator as zero-copy views. Parquet shards are decoded into memory one
at a time, which a shuffled epoch makes slow: write training shards as Arrow.

The DataLoader's `batch_size` must equal the dataset's, and its workers must
not be persistent (`persistent_workers=False`, the default): a persistent
worker keeps the copy of the dataset it started with, so it would miss
`set_epoch` and `load_state_dict`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tokenmill import _core
from tokenmill._core import ConfigError, SchemaError
from tokenmill.dataset import Dataset, open_dataset

try:
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError as missing:  # pragma: no cover - torch is an optional dependency
    raise ImportError("tokenmill.data needs PyTorch: pip install 'tokenmill[torch]'") from missing


class _Columns:
    """Zero-copy numpy views of a list column, chunk by chunk."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self.values = [c.values.to_numpy(zero_copy_only=False) for c in column.chunks]
        self.offsets = [c.offsets.to_numpy() for c in column.chunks]
        self.starts = np.cumsum([0] + [len(c) for c in column.chunks])

    def row(self, index: int) -> npt.NDArray[Any]:
        chunk = bisect.bisect_right(self.starts, index) - 1
        local = index - self.starts[chunk]
        offsets = self.offsets[chunk]
        view: npt.NDArray[Any] = self.values[chunk][offsets[local] : offsets[local + 1]]
        return view


class TokenDataset(IterableDataset[dict[str, Any]]):
    """Rows of token shards for a DataLoader; see the module docstring."""

    def __init__(
        self,
        source: str | Path | Dataset,
        *,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        columns: Sequence[str] = ("input_ids", "seq_lens"),
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ConfigError(f"batch_size {batch_size} is not positive")
        self.dataset = source if isinstance(source, Dataset) else open_dataset(source)
        schema = self.dataset.schema
        wanted = [c for c in columns if c in schema.names]
        if "input_ids" not in wanted:
            raise SchemaError(
                f"{self.dataset.root}: no input_ids column (the columns are: "
                f"{', '.join(schema.names)}); run `tokenmill tokenize` or `pack` first"
            )
        self.columns = wanted
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank, self.world_size = _distributed(rank, world_size)
        self.drop_last = drop_last
        self.epoch = 0
        self._order: tuple[int, npt.NDArray[np.int64]] | None = None
        self._resume_batches = 0
        self._rows = [shard.num_rows for shard in self.dataset.shards]
        self._shard_starts = np.cumsum([0, *self._rows])
        self._loaded: dict[int, dict[str, _Columns]] = {}

    def __len__(self) -> int:
        """Rows this rank reads per epoch: the same on every rank."""
        total = int(self._shard_starts[-1])
        if self.drop_last:
            return total // self.world_size
        return -(-total // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Moves to epoch `epoch` (a new permutation). Setting the epoch a
        loaded state is in keeps its position, so a resume survives the usual
        `for epoch in ...: dataset.set_epoch(epoch)` loop."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._resume_batches = 0

    def order(self) -> npt.NDArray[np.int64]:
        """This epoch's permutation of all rows (identity without shuffle)."""
        if self._order is not None and self._order[0] == self.epoch:
            return self._order[1]
        total = int(self._shard_starts[-1])
        if not self.shuffle:
            order = np.arange(total, dtype=np.int64)
        else:
            keys = np.arange(total, dtype=np.uint64)
            draws = _core.uniform(keys, seed=self.seed, stage="token-dataset", epoch=self.epoch)
            order = np.argsort(draws, kind="stable").astype(np.int64)
        self._order = (self.epoch, order)
        return order

    def state_dict(self, batches_seen: int) -> dict[str, int]:
        """Where this rank stands after its loader handed out `batches_seen` batches."""
        return {
            "epoch": self.epoch,
            "batches_seen": batches_seen,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Makes the next iteration continue exactly where `state` was taken."""
        missing = {"epoch", "batches_seen", "seed", "batch_size", "world_size"} - set(state)
        if missing:
            raise ConfigError(
                f"the saved data position lacks {', '.join(sorted(missing))}; "
                "pass what TokenDataset.state_dict returned"
            )
        for key in ("seed", "batch_size", "world_size"):
            if state[key] != getattr(self, key):
                raise ConfigError(
                    f"the saved data position has {key}={state[key]}, this dataset "
                    f"{getattr(self, key)}; resume with the settings the run started with"
                )
        self.epoch = state["epoch"]
        self._resume_batches = state["batches_seen"]

    def _rank_rows(self) -> npt.NDArray[np.int64]:
        order = self.order()
        total, ranks = len(order), self.world_size
        if total % ranks:
            # Every rank must take as many steps, or DDP waits forever at the
            # end of the epoch: drop the tail, or repeat the head as
            # DistributedSampler does.
            even = total // ranks * ranks if self.drop_last else -(-total // ranks) * ranks
            order = np.resize(order, even)
        return order[self.rank :: ranks]

    def _blocks(self, workers: int, worker: int) -> Iterator[npt.NDArray[np.int64]]:
        rows = self._rank_rows()
        blocks = range(0, len(rows), self.batch_size)
        for block_number, start in enumerate(blocks):
            # A fresh DataLoader asks worker 0 first, so counting starts at the
            # first block not yet consumed.
            ahead = block_number - self._resume_batches
            if ahead < 0 or ahead % workers != worker:
                continue
            yield rows[start : start + self.batch_size]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        for block in self._blocks(workers, worker):
            for index in block:
                yield self._row(int(index))

    def _row(self, index: int) -> dict[str, Any]:
        shard = int(np.searchsorted(self._shard_starts, index, side="right")) - 1
        columns = self._loaded.get(shard)
        if columns is None:
            source = self.dataset.shards[shard]
            if source.format == "parquet":
                # Parquet is decoded into memory: hold one shard, not all.
                self._loaded.clear()
            table = source.read(self.columns)
            columns = {name: _Columns(table.column(name)) for name in self.columns}
            self._loaded[shard] = columns
        local = index - int(self._shard_starts[shard])
        row: dict[str, Any] = {name: column.row(local) for name, column in columns.items()}
        row["index"] = index
        return row


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if (rank is None) != (world_size is None):
        raise ConfigError("pass rank and world_size together, or neither")
    if rank is not None and world_size is not None:
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, {world_size})")
        return rank, world_size
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return 0, 1
