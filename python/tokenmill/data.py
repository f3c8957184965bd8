"""`TokenDataset`: token shards as a PyTorch dataset, shuffled, sliced and resumable.

Every epoch is a permutation of all rows of all shards, a pure function of
`(seed, epoch)`. Rank `r` of `W` takes every W-th row of it; inside a rank,
consecutive blocks of `batch_size` rows go to DataLoader workers in turn,
starting with worker 0 at the first block not yet consumed, which is the
order the DataLoader hands their batches back in. So "this rank
has consumed `b` batches" pins down exactly where every worker resumes, and a
resumed run yields the batches an uninterrupted one would have.

    dataset = TokenDataset("packed/", batch_size=8, seed=0)
    loader = dataset.loader(num_workers=4, collate_fn=CausalLMCollator())
    for step, batch in enumerate(loader): ...
    state = dataset.state_dict(batches_seen=step + 1)   # save with the checkpoint
    dataset.load_state_dict(state)                      # on resume, before iterating

Shards written as Arrow IPC (`--format arrow`) are memory-mapped: rows reach
the collator as zero-copy views. Parquet shards are decoded into memory one
at a time, which a shuffled epoch makes slow: write training shards as Arrow,
or pass `preload=True` to decode every shard once, up front (for data that
fits in memory).

`subset` reads some rows only: a boolean mask over all rows of all shards
(True: read it). An epoch is then the permutation of all rows with the
others left out, so a row's place in it does not depend on the mask: a
held-out split is `TokenDataset(data, subset=~held_out, ...)` for training
and `TokenDataset(data, subset=held_out, shuffle=False, ...)` to read the
held-out rows in order.

The DataLoader's `batch_size` must equal the dataset's: a loader that cuts
batches of another size (or none, `batch_size=None`) would mix the workers'
blocks and resume at the wrong row, so the dataset refuses it with a
ConfigError when the loader asks for its first batch. `dataset.loader(...)`
builds a DataLoader with the right `batch_size`. The epoch and the resume
position live in shared memory, so `set_epoch` and `load_state_dict` reach
every worker, persistent ones (`persistent_workers=True`) included, when
the next iteration of the loader starts.
"""

from __future__ import annotations

import bisect
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tokenmill import _core
from tokenmill._core import ConfigError, SchemaError
from tokenmill.dataset import Dataset, open_dataset

try:
    import torch
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info
except ImportError as missing:  # pragma: no cover - torch is an optional dependency
    raise ImportError("tokenmill.data needs PyTorch: pip install 'tokenmill[torch]'") from missing
try:
    # What takes rows from an iterable dataset, in the loader's process or a worker's.
    from torch.utils.data._utils.fetch import _IterableDatasetFetcher as _Fetcher

    FETCHER: Any = _Fetcher
except ImportError:  # pragma: no cover - a PyTorch that moved it: the check is skipped
    FETCHER = None

