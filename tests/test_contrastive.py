from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

import tokenmill
from tokenmill.contrastive import ContrastiveBatchSampler, ContrastiveCollator
from tokenmill.tokenizer import load_tokenizer


def _rows(n: int, duplicates: int = 0) -> pa.Table:
    queries = [f"query {i}" for i in range(n)]
    positives = [f"doc {i}" for i in range(n)]
    for i in range(duplicates):  # rows 0..duplicates-1 share a positive with the next rows
        positives[n - 1 - i] = positives[i]
    negatives = [[f"doc {(i + 1) % n}", f"doc {(i + 2) % n}"] for i in range(n)]
    return pa.table({"query": queries, "positive": positives, "negatives": negatives})


@pytest.mark.parametrize(
    ("n", "batch", "drop_last"), [(100, 8, False), (100, 8, True), (37, 5, False)]
)
def test_sampler_len_is_exact_and_batches_hold_no_duplicate(
    n: int, batch: int, drop_last: bool
) -> None:
    table = _rows(n, duplicates=10)
    sampler = ContrastiveBatchSampler(table, batch, seed=1, drop_last=drop_last)
    batches = list(sampler)
    assert len(sampler) == len(batches)
    seen: list[int] = [i for b in batches for i in b]
    assert len(seen) == len(set(seen))
    if not drop_last:
        assert sorted(seen) == list(range(n))
    else:
        assert all(len(b) == batch for b in batches)
    assert sampler.dropped == n - len(seen)
    rows = table.to_pylist()
    for b in batches:
        _assert_no_text_is_another_rows(rows, b)


def _assert_no_text_is_another_rows(rows: list[dict], batch: list[int]) -> None:
    for i in batch:
        own = {rows[i]["query"], rows[i]["positive"]}
        for j in batch:
            if j != i:
                other = {rows[j]["query"], rows[j]["positive"]}
                assert not own & other
                assert not own & set(rows[j]["negatives"])


def test_rows_sharing_a_hard_negative_share_a_batch() -> None:
    # Every row has the same hard negative, a text no row holds as query or
    # positive: harmless for InfoNCE, so batches stay full and in order.
    n = 40
    table = pa.table(
        {
            "query": [f"q{i}" for i in range(n)],
            "positive": [f"p{i}" for i in range(n)],
            "negatives": [["shared"]] * n,
        }
    )
    sampler = ContrastiveBatchSampler(table, 8, seed=2)
    assert [len(b) for b in sampler] == [8] * 5
    plain = ContrastiveBatchSampler(table, 8, seed=2, check_negatives=False)
    assert list(sampler) == list(plain)


def test_a_negative_equal_to_another_rows_positive_splits_them() -> None:
    table = pa.table(
        {
            "query": ["q0", "q1", "q2", "q3"],
            "positive": ["p0", "p1", "p2", "p3"],
            "negatives": [["p1"], ["x"], ["x"], ["q2"]],
        }
    )
    for seed in range(10):
        sampler = ContrastiveBatchSampler(table, 4, seed=seed)
        rows = table.to_pylist()
        for b in sampler:
            _assert_no_text_is_another_rows(rows, b)
        assert len(sampler) == len(list(sampler)) >= 2


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("replicas", [2, 3])
def test_ddp_ranks_get_equal_disjoint_batches(drop_last: bool, replicas: int) -> None:
    table = _rows(103, duplicates=7)
    ranks = [
        ContrastiveBatchSampler(
            table, 8, seed=5, drop_last=drop_last, num_replicas=replicas, rank=r
        )
        for r in range(replicas)
    ]
    lengths = {len(s) for s in ranks}
    assert len(lengths) == 1 and lengths.pop() > 0
    seen = [i for s in ranks for b in s for i in b]
    assert len(seen) == len(set(seen))
    assert all(s.dropped == 103 - len(seen) for s in ranks)
    whole = ContrastiveBatchSampler(table, 8, seed=5, drop_last=drop_last)
    assert [b for s in ranks for b in s] != []
    assert sorted(map(tuple, (b for s in ranks for b in s))) == sorted(
        map(tuple, list(whole)[: len(ranks[0]) * replicas])
    )
    with pytest.raises(tokenmill.ConfigError, match="rank"):
        ContrastiveBatchSampler(table, 8, num_replicas=2, rank=2)


def test_sampler_is_deterministic_per_seed_and_epoch() -> None:
    table = _rows(64)
    a = list(ContrastiveBatchSampler(table, 8, seed=3, check_negatives=False))
    assert a == list(ContrastiveBatchSampler(table, 8, seed=3, check_negatives=False))
    other = ContrastiveBatchSampler(table, 8, seed=3, check_negatives=False)
    other.set_epoch(1)
    assert list(other) != a
    assert list(ContrastiveBatchSampler(table, 8, seed=4, check_negatives=False)) != a
    # Without negatives to clash, the first epoch's batches are the permutation cut in eights.
    assert all(len(b) == 8 for b in a)


