"""Corruption online: the corruptors and the corruption collators (batch
forms, padding, DataLoader workers, documents kept apart in packed rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import tokenmill
from tests.conftest import (
    read_folder,
)
from tokenmill import _core
from tokenmill.batch import read_token_rows
from tokenmill.objectives import build_corruptor
from tokenmill.tokenizer import sentinel_ids


def test_spanbert_span_lengths(tokenizer: tokenmill.Tokenizer) -> None:
    corruptor, _ = build_corruptor("mlm", tokenizer, span=True)
    mask_free = [list(range(200, 4000))] * 300  # 1.1M tokens, no special token
    out = corruptor.corrupt(pa.array(mask_free, type=pa.list_(pa.uint32())), seed=1)
    labels = out["labels"].flatten().to_numpy().reshape(300, -1)
    chosen = labels != -100
    assert abs(chosen.mean() - 0.15) < 0.005
    # Runs of chosen tokens (spans never touch) average SpanBERT's 3.8,
    # minus a little for the budget's last, trimmed span of each row.
    edges = np.diff(np.pad(chosen.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    runs = (edges == -1).nonzero()[1] - (edges == 1).nonzero()[1]
    assert 3.6 < runs.mean() < 3.85


def test_collator_accepts_every_batch_form(tokenizer: tokenmill.Tokenizer) -> None:
    import torch

    rows = np.arange(100, 100 + 6 * 50).reshape(6, 50)
    collator = tokenmill.SpanCorruptionCollator(tokenizer, seed=3)
    forms = [
        rows,
        rows.astype(np.int32),
        rows.astype(np.uint32),
        rows.astype(np.uint16),
        np.asfortranarray(rows),
        torch.from_numpy(rows),
        rows.tolist(),
        [r for r in rows],
        [{"input_ids": r.tolist()} for r in rows],
        pa.array(rows.tolist(), type=pa.list_(pa.uint32())),
    ]
    results = [collator(f) for f in forms]
    for r in results[1:]:
        assert r.keys() == results[0].keys()
        for name in r:
            assert torch.equal(r[name], results[0][name]), name
    assert results[0]["input_ids"].dtype == torch.int64
    # Without the mask (T5's static shapes need none), the rest is unchanged.
    unmasked = tokenmill.SpanCorruptionCollator(tokenizer, seed=3, return_attention_mask=False)
    plain = unmasked(rows)
    assert set(plain) == set(results[0]) - {"attention_mask"}
    for name in plain:
        assert torch.equal(plain[name], results[0][name]), name
    # Lists of Python ints are read in Rust; a bad id names its row.
    bad = rows.copy()
    bad[2, 7] = -5
    with pytest.raises(tokenmill.DataError, match="row 2: token id -5 is not a valid id"):
        collator(bad)
    with pytest.raises(tokenmill.DataError, match="row 1: -2 is not a token id"):
        collator([[300, 301], [302, -2]])
    with pytest.raises(tokenmill.DataError, match="row 0: x is not a token id"):
        collator([[300, "x"]])
    with pytest.raises(tokenmill.DataError, match="row 0: 1099511627776 is not a token id"):
        collator([[300, 2**40]])
    with pytest.raises(tokenmill.DataError, match=r"row 0: 1\.5 is not a token id"):
        collator([[300, 1.5]])
    with pytest.raises(tokenmill.DataError, match="row 0: 100000000000000000000000 is not"):
        collator([[300, 10**23]])
    # numpy integers inside lists are ids too.
    as_numpy_ints = [[np.int64(v) for v in r] for r in rows.tolist()]
    assert torch.equal(collator(as_numpy_ints)["labels"], results[0]["labels"])
    # Padding to a multiple of 8: the 2-D fast path and the general path
    # (lists) agree on every array.
    eights = tokenmill.SpanCorruptionCollator(tokenizer, seed=3, pad_to_multiple_of=8)
    dense, general = eights(rows), eights(rows.tolist())
    assert dense.keys() == general.keys()
    for name in dense:
        assert dense[name].shape[1] % 8 == 0, name
        assert torch.equal(dense[name], general[name]), name
    # A bad batch gets the same error from either path.
    bad_vocab = rows.copy()
    bad_vocab[0, 3] = 99_999
    bad_vocab[1, 3] = -1
    for form in (bad_vocab, bad_vocab.tolist()):
        with pytest.raises(tokenmill.DataError, match=r"row 1: .*-1 is not"):
            collator(form)
    # Another epoch, other noise; the same epoch again, the same noise.
    collator.set_epoch(1)
    assert not torch.equal(collator(rows)["labels"], results[0]["labels"])
    collator.set_epoch(0)
    assert torch.equal(collator(rows)["labels"], results[0]["labels"])


def test_collator_in_dataloader_workers(tokenizer: tokenmill.Tokenizer) -> None:
    from torch.utils.data import DataLoader

    rows = [list(range(200 + i, 300 + 2 * i)) for i in range(64)]
    collator = tokenmill.MLMCollator(tokenizer, seed=5)

    def batches(workers: int) -> list[Any]:
        loader = DataLoader(rows, batch_size=8, collate_fn=collator, num_workers=workers)  # type: ignore[arg-type]
        return [b["input_ids"] for b in loader]

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 8
    assert all((a == b).all() for a, b in zip(serial, parallel, strict=True))


def test_spans_and_permutations_stay_inside_packed_documents(
    pydocs_tokens: Path, pydocs_tokenizer: Path, tokenizer: tokenmill.Tokenizer, tmp_path: Path
) -> None:
    packed = tmp_path / "packed"
    tokenmill.pack(pydocs_tokens, packed, seq_len=512, strategy="bfd", progress=False)
    rows = read_folder(packed).slice(0, 300)
    sentinels = set(sentinel_ids(tokenizer))
    corruptor, _ = build_corruptor("span", tokenizer)
    out = corruptor.corrupt(
        rows.column("input_ids").combine_chunks(),
        seed=2,
        seq_lens=rows.column("seq_lens").combine_chunks(),
    )
    crossed = 0
    for inputs, labels, seq_lens in zip(
        out["input_ids"].to_pylist(),
        out["labels"].to_pylist(),
        rows.column("seq_lens").to_pylist(),
        strict=True,
    ):
        document_of = np.repeat(np.arange(len(seq_lens)), seq_lens)
        position = 0
        spans = {}
        current = None
        for t in labels[:-1]:
            if t in sentinels:
                current = t
                spans[t] = 0
            else:
                spans[current] += 1
        for t in inputs[:-1]:
            if t in sentinels:
                first, last = position, position + spans[t] - 1
                crossed += document_of[first] != document_of[last]
                position += spans[t]
            else:
                position += 1
        assert position == len(document_of)
    assert crossed == 0
    # BART on packed rows: every document keeps its own tokens.
    bart, _ = build_corruptor("bart", tokenizer, mask_ratio=0.0, random_ratio=0.0)
    out = bart.corrupt(
        rows.column("input_ids").combine_chunks(),
        seed=2,
        seq_lens=rows.column("seq_lens").combine_chunks(),
    )
    for inputs, original, seq_lens in zip(
        out["input_ids"].to_pylist(),
        rows.column("input_ids").to_pylist(),
        rows.column("seq_lens").to_pylist(),
        strict=True,
    ):
        start = 0
        for length in seq_lens:
            assert sorted(inputs[start : start + length]) == sorted(
                original[start : start + length]
            )
            start += length


def test_padded_batches_and_prefix_outputs(tokenizer: tokenmill.Tokenizer) -> None:
    rows = [list(range(300, 340)), list(range(400, 420))]
    padded = np.zeros((2, 40), dtype=np.int64)
    mask = np.zeros((2, 40), dtype=np.int64)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r
        mask[i, : len(r)] = 1
    collator = tokenmill.MLMCollator(tokenizer, seed=1, return_tensors="np")
    from_lists = collator(rows)
    from_padded = collator({"input_ids": padded, "attention_mask": mask})
    for name, value in from_lists.items():
        assert np.array_equal(from_padded[name], value), name
    assert from_padded["attention_mask"][1].sum() == 20
    # uint16 rows (memory-mapped token files) are widened, not refused.
    assert collator(np.asarray([rows[0]], dtype=np.uint16))["input_ids"].shape == (1, 40)
    prefix = tokenmill.PrefixLMCollator(tokenizer, ratio=0.5, return_tensors="np")(rows)
    assert prefix["prefix_len"].tolist() == [20, 10]
    assert prefix["prefix_lens"].tolist() == [[20], [10]]


def test_corruption_input_keys_follow_ids() -> None:
    given = read_token_rows([{"id": "a", "input_ids": [1, 2]}, {"id": "b", "input_ids": [3]}])
    assert given.keys is not None
    assert list(given.keys) == list(_core.row_keys_from_ids(pa.array(["a", "b"])))
    assert read_token_rows([[1, 2], [3]]).keys is None
