from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from torch.utils.data import DataLoader

import tokenmill
from tokenmill.data import TokenDataset

from .conftest import write_shards


@pytest.fixture
def token_shards(tmp_path: Path) -> Path:
    """Three Arrow IPC shards of 37 rows in all; row i holds the single token i."""
    folder = tmp_path / "tokens"
    folder.mkdir()
    start = 0
    for name, rows in (("a.arrow", 10), ("b.arrow", 20), ("c.arrow", 7)):
        ids = pa.array([[i] for i in range(start, start + rows)], type=pa.list_(pa.uint32()))
        table = pa.table({"input_ids": ids})
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        start += rows
    return folder


def _indices(batch: list[dict[str, Any]]) -> list[int]:
    return [int(row["input_ids"][0]) for row in batch]


def _batches(dataset: TokenDataset, workers: int) -> list[list[int]]:
    loader = DataLoader(
        dataset,
        batch_size=dataset.batch_size,
        num_workers=workers,
        collate_fn=_indices,
        multiprocessing_context="fork" if workers else None,
    )
    return list(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_and_workers_read_disjoint_slices_covering_the_epoch(
    token_shards: Path, workers: int
) -> None:
    seen: list[int] = []
    for rank in range(2):
        dataset = TokenDataset(token_shards, batch_size=4, seed=1, rank=rank, world_size=2)
        batches = _batches(dataset, workers)
        rows = [i for b in batches for i in b]
        assert len(rows) == len(dataset)
        seen += rows
    # 37 rows over 2 ranks: the first row of the permutation is read twice so
    # both ranks take 19 steps; every other row exactly once.
    assert set(seen) == set(range(37)) and len(seen) == 38


def test_worker_count_does_not_change_the_batches(token_shards: Path) -> None:
    dataset = TokenDataset(token_shards, batch_size=4, seed=1)
    assert _batches(dataset, 0) == _batches(dataset, 1) == _batches(dataset, 2)


def test_resuming_mid_epoch_reproduces_the_uninterrupted_batches(token_shards: Path) -> None:
    dataset = TokenDataset(token_shards, batch_size=3, seed=5)
    dataset.set_epoch(2)
    uninterrupted = _batches(dataset, 2)
    for stop in (1, 4, 7):
        state = dataset.state_dict(batches_seen=stop)
        resumed = TokenDataset(token_shards, batch_size=3, seed=5)
        resumed.load_state_dict(state)
        assert _batches(resumed, 2) == uninterrupted[stop:]


def test_epochs_and_seeds_permute_deterministically(token_shards: Path) -> None:
    a = TokenDataset(token_shards, batch_size=4, seed=1)
    b = TokenDataset(token_shards, batch_size=4, seed=1)
    assert np.array_equal(a.order(), b.order())
    b.set_epoch(1)
    assert not np.array_equal(a.order(), b.order())
    assert sorted(b.order().tolist()) == list(range(37))
    unshuffled = TokenDataset(token_shards, batch_size=4, shuffle=False)
    assert unshuffled.order().tolist() == list(range(37))


def test_arrow_rows_are_zero_copy_views(tmp_path: Path) -> None:
    ids = pa.ListArray.from_arrays(
        pa.array(np.arange(0, 2_000_001, 1000), type=pa.int32()),
        pa.array(np.arange(2_000_000, dtype=np.uint32)),
    )
    table = pa.table({"input_ids": ids})
    (tmp_path / "big").mkdir()
    with (
        pa.OSFile(str(tmp_path / "big" / "s.arrow"), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as writer,
    ):
        writer.write_table(table)
    del table, ids
    dataset = TokenDataset(tmp_path / "big", batch_size=4, shuffle=False)
    before = pa.total_allocated_bytes()
    rows = iter(dataset)
    first = next(rows)["input_ids"]
    # 8 MB of tokens were mapped, not read: Arrow allocated next to nothing.
    assert pa.total_allocated_bytes() - before < 1_000_000
    assert first.dtype == np.uint32 and first.tolist() == list(range(1000))


@pytest.mark.parametrize("drop_last", [False, True])
def test_every_rank_takes_as_many_batches(token_shards: Path, drop_last: bool) -> None:
    counts, seen = [], []
    for rank in range(3):  # 37 rows do not divide by 3
        dataset = TokenDataset(
            token_shards, batch_size=1, seed=2, rank=rank, world_size=3, drop_last=drop_last
        )
        batches = _batches(dataset, 0)
        counts.append(len(batches))
        seen += [i for b in batches for i in b]
    assert counts == [12, 12, 12] if drop_last else counts == [13, 13, 13]
    assert (len(set(seen)) == 36) if drop_last else (set(seen) == set(range(37)))


def test_a_loaded_position_survives_set_epoch(token_shards: Path) -> None:
    dataset = TokenDataset(token_shards, batch_size=3, seed=5)
    dataset.set_epoch(1)
    uninterrupted = _batches(dataset, 0)
    resumed = TokenDataset(token_shards, batch_size=3, seed=5)
    resumed.load_state_dict(dataset.state_dict(batches_seen=4))
    resumed.set_epoch(1)  # the training loop's usual call
    assert _batches(resumed, 0) == uninterrupted[4:]
    resumed.set_epoch(2)
    assert len(_batches(resumed, 0)) == len(uninterrupted)


def test_state_from_other_settings_is_refused(token_shards: Path) -> None:
    state = TokenDataset(token_shards, batch_size=4).state_dict(batches_seen=2)
    with pytest.raises(tokenmill.ConfigError, match="batch_size=4"):
        TokenDataset(token_shards, batch_size=8).load_state_dict(state)
    with pytest.raises(tokenmill.ConfigError, match="lacks batch_size, batches_seen"):
        TokenDataset(token_shards, batch_size=4).load_state_dict({"epoch": 0})
    with pytest.raises(tokenmill.ConfigError, match="rank and world_size together"):
        TokenDataset(token_shards, batch_size=4, rank=1)


def test_a_subset_reads_its_rows_in_the_order_of_all_rows(token_shards: Path) -> None:
    every = TokenDataset(token_shards, batch_size=4, seed=1)
    keep = np.arange(37) % 3 != 0
    some = TokenDataset(token_shards, batch_size=4, seed=1, subset=keep)
    # The permutation of all rows, the others left out: the mask moves no row.
    assert some.order().tolist() == [i for i in every.order().tolist() if keep[i]]
    assert len(some) == int(keep.sum())
    assert _batches(some, 2) == _batches(some, 0)
    assert sorted(i for b in _batches(some, 0) for i in b) == np.flatnonzero(keep).tolist()
    held = TokenDataset(token_shards, batch_size=4, shuffle=False, subset=~keep)
    assert [i for b in _batches(held, 0) for i in b] == np.flatnonzero(~keep).tolist()
    for bad in (np.ones(36, dtype=bool), np.arange(37)):
        with pytest.raises(tokenmill.ConfigError, match="boolean mask of the 37 rows"):
            TokenDataset(token_shards, batch_size=4, subset=bad)


def test_preload_decodes_every_parquet_shard_up_front(tmp_path: Path) -> None:
    table = pa.table({"input_ids": pa.array([[i] for i in range(12)], type=pa.list_(pa.uint32()))})
    source = write_shards(
        tmp_path / "tokens", {"a.parquet": table.slice(0, 5), "b.parquet": table.slice(5)}
    )
    expected = _batches(TokenDataset(source, batch_size=3, seed=4), 0)
    dataset = TokenDataset(source, batch_size=3, seed=4, preload=True)
    for shard in source.glob("*.parquet"):
        shard.unlink()  # every row is in memory: the files are not read again
    assert _batches(dataset, 0) == expected


def test_shards_without_tokens(tmp_path: Path) -> None:
    source = write_shards(tmp_path / "text", {"t.parquet": pa.table({"text": ["a"]})})
    with pytest.raises(tokenmill.SchemaError, match="no input_ids column"):
        TokenDataset(source, batch_size=2)


@pytest.mark.parametrize(
    # A worker that raised costs PyTorch's shutdown 5 s: few worker cases.
    ("loader_batch_size", "workers"),
    [(2, 0), (8, 0), (None, 0), (2, 1), (None, 1)],
)
def test_a_loader_of_another_batch_size_is_refused(
    token_shards: Path, workers: int, loader_batch_size: int | None
) -> None:
    """Each worker hands out blocks of the dataset's batch_size: a loader
    cutting batches of another size (or none) mixed blocks silently."""
    dataset = TokenDataset(token_shards, batch_size=4, seed=1)
    loader = DataLoader(
        dataset,
        batch_size=loader_batch_size,
        num_workers=workers,
        collate_fn=_indices if loader_batch_size else _index,
        multiprocessing_context="fork" if workers else None,
    )
    with pytest.raises(tokenmill.ConfigError, match="pass batch_size=4 to the DataLoader") as err:
        list(loader)
    assert f"the DataLoader reads batch_size={loader_batch_size}," in str(err.value)


def _index(row: dict[str, Any]) -> int:
    return int(row["input_ids"][0])


def test_the_loader_helper_takes_the_batch_size_of_the_dataset(token_shards: Path) -> None:
    dataset = TokenDataset(token_shards, batch_size=4, seed=1)
    loader = dataset.loader(num_workers=2, collate_fn=_indices, multiprocessing_context="fork")
    assert loader.batch_size == 4 and list(loader) == _batches(dataset, 0)
    with pytest.raises(tokenmill.ConfigError, match="batch_size=3 for the loader"):
        dataset.loader(batch_size=3)
    assert dataset.loader(batch_size=4).batch_size == 4


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_persistent_workers_follow_set_epoch_and_load_state_dict(
    token_shards: Path, context: str
) -> None:
    """A persistent worker keeps its copy of the dataset: it replayed epoch 0
    after set_epoch(1). The position is shared with the workers now."""
    reference = TokenDataset(token_shards, batch_size=3, seed=5)
    expected = []
    for epoch in range(3):
        reference.set_epoch(epoch)
        expected.append(_batches(reference, 0))
    dataset = TokenDataset(token_shards, batch_size=3, seed=5)
    loader = DataLoader(
        dataset,
        batch_size=3,
        num_workers=2,
        collate_fn=_indices,
        persistent_workers=True,
        multiprocessing_context=context,
    )
    assert list(loader) == expected[0]
    dataset.set_epoch(1)
    assert list(loader) == expected[1]
    dataset.load_state_dict(reference.state_dict(batches_seen=5))  # epoch 2, 5 batches in
    assert list(loader) == expected[2][5:]
    dataset.set_epoch(0)
    assert list(loader) == expected[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_position_set_while_the_loader_reads_is_refused(token_shards: Path, workers: int) -> None:
    """A worker reads the position when it starts an iteration, and they
    start when they can: a set_epoch during an iteration would split them
    over two epochs, so the workers that see it stop the loader."""
    dataset = TokenDataset(token_shards, batch_size=1, seed=5)
    loader = DataLoader(
        dataset,
        batch_size=1,
        num_workers=workers,
        collate_fn=_indices,
        persistent_workers=bool(workers),
        multiprocessing_context="fork" if workers else None,
    )
    batches = iter(loader)
    next(batches)
    dataset.set_epoch(1)
    with pytest.raises(tokenmill.ConfigError, match="call them before iterating the loader"):
        list(batches)
    dataset.set_epoch(0)
    dataset.set_epoch(1)  # between iterations, as it should be
    assert list(loader) == _batches(dataset, 0)
