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
    assert sorted(seen) == list(range(37))


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


def test_arrow_rows_are_zero_copy_views(token_shards: Path) -> None:
    dataset = TokenDataset(token_shards, batch_size=4, shuffle=False)
    row = next(iter(dataset))["input_ids"]
    assert row.dtype == np.uint32 and not row.flags.owndata


def test_state_from_other_settings_is_refused(token_shards: Path) -> None:
    state = TokenDataset(token_shards, batch_size=4).state_dict(batches_seen=2)
    with pytest.raises(tokenmill.ConfigError, match="batch_size=4"):
        TokenDataset(token_shards, batch_size=8).load_state_dict(state)


def test_shards_without_tokens(tmp_path: Path) -> None:
    source = write_shards(tmp_path / "text", {"t.parquet": pa.table({"text": ["a"]})})
    with pytest.raises(tokenmill.SchemaError, match="no input_ids column"):
        TokenDataset(source, batch_size=2)