def test_collator_layout_on_token_rows() -> None:
    rows = [
        {"query": [1, 2], "positive": [3], "negatives": [[4, 4, 4], [5]]},
        {"query": [6], "positive": [7, 8], "negatives": [[9], [10, 11]]},
    ]
    out = ContrastiveCollator(pad_id=0, return_tensors="np")(rows)
    assert out["query_input_ids"].tolist() == [[1, 2], [6, 0]]
    assert out["query_attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert out["doc_input_ids"].tolist() == [
        [3, 0, 0],
        [7, 8, 0],
        [4, 4, 4],
        [5, 0, 0],
        [9, 0, 0],
        [10, 11, 0],
    ]
    assert out["doc_attention_mask"].sum(axis=1).tolist() == [1, 2, 3, 1, 1, 2]
    assert out["labels"].tolist() == [0, 1]
    truncated = ContrastiveCollator(doc_max_length=1, return_tensors="np")(rows)
    assert truncated["doc_input_ids"].shape == (6, 1)


def test_collator_tokenizes_text_and_returns_torch(small_tokenizer: Path) -> None:
    tokenizer = load_tokenizer(small_tokenizer)
    rows = pa.table(
        {
            "query": ["The quick brown fox", "Pack my box"],
            "positive": ["jumps over the lazy dog.", "with five dozen liquor jugs."],
            "negatives": [["naïve café"], ["def f(x):"]],
        }
    ).slice(0, 2)
    out = ContrastiveCollator(tokenizer)(rows)
    assert all(isinstance(v, torch.Tensor) for v in out.values())
    first = tokenizer.encode("jumps over the lazy dog.")
    assert out["doc_input_ids"][0, : len(first)].tolist() == first
    assert out["doc_input_ids"].shape[0] == 4
    # The layout feeds InfoNCE directly.
    q = torch.nn.functional.one_hot(out["query_input_ids"][:, 0], 512).float()
    d = torch.nn.functional.one_hot(out["doc_input_ids"][:, 0], 512).float()
    loss = torch.nn.functional.cross_entropy(q @ d.T, out["labels"])
    assert torch.isfinite(loss)


def test_collator_errors() -> None:
    with pytest.raises(tokenmill.ConfigError, match="tokenizer"):
        ContrastiveCollator()([{"query": "a", "positive": "b"}])
    rows = [
        {"query": [1], "positive": [2], "negatives": [[3]]},
        {"query": [1], "positive": [2], "negatives": [[3], [4]]},
    ]
    with pytest.raises(tokenmill.DataError, match="row 1 has 2 negatives"):
        ContrastiveCollator(return_tensors="np")(rows)


def test_sampler_and_collator_on_mined_rows(tmp_path: Path, pydocs: Path) -> None:
    pairs = tmp_path / "pairs"
    tokenmill.pairs(pydocs, pairs, "crop", progress=False)
    mined = tmp_path / "mined"
    tokenmill.negatives(pairs, mined, tokenmill.NegativeOptions(num_negatives=2), progress=False)
    table = tokenmill.open_dataset(mined).to_table()
    sampler = ContrastiveBatchSampler(table, 16, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    hashes = tokenmill._core.content_hashes(table.column("positive").combine_chunks())
    for b in batches:
        assert len(set(hashes[b].tolist())) == len(b)
    out = ContrastiveCollator(tokenmill.Tokenizer.from_str(_tiny_tokenizer()), return_tensors="np")(
        table.take(np.array(batches[0]))
    )
    assert out["doc_input_ids"].shape[0] == 3 * len(batches[0])


def _tiny_tokenizer() -> str:
    trainer = tokenmill.BpeTrainer()
    trainer.add(pa.array(["a tiny corpus for a tiny tokenizer"] * 3))
    return trainer.train(400, min_frequency=1).to_str()


def test_collator_refuses_a_null_document(small_tokenizer: Path) -> None:
    collate = ContrastiveCollator(load_tokenizer(small_tokenizer), return_tensors="np")
    rows = [{"query": "a fox", "positive": "the dog"}, {"query": "a box", "positive": None}]
    with pytest.raises(tokenmill.DataError, match="row 1: column 'positive' is null") as err:
        collate(rows)
    assert err.value.row == 1


def test_collator_names_the_first_null_row_of_any_column(small_tokenizer: Path) -> None:
    """The first null row, not the first null of the first column: a later
    query must not be reported before an earlier positive."""
    collate = ContrastiveCollator(load_tokenizer(small_tokenizer), return_tensors="np")
    rows = [
        {"query": "a fox", "positive": "the dog"},
        {"query": "a box", "positive": None},
        {"query": None, "positive": "a cat"},
    ]
    with pytest.raises(tokenmill.DataError, match="row 1: column 'positive' is null") as err:
        collate(rows)
    assert err.value.row == 1