#: The largest epoch the shared position holds (int64).
MAX_EPOCH = 2**63 - 1


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
        subset: npt.ArrayLike | None = None,
        preload: bool = False,
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
        # (epoch, batches to skip, changes) in shared memory: a DataLoader
        # worker, forked or spawned, persistent or not, reads the position the
        # main process set last when it starts an iteration, not the one of its
        # copy. The change count tells a worker the position moved even when
        # it moved back (set_epoch(1) then set_epoch(0) mid-iteration).
        self._position = torch.zeros(3, dtype=torch.int64)
        self._position.share_memory_()  # type: ignore[no-untyped-call]
        self._order: tuple[int, npt.NDArray[np.int64]] | None = None
        self._rows = [shard.num_rows for shard in self.dataset.shards]
        self._shard_starts = np.cumsum([0, *self._rows])
        self._loaded: dict[int, dict[str, _Columns]] = {}
        #: The rows read (a boolean mask over all rows), or None for all.
        self.subset = None if subset is None else self._mask(subset)
        if preload:
            self.preload()

    def _mask(self, subset: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        mask = np.asarray(subset)
        total = int(self._shard_starts[-1])
        if mask.dtype != np.bool_ or mask.shape != (total,):
            raise ConfigError(
                f"subset must be a boolean mask of the {total} rows of {self.dataset.root}, "
                f"not an array of {mask.dtype} of shape {mask.shape}"
            )
        return mask

    def preload(self) -> None:
        """Decodes every shard into memory now and keeps them: Parquet shards
        are otherwise decoded one at a time, so a shuffled epoch over several
        decodes a shard per row. Arrow IPC shards are mapped, not copied.
        Workers forked after this share the decoded shards."""
        for number, shard in enumerate(self.dataset.shards):
            if number not in self._loaded:
                table = shard.read(self.columns)
                self._loaded[number] = {c: _Columns(table.column(c)) for c in self.columns}

    def __len__(self) -> int:
        """Rows this rank reads per epoch: the same on every rank."""
        total = int(self._shard_starts[-1]) if self.subset is None else int(self.subset.sum())
        if self.drop_last:
            return total // self.world_size
        return -(-total // self.world_size)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration reads."""
        return int(self._position[0])

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self.set_epoch(epoch)

    @property
    def _resume_batches(self) -> int:
        return int(self._position[1])

    def set_epoch(self, epoch: int) -> None:
        """Moves to epoch `epoch` (a new permutation) from the next iteration
        of the loader on, in every worker. Setting the epoch a loaded state is
        in keeps its position, so a resume survives the usual
        `for epoch in ...: dataset.set_epoch(epoch)` loop."""
        if not 0 <= epoch <= MAX_EPOCH:
            raise ConfigError(f"epoch {epoch} is not in [0, {MAX_EPOCH}]")
        if epoch != self.epoch:
            self._move(epoch, 0)

    def loader(self, **kwargs: Any) -> DataLoader[dict[str, Any]]:
        """A `torch.utils.data.DataLoader` over this dataset with its
        `batch_size`; `kwargs` are the DataLoader's other arguments
        (`num_workers`, `collate_fn`, `persistent_workers`...)."""
        size = kwargs.pop("batch_size", self.batch_size)
        if size != self.batch_size:
            raise ConfigError(
                f"batch_size={size} for the loader of a TokenDataset of batch_size="
                f"{self.batch_size}; leave batch_size out (it is the dataset's), or make "
                f"the TokenDataset with batch_size={size}"
            )
        return DataLoader(self, batch_size=self.batch_size, **kwargs)

    def order(self) -> npt.NDArray[np.int64]:
        """This epoch's permutation of all rows (identity without shuffle),
        the rows outside `subset` left out."""
        if self._order is not None and self._order[0] == self.epoch:
            return self._order[1]
        total = int(self._shard_starts[-1])
        if not self.shuffle:
            order = np.arange(total, dtype=np.int64)
        else:
            keys = np.arange(total, dtype=np.uint64)
            draws = _core.uniform(keys, seed=self.seed, stage="token-dataset", epoch=self.epoch)
            order = np.argsort(draws, kind="stable").astype(np.int64)
        if self.subset is not None:
            order = order[self.subset[order]]
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
        if not 0 <= state["epoch"] <= MAX_EPOCH or state["batches_seen"] < 0:
            raise ConfigError(
                f"the saved data position (epoch {state['epoch']}, batches_seen "
                f"{state['batches_seen']}) is not a position; pass what "
                "TokenDataset.state_dict returned"
            )
        self._move(state["epoch"], state["batches_seen"])

    def _move(self, epoch: int, batches_seen: int) -> None:
        self._position[0], self._position[1] = epoch, batches_seen
        self._position[2] += 1

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
        position = self._position.tolist()
        resume = position[1]
        rows = self._rank_rows()
        blocks = range(0, len(rows), self.batch_size)
        for block_number, start in enumerate(blocks):
            # A fresh DataLoader (or a persistent one starting an iteration)
            # asks worker 0 first, so counting starts at the first block not
            # yet consumed.
            ahead = block_number - resume
            if ahead < 0 or ahead % workers != worker:
                continue
            if self._position.tolist() != position:
                # Workers start their iteration when they can: one that had
                # not would read the new position, one that had the old.
                raise ConfigError(
                    "set_epoch or load_state_dict was called while a DataLoader was "
                    "reading this TokenDataset, so its workers would disagree on the "
                    "epoch; call them before iterating the loader (for epoch in ...: "
                    "dataset.set_epoch(epoch); for batch in loader: ...)"
                )
            yield rows[start : start + self.batch_size]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # The frame that asked for the first row: a DataLoader's fetcher says
        # how many rows the loader takes per batch.
        self._check_loader(sys._getframe(1))
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        for block in self._blocks(workers, worker):
            for index in block:
                yield self._row(int(index))

    def _check_loader(self, caller: FrameType | None) -> None:
        """A ConfigError when a DataLoader reads this dataset in batches of
        another size than its own: each worker yields blocks of `batch_size`
        rows in turn, so any other cut mixes blocks and misplaces a resume."""
        fetcher: Any = caller.f_locals.get("self") if caller is not None else None
        if (
            caller is None
            or FETCHER is None
            or not isinstance(fetcher, FETCHER)
            or fetcher.dataset is not self
        ):
            return  # not read by a DataLoader: a loop over the rows, say
        if not fetcher.auto_collation:
            size: int | None = None
        else:
            index = caller.f_locals.get("possibly_batched_index")
            if index is None or len(index) == self.batch_size:
                return
            size = len(index)
        raise ConfigError(
            f"the DataLoader reads batch_size={size}, but this TokenDataset hands out "
            f"blocks of batch_size={self.batch_size}, so its batches would mix them and "
            f"a saved position would resume elsewhere; pass batch_size={self.batch_size} "
            "to the DataLoader, or build it with dataset.loader(...)"
        )

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
