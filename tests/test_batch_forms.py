"""Every batch form a collator takes, read and checked alike (`tokenmill.batch`).

Before: a left-padded batch was cut to its first `sum(mask)` tokens (pads
kept, real tokens dropped, PrefixLM labels on pads), a mask of 2s was
clamped, a list of 1-D numpy rows wrapped 2^32+7 to 7 and truncated floats,
`CausalLMCollator` took negative ids, uint64 ids past int64 and float
tensors, and null Arrow rows became empty rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import tokenizers
import torch

import tokenmill
from tests.conftest import CORRUPTION_COLLATORS
from tokenmill.batch import read_token_rows
from tokenmill.collate import CausalLMCollator

TEXTS = [
    "def f(x):\n    return x + 1\n",
    "The quick brown fox jumps over the lazy dog, twice, and then once more.",
    "Short.",
    "Pack my box with five dozen liquor jugs; then pack another one.",
]


@pytest.fixture(scope="module")
def tokenizer(pydocs_tokenizer: Path) -> tokenmill.Tokenizer:
    return tokenmill.load_tokenizer(pydocs_tokenizer)


@pytest.fixture(scope="module")
def padded(pydocs_tokenizer: Path) -> dict[str, dict[str, np.ndarray]]:
    """The same texts padded by Hugging Face `tokenizers` on either side,
    as its `encode_batch` with padding hands them to a loader."""
    out = {}
    for side in ("left", "right"):
        hf = tokenizers.Tokenizer.from_file(str(pydocs_tokenizer))
        hf.enable_padding(direction=side, pad_id=hf.token_to_id("<pad>"), pad_token="<pad>")
        encodings = hf.encode_batch(TEXTS, add_special_tokens=False)
        out[side] = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
    return out


@pytest.fixture(scope="module")
def rows(pydocs_tokenizer: Path) -> list[list[int]]:
    hf = tokenizers.Tokenizer.from_file(str(pydocs_tokenizer))
    return [e.ids for e in hf.encode_batch(TEXTS, add_special_tokens=False)]


def collators(tokenizer: tokenmill.Tokenizer) -> dict[str, Callable[[Any], dict[str, Any]]]:
    made: dict[str, Callable[[Any], dict[str, Any]]] = {
        "causal": CausalLMCollator(return_tensors="np"),
        "prefix-decoder": tokenmill.PrefixLMCollator(tokenizer, seed=1, return_tensors="np"),
    }
    for mode, collator in CORRUPTION_COLLATORS.items():
        made[mode] = collator(tokenizer, seed=1, return_tensors="np")
    return made


def test_padding_on_either_side_gives_the_unpadded_rows_batch(
    tokenizer: tokenmill.Tokenizer, padded: dict[str, dict[str, np.ndarray]], rows: list[list[int]]
) -> None:
    left = padded["left"]
    assert left["attention_mask"][2, 0] == 0, "the short row is padded first"
    for name, collate in collators(tokenizer).items():
        expected = collate(rows)
        for side in ("left", "right"):
            for form in (padded[side], {k: torch.from_numpy(v) for k, v in padded[side].items()}):
                got = collate(form)
                assert got.keys() == expected.keys(), (name, side)
                for key in got:
                    assert np.array_equal(got[key], expected[key]), (name, side, key)


def test_prefix_lm_puts_no_label_on_a_pad(
    tokenizer: tokenmill.Tokenizer, padded: dict[str, dict[str, np.ndarray]], rows: list[list[int]]
) -> None:
    out = tokenmill.PrefixLMCollator(tokenizer, seed=0, return_tensors="np")(padded["left"])
    pad = tokenizer.token_to_id("<pad>")
    labels = out["labels"]
    # Every label is a real token of its row, and each row's labels are its tail.
    for r, row in enumerate(rows):
        real = labels[r][labels[r] != -100].tolist()
        assert pad not in real
        assert real == row[len(row) - len(real) :]


def test_list_of_dict_rows_honour_their_own_masks(tokenizer: tokenmill.Tokenizer) -> None:
    form = [
        {"input_ids": [0, 0, 301, 302], "attention_mask": [0, 0, 1, 1]},
        {"input_ids": [303, 304, 305, 0], "attention_mask": [1, 1, 1, 0]},
    ]
    assert read_token_rows(form).tokens.to_pylist() == [[301, 302], [303, 304, 305]]
    table = pa.table(
        {
            "input_ids": [r["input_ids"] for r in form],
            "attention_mask": pa.array([r["attention_mask"] for r in form], pa.list_(pa.int8())),
        }
    )
    assert read_token_rows(table).tokens.to_pylist() == [[301, 302], [303, 304, 305]]
    out = CausalLMCollator(return_tensors="np")(form)
    assert out["input_ids"].tolist() == [[301, 302, 0], [303, 304, 305]]


@pytest.mark.parametrize(
    ("mask", "problem"),
    [
        ([[1, 1, 2], [1, 1, 1]], "row 0: the attention_mask holds 2, not 0 or 1"),
        ([[1, 1, 1], [1, 0, 1]], "row 1: the attention_mask has padding between tokens"),
        ([[1, 1, -1], [1, 1, 1]], "row 0: the attention_mask holds -1"),
    ],
)
def test_a_mask_that_is_not_padding_is_refused(
    tokenizer: tokenmill.Tokenizer, mask: list[list[int]], problem: str
) -> None:
    batch = {"input_ids": np.full((2, 3), 300), "attention_mask": np.array(mask)}
    listed = [{"input_ids": [300] * 3, "attention_mask": m} for m in mask]
    for name, collate in collators(tokenizer).items():
        for form in (batch, listed):
            with pytest.raises(tokenmill.DataError, match=problem) as caught:
                collate(form)
            assert caught.value.row == int(problem[4]), name


def test_a_mask_of_another_shape_or_type_is_refused(tokenizer: tokenmill.Tokenizer) -> None:
    collate = CausalLMCollator()
    with pytest.raises(tokenmill.ConfigError, match=r"shape \[2, 2\], input_ids \[2, 3\]"):
        collate({"input_ids": np.ones((2, 3), np.int64), "attention_mask": np.ones((2, 2))})
    with pytest.raises(tokenmill.DataError, match="holds float64 values"):
        collate({"input_ids": np.ones((2, 3), np.int64), "attention_mask": np.ones((2, 3))})
    bools = {"input_ids": np.ones((1, 3), np.int64), "attention_mask": np.array([[1, 1, 0]]) > 0}
    assert collate(bools)["input_ids"].tolist() == [[1, 1]]


def bad_id_forms(bad: int, dtype: Any) -> dict[str, Any]:
    """One batch whose row 1 holds `bad`, in every form a collator takes."""
    good = [300, 301, 302]
    rows = [np.array(good, dtype=dtype), np.array([303, bad, 304], dtype=dtype)]
    matrix = np.stack(rows)
    return {
        "1-D numpy rows": rows,
        "1-D tensors": [torch.from_numpy(r.astype(np.int64)) for r in rows]
        if dtype == np.int64
        else None,
        "2-D array": matrix,
        "2-D tensor": torch.from_numpy(matrix) if dtype in (np.int64, np.int32) else None,
        "dict of 2-D": {"input_ids": matrix, "attention_mask": np.ones_like(matrix)},
        "dict rows of arrays": [{"input_ids": r} for r in rows],
    }


@pytest.mark.parametrize(
    ("bad", "dtype", "shown"),
    [
        (2**32 + 7, np.uint64, "4294967303"),
        (2**32 + 7, np.int64, "4294967303"),
        (2**63 + 5, np.uint64, "9223372036854775813"),
        (-3, np.int64, "-3"),
        (-3, np.int16, "-3"),
    ],
)
def test_every_form_refuses_an_id_outside_u32_naming_its_row(
    tokenizer: tokenmill.Tokenizer, bad: int, dtype: Any, shown: str
) -> None:
    for name, collate in collators(tokenizer).items():
        for form_name, form in bad_id_forms(bad, dtype).items():
            if form is None:
                continue
            with pytest.raises(tokenmill.DataError, match=f"row 1: .*{shown}") as caught:
                collate(form)
            assert caught.value.row == 1, (name, form_name)
    # The list-of-lists path (read in Rust) says the same.
    if bad < 2**63:
        with pytest.raises(tokenmill.DataError, match=f"row 1: {shown} is not a token id"):
            CausalLMCollator()([[300, 301], [303, bad]])


def test_floats_and_booleans_are_no_token_ids(tokenizer: tokenmill.Tokenizer) -> None:
    floats = [np.array([300.0, 301.0]), np.array([302.0, 303.9])]
    for collate in collators(tokenizer).values():
        for form in (
            floats,
            np.stack(floats),
            torch.tensor([[300.0, 301.0]]),
            [[300, 1.5]],
            [[True, False]],
            [np.array([True, False])],
            {"input_ids": torch.tensor([[300.0, 301.0]])},
        ):
            with pytest.raises(tokenmill.DataError, match="is not a token id"):
                collate(form)


def test_causal_lm_checks_ids_against_its_vocabulary() -> None:
    collate = CausalLMCollator(vocab_size=400)
    for form in ([[1, 2], [3, 400]], [np.array([1, 2]), np.array([3, 400])], np.array([[1, 400]])):
        with pytest.raises(tokenmill.DataError, match="token id 400 is outside the vocabulary"):
            collate(form)
    assert collate([[1, 399]])["input_ids"].tolist() == [[1, 399]]


def test_null_arrow_rows_are_refused_naming_the_row(tokenizer: tokenmill.Tokenizer) -> None:
    ids = pa.array([[300, 301], None, [302]], type=pa.list_(pa.uint32()))
    holed = pa.array([[300, 301], [302, None]], type=pa.list_(pa.int64()))
    for name, collate in collators(tokenizer).items():
        for form, problem in (
            (ids, "row 1: 'input_ids' is null here"),
            (pa.record_batch({"input_ids": ids}), "row 1: 'input_ids' is null here"),
            (pa.table({"input_ids": holed}), "row 1: 'input_ids' holds a null id"),
            ([{"input_ids": [300]}, {"input_ids": None}], "row 1: "),
            ([np.array([300]), None], "row 1: the row is null"),
        ):
            with pytest.raises(tokenmill.DataError, match=problem) as caught:
                collate(form)
            assert caught.value.row == 1, (name, problem)


def test_arrow_rows_of_any_integer_list_type_are_read_alike(tokenizer: tokenmill.Tokenizer) -> None:
    """`datasets` stores input_ids as list<int32> or list<int64>; a fixed
    sequence length gives fixed_size_list."""
    rows = [[300, 301, 302], [303, 304, 305]]
    forms = [
        pa.array(rows, pa.list_(pa.uint32())),
        pa.array(rows, pa.list_(pa.int32())),
        pa.array(rows, pa.list_(pa.int64())),
        pa.array(rows, pa.large_list(pa.int64())),
        pa.array(rows, pa.list_(pa.uint16(), 3)),
        pa.chunked_array([pa.array(rows[:1]), pa.array(rows[1:])]),
        pa.array([[0], *rows], pa.list_(pa.int64())).slice(1),
    ]
    for name, collate in collators(tokenizer).items():
        expected = collate(rows)
        for form in forms:
            got = collate(form)
            for key in expected:
                assert np.array_equal(got[key], expected[key]), (name, form.type, key)
