from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

import tokenmill
from tokenmill.collate import CausalLMCollator
from tokenmill.dataset import open_dataset

ROWS = [
    {"input_ids": [5, 6, 7, 8, 9], "seq_lens": [3, 2]},
    {"input_ids": [1, 2], "seq_lens": [2]},
]


def test_small_packed_batch_exactly() -> None:
    out = CausalLMCollator(pad_id=0, return_tensors="np")(ROWS)
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9], [1, 2, 0, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert out["labels"].tolist() == [[5, 6, 7, 8, 9], [1, 2, -100, -100, -100]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 0, 0]]
    assert out["document_ids"].tolist() == [[0, 0, 0, 1, 1], [2, 2, -1, -1, -1]]
    assert out["cu_seq_lens_q"].tolist() == [0, 3, 5, 7, 10]  # row 1's padding is its own segment
    assert out["cu_seq_lens_q"].dtype == np.int32
    assert out["max_length_q"] == out["max_length_k"] == 3


def test_document_starts_can_be_kept_out_of_the_loss() -> None:
    out = CausalLMCollator(mask_document_starts=True, return_tensors="np")(ROWS)
    assert out["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, 2, -100, -100, -100]]


def test_dense_document_mask() -> None:
    out = CausalLMCollator(document_mask=True, return_tensors="np")(ROWS)
    mask = out["document_mask"]
    assert mask.shape == (2, 1, 5, 5) and mask.dtype == bool
    expected_row0 = np.array(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 1, 0],
            [0, 0, 0, 1, 1],
        ],
        dtype=bool,
    )
    assert (mask[0, 0] == expected_row0).all()
    assert not mask[1, 0, :2, 2:].any()  # no real token attends padding
    assert mask[1, 0, 2:, 2:].diagonal().all()  # padding attends itself, so no softmax is NaN
    assert mask[0, 0].any(axis=-1).all() and mask[1, 0].any(axis=-1).all()


def test_flattened_batches_carry_no_attention_mask() -> None:
    out = CausalLMCollator(flatten=True, mask_document_starts=True, return_tensors="np")(ROWS)
    assert "attention_mask" not in out
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9, 1, 2]]
    assert out["labels"].tolist() == [[-100, 6, 7, -100, 9, -100, 2]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1]]
    assert out["cu_seq_lens_q"].tolist() == [0, 3, 5, 7]
    assert out["max_length_q"] == 3


def test_every_input_form_gives_the_same_tensors() -> None:
    plain = [[4, 5, 6], [7, 8, 9]]
    collator = CausalLMCollator(return_tensors="np")
    reference = collator([{"input_ids": r} for r in plain])
    forms = [
        plain,
        [np.array(r, dtype=np.uint32) for r in plain],
        np.array(plain),
        torch.tensor(plain),
        pa.array(plain, type=pa.list_(pa.uint32())),
        pa.record_batch({"input_ids": pa.array(plain, type=pa.list_(pa.uint32()))}),
    ]
    for form in forms:
        out = collator(form)
        for name in ("input_ids", "labels", "position_ids", "cu_seq_lens_q"):
            assert np.array_equal(out[name], reference[name]), (type(form), name)


def test_torch_output_and_fixed_length() -> None:
    out = CausalLMCollator(seq_len=8)(ROWS)
    assert isinstance(out["input_ids"], torch.Tensor) and out["input_ids"].dtype == torch.int64
    assert out["input_ids"].shape == (2, 8)
    assert out["cu_seq_lens_q"].tolist() == [0, 3, 5, 8, 10, 16]


def test_packed_shards_collate_in_a_dataloader(
    pydocs: Path, pydocs_tokenizer: Path, tmp_path: Path
) -> None:
    tokenmill.tokenize(pydocs, tmp_path / "t", pydocs_tokenizer, progress=False)
    tokenmill.pack(tmp_path / "t", tmp_path / "p", 256, fmt="arrow", progress=False)
    table = open_dataset(tmp_path / "p").to_table()
    batch = CausalLMCollator(seq_len=256)(table.slice(0, 16))
    real = batch["attention_mask"].sum().item()
    assert real == sum(len(r) for r in table.column("input_ids").slice(0, 16).to_pylist())
    # Positions restart where documents do, and every document's tokens share an id.
    starts = (batch["position_ids"] == 0) & (batch["attention_mask"] == 1)
    assert starts.sum().item() == sum(
        len(s) for s in table.column("seq_lens").slice(0, 16).to_pylist()
    )


def test_bad_batches() -> None:
    collator = CausalLMCollator(return_tensors="np")
    with pytest.raises(tokenmill.DataError, match="seq_lens do not add up"):
        collator([{"input_ids": [1, 2, 3], "seq_lens": [2]}])
    with pytest.raises(tokenmill.DataError, match="does not fit seq_len 2"):
        CausalLMCollator(seq_len=2)([[1, 2, 3]])
    with pytest.raises(tokenmill.DataError, match="outside the vocabulary of 5"):
        CausalLMCollator(vocab_size=5)([[1, 7]])
    with pytest.raises(tokenmill.ConfigError, match="non-empty list"):
        collator([])
    with pytest.raises(tokenmill.ConfigError, match="'input_ids'"):
        collator([{"tokens": [1]}])
    with pytest.raises(tokenmill.ConfigError, match="mix no packed rows"):
        collator([{"input_ids": [1], "seq_lens": [1]}, {"input_ids": [2]}])
