"""Contract 2: the same seed gives the same bytes, however the work is split."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenmill
from tokenmill.dataset import open_dataset

from .conftest import folder_bytes, write_shards


@pytest.fixture(scope="module")
def sharded_docs(pydocs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python docs cut into five shards of uneven size, some without an id column."""
    docs = open_dataset(pydocs).to_table()
    bounds = [0, 40, 150, 151, 320, docs.num_rows]
    shards = {}
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        piece = docs.slice(lo, hi - lo)
        shards[f"s{i}.parquet"] = piece.drop_columns(["id"]) if i % 2 else piece
    return write_shards(tmp_path_factory.mktemp("docs"), shards)


def _cli(threads: int, *args: str) -> None:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENMILL_PROGRESS="0")
    subprocess.run([sys.executable, "-m", "tokenmill_cli", *args], check=True, env=env)


@pytest.mark.slow
def test_same_bytes_with_1_or_2_threads_any_batch_size_and_shard_order(
    sharded_docs: Path, pydocs_tokenizer: Path, tmp_path: Path
) -> None:
    runs = {
        "one_thread_small_batches": (1, 7, None),
        "two_threads_large_batches": (2, 1000, None),
        "two_threads_reverse_shard_order": (2, 64, list(reversed(range(5)))),
    }
    results = {}
    for name, (threads, batch, order) in runs.items():
        tokens, sampled = tmp_path / name / "tokens", tmp_path / name / "sampled"
        common = ["--batch-size", str(batch)]
        shard_runs = [[]] if order is None else [["--shard", f"s{i}.parquet"] for i in order]
        for shard in shard_runs:
            _cli(
                threads,
                "tokenize",
                str(sharded_docs),
                "-o",
                str(tokens),
                "--tokenizer",
                str(pydocs_tokenizer),
                *common,
                *shard,
            )
        for shard in shard_runs:
            _cli(
                threads,
                "sample",
                str(tokens),
                "-o",
                str(sampled),
                "--fraction",
                "0.3",
                "--seed",
                "7",
                *common,
                *shard,
            )
        results[name] = (folder_bytes(tokens), folder_bytes(sampled))
    first, *others = results.values()
    kept = open_dataset(tmp_path / "one_thread_small_batches" / "sampled").num_rows
    assert 0.2 * 497 < kept < 0.4 * 497
    for other in others:
        assert other[0].keys() == first[0].keys()
        assert other == first


def test_sample_and_its_complement_partition_a_dataset(small_dataset: Path, tmp_path: Path) -> None:
    kept = tokenmill.sample(small_dataset, tmp_path / "kept", 0.5, seed=3, progress=False)
    rest = tokenmill.sample(
        small_dataset, tmp_path / "rest", 0.5, seed=3, invert=True, progress=False
    )
    assert kept.manifest is not None and rest.manifest is not None
    a = open_dataset(tmp_path / "kept").to_table().column("id").to_pylist()
    b = open_dataset(tmp_path / "rest").to_table().column("id").to_pylist()
    assert sorted(a + b) == sorted(f"doc-{i}" for i in range(20))
    assert not set(a) & set(b)
    assert kept.manifest.totals["rows_kept"] == len(a)
    assert kept.manifest.totals["rows_in"] == 20


def test_sample_keeps_a_string_view_column(small_dataset: Path, tmp_path: Path) -> None:
    table = open_dataset(small_dataset).to_table()
    views = table.set_column(1, "text", table.column("text").cast(pa.string_view()))
    source = write_shards(tmp_path / "views", {"a.parquet": views})
    tokenmill.sample(source, tmp_path / "kept", 0.5, seed=3, progress=False)
    kept = open_dataset(tmp_path / "kept").to_table()
    assert kept.schema.field("text").type == pa.string_view()
    expected = tokenmill.sample(small_dataset, tmp_path / "plain", 0.5, seed=3, progress=False)
    assert kept.column("id").to_pylist() == (
        open_dataset(expected.output).to_table().column("id").to_pylist()
    )
    assert kept.column("text").cast(pa.string()).to_pylist() == (
        open_dataset(expected.output).to_table().column("text").to_pylist()
    )


def test_row_keys_follow_ids_not_positions() -> None:
    ids = pa.array(["a", "b", "c", "d"])
    whole = tokenmill._core.row_keys_from_ids(ids)
    pieces = np.concatenate([tokenmill._core.row_keys_from_ids(ids.slice(i, 1)) for i in range(4)])
    assert whole.tolist() == pieces.tolist()
    ints = tokenmill._core.row_keys_from_ids(pa.array([1, 2], type=pa.int64()))
    narrow = tokenmill._core.row_keys_from_ids(pa.array([1, 2], type=pa.uint16()))
    assert ints.tolist() == narrow.tolist()
    assert len(set(whole.tolist())) == 4


def test_positional_keys_depend_on_shard_and_absolute_row() -> None:
    whole = tokenmill._core.row_keys_from_position("s.parquet", 0, 10)
    tail = tokenmill._core.row_keys_from_position("s.parquet", 6, 4)
    assert whole[6:].tolist() == tail.tolist()
    other = tokenmill._core.row_keys_from_position("t.parquet", 0, 10)
    assert not set(whole.tolist()) & set(other.tolist())


@settings(max_examples=50, deadline=None)
@given(
    keys=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=50),
    seed=st.integers(0, 2**64 - 1),
    draws=st.integers(1, 9),
)
def test_uniform_draws_are_per_row_and_prefix_stable(
    keys: list[int], seed: int, draws: int
) -> None:
    array = np.array(keys, dtype=np.uint64)
    many = tokenmill._core.uniform(array, seed=seed, stage="t", draws=draws).reshape(-1, draws)
    one = tokenmill._core.uniform(array, seed=seed, stage="t", draws=1)
    assert np.array_equal(many[:, 0], one)
    assert ((many >= 0) & (many < 1)).all()
    single = tokenmill._core.uniform(array[-1:], seed=seed, stage="t", draws=draws)
    assert np.array_equal(single, many[-1])


def test_uniform_moments_and_stream_separation() -> None:
    keys = np.arange(200_000, dtype=np.uint64)
    u = tokenmill._core.uniform(keys, seed=1, stage="mlm")
    assert abs(u.mean() - 0.5) < 0.004
    assert abs(u.var() - 1 / 12) < 0.002
    other_stage = tokenmill._core.uniform(keys, seed=1, stage="span")
    other_epoch = tokenmill._core.uniform(keys, seed=1, stage="mlm", epoch=1)
    assert abs(np.corrcoef(u, other_stage)[0, 1]) < 0.01
    assert abs(np.corrcoef(u, other_epoch)[0, 1]) < 0.01
