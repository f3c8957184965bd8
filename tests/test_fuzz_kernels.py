"""Fuzzing every Rust kernel of `tokenmill._core` (the corruptor and the
collators have their own suite): random Arrow inputs in every accepted
layout (string, large, view and binary columns, sliced arrays with a
non-zero offset, chunked arrays, nulls, empty arrays) and random option
values, in domain and out of it.

Each kernel either answers, and the answer is checked against a small
reference or an invariant (lengths, partitions, determinism, slicing),
or refuses with a `tokenmill.TokenmillError`; a panic (`PanicException`
or `InternalError`), any other exception, a wrong length or a wrong
value fails.

The budget is bounded so `make test` stays quick; set
`TOKENMILL_FUZZ_EXAMPLES` (examples per test, default 200) to hunt longer.
Runs are derandomized: the same examples every time.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tokenizers
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import tokenmill
from tokenmill import _core

from .conftest import shared_tokenizer

EXAMPLES = int(os.environ.get("TOKENMILL_FUZZ_EXAMPLES", "200"))
# The most MinHash permutations a hasher takes (`tokenmill_core::minhash::MAX_NUM_PERM`).
MAX_NUM_PERM = 8192
# The largest vocabulary `Vocab` takes (`tokenmill_core::corrupt::MAX_VOCAB_SIZE`).
MAX_VOCAB_SIZE = 2**24
T = TypeVar("T")


def fuzz(weight: float = 1.0) -> Callable[[T], T]:
    """Settings of one fuzz test: `weight` scales the examples of costly kernels."""
    return settings(
        max_examples=max(1, round(EXAMPLES * weight)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


class Refused:
    """A kernel's refusal: the tokenmill error it raised."""

    def __init__(self, error: tokenmill.TokenmillError) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Refused({type(self.error).__name__}: {self.error})"


def attempt(kernel: Callable[..., T], *args: Any, **kwargs: Any) -> T | Refused:
    """The kernel's answer, or its refusal as a tokenmill error. A caught
    panic (`InternalError`), an escaped one (`PanicException`, a
    BaseException) or any other exception fails the example."""
    name = getattr(kernel, "__qualname__", "kernel")
    try:
        result = kernel(*args, **kwargs)
    except tokenmill.InternalError as err:
        raise AssertionError(f"a panic inside the kernel: {err}") from err
    except tokenmill.TokenmillError as err:
        assert str(err), "a tokenmill error without a message"
        _note(f"{name}: {type(err).__name__}")
        return Refused(err)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:
        raise AssertionError(
            f"{type(err).__module__}.{type(err).__name__} instead of a tokenmill error: {err}"
        ) from err
    _note(f"{name}: answered")
    return result


def _note(what: str) -> None:
    """Counts answers and refusals per kernel (`--hypothesis-show-statistics`)."""
    if currently_in_test_context():
        event(what)


def answer(kernel: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """As `attempt`, for calls that must succeed."""
    result = attempt(kernel, *args, **kwargs)
    assert not isinstance(result, Refused), result
    return result


def refusal(
    kind: type[tokenmill.TokenmillError], kernel: Callable[..., Any], *args: Any, **kwargs: Any
) -> tokenmill.TokenmillError:
    """As `attempt`, for calls that must refuse with a `kind` error."""
    result = attempt(kernel, *args, **kwargs)
    assert isinstance(result, Refused), f"expected a {kind.__name__}, got {result!r}"
    assert isinstance(result.error, kind), result
    return result.error


def same(a: Any, b: Any) -> bool:
    """Equal kernel outputs: numpy arrays, pyarrow arrays, tuples of them."""
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, pa.Array | pa.ChunkedArray):
        return bool(a.equals(b))
    return bool(a == b)


# ---------------------------------------------------------------- strategies


def mostly(good: st.SearchStrategy[T], bad: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """`good` about nine times in ten, else `bad`: options out of their
    domain one at a time, so most examples get past the checks."""
    return st.integers(0, 9).flatmap(lambda i: bad if i == 0 else good)


TEXT_TYPES = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "string_view": pa.string_view(),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
    "binary_view": pa.binary_view(),
}
TOKEN_TYPES = {
    "list": pa.list_(pa.uint32()),
    "large_list": pa.large_list(pa.uint32()),
}

WORDS = ["the", "fox", "Fox", "dog", "a", "é", "naïve", "漢字", "🙂", "x_y", "42", "def", "?"]
SPECIAL_TEXTS = [
    "",
    " ",
    "\n\n",
    "\t \u3000 \u00a0",
    "<|endoftext|>",
    "[CLS] [SEP] [MASK]",
    "<s></s><pad>",
    "\x00\x01",
    "e\u0301 \ufb01 \u212b",
    "a" * 300,
    "Hello, World!  It's 2024... ok?",
    "def f(x):\n    return x + 1\n",
]
words_text = st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join)
unicode_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
texts = st.one_of(unicode_text, words_text, st.sampled_from(SPECIAL_TEXTS))


def _layout(draw: st.DrawFn, values: list[Any], type_: pa.DataType, junk: Any) -> Any:
    """`values` as a pyarrow array of `type_`: plain, sliced out of a longer
    array (non-zero offset), or chunked (chunks themselves maybe sliced)."""
    how = draw(st.sampled_from(["plain", "sliced", "chunked"]))
    if how == "plain":
        return pa.array(values, type=type_)
    before = draw(st.integers(0, 3))
    after = draw(st.integers(0, 2))
    whole = pa.array([junk] * before + values + [junk] * after, type=type_)
    sliced = whole.slice(before, len(values))
    if how == "sliced":
        return sliced
    cuts = sorted(draw(st.lists(st.integers(0, len(values)), max_size=3)))
    bounds = [0, *cuts, len(values)]
    chunks = [sliced.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    return pa.chunked_array(chunks, type=type_)


@st.composite
def text_columns(
    draw: st.DrawFn,
    min_size: int = 0,
    max_size: int = 10,
    nulls: bool = True,
    element: st.SearchStrategy[str] = texts,
) -> tuple[Any, list[str | None]]:
    """A text column in a random layout, and the texts it holds."""
    element = st.none() | element if nulls else element
    values = draw(st.lists(element, min_size=min_size, max_size=max_size))
    kind = draw(st.sampled_from(list(TEXT_TYPES)))
    return _layout(draw, values, TEXT_TYPES[kind], "junk row"), values


@st.composite
def byte_columns(draw: st.DrawFn, max_size: int = 8) -> tuple[Any, list[bytes | None]]:
    """A binary column that may hold invalid UTF-8."""
    element = st.none() | st.binary(max_size=12) | texts.map(str.encode)
    values = draw(st.lists(element, max_size=max_size))
    kind = draw(st.sampled_from(["binary", "large_binary", "binary_view"]))
    return _layout(draw, values, TEXT_TYPES[kind], b"\xff junk"), values


def first_invalid_utf8(values: Sequence[bytes | None]) -> int | None:
    for row, value in enumerate(values):
        if value is not None:
            try:
                value.decode()
            except UnicodeDecodeError:
                return row
    return None


@st.composite
def token_columns(
    draw: st.DrawFn,
    max_size: int = 10,
    max_len: int = 30,
    max_id: int = 2**32 - 1,
    types: Sequence[str] = ("list", "large_list"),
    min_len: int = 0,
) -> tuple[Any, list[list[int]]]:
    """A token column (no nulls) in a random layout, and its rows."""
    ids = st.integers(0, max_id) if max_id < 64 else st.integers(0, 50) | st.integers(0, max_id)
    values = draw(st.lists(st.lists(ids, min_size=min_len, max_size=max_len), max_size=max_size))
    kind = draw(st.sampled_from(list(types)))
    return _layout(draw, values, TOKEN_TYPES[kind], [7, 7]), values


def u64_arrays(max_size: int = 40) -> st.SearchStrategy[np.ndarray]:
    """uint64 keys, sometimes a strided (non-contiguous) view."""
    keys = st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 5), max_size=max_size)

    def build(values: list[int], strided: bool) -> np.ndarray:
        array = np.array(values, dtype=np.uint64)
        if strided:
            wide = np.zeros(2 * len(values), dtype=np.uint64)
            wide[::2] = array
            return wide[::2]
        return array

    return st.builds(build, keys, st.booleans())


any_u64 = st.integers(0, 2**64 - 1) | st.integers(0, 3)
wild_floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 1 - 1e-16, 1 + 1e-15, math.inf, -math.inf, math.nan]
)
unit_floats = mostly(st.floats(0.0, 1.0), wild_floats)


def any_order(data: st.DataObject, array: np.ndarray) -> np.ndarray:
    """`array` as it is, or in Fortran order (a non-contiguous row layout)."""
    return np.asfortranarray(array) if data.draw(st.booleans(), label="fortran") else array


def combined(array: Any) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def as_plain(values: list[Any], type_: pa.DataType) -> pa.Array:
    return pa.array(values, type=type_)


# ---------------------------------------------------------------- tokenizers

SHARED = ["gpt2", "cl100k_base", "o200k_base", "bert-base-uncased-wordpiece"]


class TokenizerPairs(dict[str, tuple[tokenmill.Tokenizer, Any]]):
    """tokenmill's tokenizer and the `tokenizers` reference, by name (with a
    short repr: hypothesis prints its arguments when an example fails)."""

    def __repr__(self) -> str:
        return f"TokenizerPairs({', '.join(self)})"


@pytest.fixture(scope="module")
def tokenizer_pairs(small_tokenizer: Path) -> TokenizerPairs:
    paths = {name: shared_tokenizer(name) for name in SHARED}
    paths["small"] = small_tokenizer
    pairs = TokenizerPairs()
    for name, path in paths.items():
        reference = tokenizers.Tokenizer.from_file(str(path))
        reference.no_truncation()
        reference.no_padding()
        pairs[name] = (tokenmill.Tokenizer.from_file(path), reference)
    return pairs


def _expected_ids(reference: Any, values: list[str | None], special: bool, eos: int | None) -> Any:
    encodings = reference.encode_batch([v or "" for v in values], add_special_tokens=special)
    tail = [] if eos is None else [eos]
    ids = [e.ids + tail for e in encodings]
    words = [[-1 if w is None else w for w in e.word_ids] + ([-1] * len(tail)) for e in encodings]
    return ids, words


@fuzz(weight=2)
@given(
    data=st.data(),
    name=st.sampled_from([*SHARED, "small"]),
    special=st.booleans(),
    eos=st.none() | st.integers(0, 50) | st.integers(0, 2**32 - 1),
)
def test_tokenize_gives_the_ids_of_python_tokenizers(
    tokenizer_pairs: TokenizerPairs,
    data: st.DataObject,
    name: str,
    special: bool,
    eos: int | None,
) -> None:
    ours, reference = tokenizer_pairs[name]
    column, values = data.draw(text_columns())
    in_vocab = eos is None or ours.id_to_token(eos) is not None
    ids = attempt(ours.tokenize, column, add_special_tokens=special, eos_id=eos)
    if not in_vocab:
        assert isinstance(ids, Refused) and isinstance(ids.error, tokenmill.ConfigError), ids
        return
    assert not isinstance(ids, Refused), ids
    expected_ids, expected_words = _expected_ids(reference, values, special, eos)
    assert ids.type == pa.list_(pa.field("item", pa.uint32(), False))
    assert ids.to_pylist() == expected_ids
    with_words = answer(ours.tokenize_words, column, add_special_tokens=special, eos_id=eos)
    assert with_words[0].to_pylist() == expected_ids
    assert with_words[1].to_pylist() == expected_words
    # One call again, the exact path, and each text alone: the same ids.
    assert same(answer(ours.tokenize, column, add_special_tokens=special, eos_id=eos), ids)
    exact = ours.exact().tokenize(column, add_special_tokens=special, eos_id=eos)
    assert exact.to_pylist() == expected_ids
    for value, row in zip(values, expected_ids, strict=True):
        alone = answer(ours.encode, value or "", add_special_tokens=special)
        assert alone + ([] if eos is None else [eos]) == row


@fuzz()
@given(data=st.data(), name=st.sampled_from([*SHARED, "small"]))
def test_tokenize_refuses_invalid_utf8_naming_the_row(
    tokenizer_pairs: TokenizerPairs, data: st.DataObject, name: str
) -> None:
    ours, reference = tokenizer_pairs[name]
    column, values = data.draw(byte_columns())
    bad = first_invalid_utf8(values)
    for kernel in (ours.tokenize, lambda c: ours.tokenize_words(c)[0]):
        result = attempt(kernel, column)
        if bad is None:
            assert not isinstance(result, Refused), result
            texts_ = [None if v is None else v.decode() for v in values]
            assert result.to_pylist() == _expected_ids(reference, texts_, False, None)[0]
        else:
            assert isinstance(result, Refused) and isinstance(result.error, tokenmill.DataError)
            assert result.error.row == bad, result


@fuzz()
@given(
    data=st.data(),
    name=st.sampled_from([*SHARED, "small"]),
    skip=st.booleans(),
)
def test_decode_matches_python_tokenizers(
    tokenizer_pairs: TokenizerPairs,
    data: st.DataObject,
    name: str,
    skip: bool,
) -> None:
    ours, reference = tokenizer_pairs[name]
    size = ours.vocab_size
    ids = data.draw(
        st.lists(st.integers(0, size - 1) | st.integers(0, 2**32 - 1), max_size=20), label="ids"
    )
    result = attempt(ours.decode, ids, skip_special_tokens=skip)
    if any(reference.id_to_token(i) is None for i in ids):
        assert isinstance(result, Refused), result
        assert isinstance(result.error, tokenmill.TokenizerError), result
        return
    assert result == reference.decode(ids, skip_special_tokens=skip)
    text = data.draw(texts, label="text")
    ids = reference.encode(text, add_special_tokens=False).ids
    assert ours.decode(ours.encode(text), skip_special_tokens=skip) == reference.decode(
        ids, skip_special_tokens=skip
    )


def test_tokenizer_arguments_outside_their_type_raise_python_errors(
    tokenizer_pairs: TokenizerPairs,
) -> None:
    """PyO3's conversion refuses an int outside uint32 (an eos id, a token
    id) with OverflowError before any kernel runs: the raw API's boundary.
    The public tokenize stage resolves the EOS from its token text."""
    ours, _ = tokenizer_pairs["gpt2"]
    for bad in (-1, 2**32, 2**70):
        with pytest.raises(OverflowError):
            ours.tokenize(pa.array(["a"]), eos_id=bad)
        with pytest.raises(OverflowError):
            ours.decode([bad])
    with pytest.raises(tokenmill.SchemaError):
        ours.tokenize(["a list, not an Arrow array"])


# ---------------------------------------------------------------- BPE training


@fuzz(weight=0.5)
@given(
    data=st.data(),
    vocab_size=st.integers(0, 600) | st.sampled_from([2**40, 2**64 - 1]),
    min_frequency=st.integers(0, 4) | st.sampled_from([2**63, 2**64 - 1]),
)
def test_bpe_trainer_trains_a_lossless_tokenizer(
    data: st.DataObject, vocab_size: int, min_frequency: int
) -> None:
    batches = data.draw(st.lists(text_columns(max_size=6), min_size=1, max_size=3), label="batches")
    trainer = _core.BpeTrainer()
    twin = _core.BpeTrainer()
    for column, _ in batches:
        answer(trainer.add, column)
        answer(twin.add, combined(column))
    all_texts = [v for _, values in batches for v in values]
    assert trainer.documents == len(all_texts)
    assert trainer.distinct_words == twin.distinct_words
    trained = attempt(trainer.train, vocab_size, min_frequency=min_frequency)
    # The special tokens and the 256 bytes come first; an empty corpus trains nothing.
    floor = len(_core.special_tokens()) + 256
    if vocab_size < floor or trainer.distinct_words == 0:
        assert isinstance(trained, Refused) and isinstance(trained.error, tokenmill.ConfigError)
        return
    assert not isinstance(trained, Refused), trained
    again = answer(twin.train, vocab_size, min_frequency=min_frequency)
    assert trained.to_str() == again.to_str(), "training is not deterministic"
    reference = tokenizers.Tokenizer.from_str(trained.to_str())
    sample = [v for v in all_texts if v is not None][:8]
    got = trained.tokenize(pa.array(sample, pa.string())).to_pylist()
    assert got == [e.ids for e in reference.encode_batch(sample, add_special_tokens=False)]
    assert floor <= trained.vocab_size <= vocab_size
    for text, ids in zip(sample, got, strict=True):
        assert all(0 <= i < trained.vocab_size for i in ids)
        assert trained.decode(ids) == text, "a byte-level BPE loses nothing"


# ---------------------------------------------------------------- row keys and randomness

INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64()]
UINT_TYPES = [pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


@fuzz()
@given(data=st.data(), type_=st.sampled_from(INT_TYPES + UINT_TYPES))
def test_row_keys_from_integer_ids(data: st.DataObject, type_: pa.DataType) -> None:
    bits = type_.bit_width
    low = -(2 ** (bits - 1)) if pa.types.is_signed_integer(type_) else 0
    high = 2 ** (bits - 1) - 1 if pa.types.is_signed_integer(type_) else 2**bits - 1
    values = data.draw(st.lists(st.none() | st.integers(low, high), max_size=12), label="ids")
    column = _layout(data.draw, values, type_, 0)
    keys = attempt(_core.row_keys_from_ids, column)
    if None in values:
        assert isinstance(keys, Refused) and isinstance(keys.error, tokenmill.DataError)
        assert keys.error.row == values.index(None)
        return
    assert not isinstance(keys, Refused), keys
    assert keys.dtype == np.uint64 and keys.shape == (len(values),)
    # A key depends on the id's value alone, whatever the width or the neighbours.
    for value, key in zip(values, keys, strict=True):
        wider = pa.int64() if value < 2**63 else pa.uint64()
        assert _core.row_keys_from_ids(pa.array([value], wider))[0] == key
    assert same(answer(_core.row_keys_from_ids, column), keys)


@fuzz()
@given(data=st.data())
def test_row_keys_from_string_ids(data: st.DataObject) -> None:
    column, values = data.draw(text_columns())
    keys = attempt(_core.row_keys_from_ids, column, column="doc")
    if None in values:
        assert isinstance(keys, Refused) and isinstance(keys.error, tokenmill.DataError)
        assert keys.error.row == values.index(None)
        assert "'doc'" in str(keys.error)
        return
    assert not isinstance(keys, Refused), keys
    assert keys.shape == (len(values),)
    plain = _core.row_keys_from_ids(pa.array(values, pa.string()))
    assert same(keys, plain), "the layout changed the keys"
    for a, b in zip(values, keys, strict=True):
        for c, d in zip(values, keys, strict=True):
            assert (a == c) == (b == d), "equal ids, equal keys; others differ"


@fuzz(weight=0.5)
@given(
    values=st.lists(st.floats() | st.none(), max_size=4)
    | st.lists(st.lists(st.integers(0, 9)), max_size=3)
    | st.lists(st.booleans(), max_size=3)
)
def test_row_keys_refuse_other_id_types(values: list[Any]) -> None:
    refusal(tokenmill.SchemaError, _core.row_keys_from_ids, pa.array(values))


@fuzz()
@given(shard=st.text(max_size=10), first=any_u64, rows=st.integers(0, 200))
def test_row_keys_from_position(shard: str, first: int, rows: int) -> None:
    keys = attempt(_core.row_keys_from_position, shard, first, rows)
    if first + rows > 2**64:
        assert isinstance(keys, Refused) and isinstance(keys.error, tokenmill.ConfigError), keys
        return
    assert not isinstance(keys, Refused), keys
    assert keys.dtype == np.uint64 and keys.shape == (rows,)
    # Any window of rows gives the keys of those rows.
    if rows:
        cut = rows // 2
        tail = _core.row_keys_from_position(shard, first + cut, rows - cut)
        assert same(keys[cut:], tail)


def test_row_keys_from_position_refuses_more_rows_than_memory_holds() -> None:
    refusal(tokenmill.ConfigError, _core.row_keys_from_position, "s", 0, 2**60)
    refusal(tokenmill.ConfigError, _core.row_keys_from_position, "s", 2**64 - 1, 2)


@fuzz()
@given(
    keys=u64_arrays(),
    seed=any_u64,
    stage=st.text(max_size=8),
    epoch=any_u64,
    draws=st.integers(0, 5) | st.sampled_from([2**40, 2**62, 2**64 - 1]),
)
def test_uniform_draws_in_unit_interval(
    keys: np.ndarray, seed: int, stage: str, epoch: int, draws: int
) -> None:
    values = attempt(_core.uniform, keys, seed=seed, stage=stage, epoch=epoch, draws=draws)
    if draws >= 2**40 and len(keys):
        assert isinstance(values, Refused) and isinstance(values.error, tokenmill.ConfigError)
        return
    assert not isinstance(values, Refused), values
    assert values.dtype == np.float64 and values.shape == (len(keys) * draws,)
    if not len(keys):
        return
    assert ((values >= 0) & (values < 1)).all()
    grid = values.reshape(len(keys), draws)
    # Draw j of a row does not depend on how many are asked, nor on other rows.
    one = answer(_core.uniform, keys[:1], seed=seed, stage=stage, epoch=epoch, draws=1)
    assert grid[0, :1].tolist() == one.tolist()[:draws]
    equal_keys = keys[:, None] == keys[None, :]
    assert ((grid[:, None, :] == grid[None, :, :]).all(axis=2) | ~equal_keys).all()
    assert same(
        answer(_core.uniform, keys, seed=seed, stage=stage, epoch=epoch, draws=draws), values
    )


@fuzz()
@given(
    keys=u64_arrays(),
    seed=any_u64,
    fraction=unit_floats,
    stage=st.text(max_size=8),
    epoch=any_u64,
)
def test_keep_mask_and_its_complement(
    keys: np.ndarray, seed: int, fraction: float, stage: str, epoch: int
) -> None:
    kept = attempt(_core.keep_mask, keys, seed=seed, fraction=fraction, stage=stage, epoch=epoch)
    if not 0.0 <= fraction <= 1.0:
        assert isinstance(kept, Refused) and isinstance(kept.error, tokenmill.ConfigError), kept
        return
    assert not isinstance(kept, Refused), kept
    assert kept.dtype == np.bool_ and kept.shape == keys.shape
    rest = _core.keep_mask(
        keys, seed=seed, fraction=fraction, invert=True, stage=stage, epoch=epoch
    )
    assert (kept ^ rest).all(), "the sample and its complement must partition the rows"
    if fraction == 0.0:
        assert not kept.any()
    if fraction == 1.0:
        assert kept.all()
    for key, keep in zip(keys[:5], kept[:5], strict=False):
        alone = _core.keep_mask(
            np.array([key], np.uint64), seed=seed, fraction=fraction, stage=stage, epoch=epoch
        )
        assert alone[0] == keep


@fuzz(weight=0.3)
@given(seed=any_u64, fraction=st.floats(0.0, 1.0), first=any_u64)
def test_keep_mask_keeps_the_fraction(seed: int, fraction: float, first: int) -> None:
    n = 20_000
    keys = (np.arange(n, dtype=np.uint64) + np.uint64(first % 2**63)).astype(np.uint64)
    rate = _core.keep_mask(keys, seed=seed, fraction=fraction).mean()
    sigma = math.sqrt(max(fraction * (1 - fraction), 1e-12) / n)
    assert abs(rate - fraction) < 6 * sigma + 1e-9, (rate, fraction)


def test_random_arguments_outside_their_type_raise_python_errors() -> None:
    """PyO3 refuses negative or oversized seeds and keys of another dtype
    (OverflowError, TypeError) before any kernel runs; the public stages
    validate theirs first (sample checks --seed, the datasets draw keys)."""
    keys = np.arange(3, dtype=np.uint64)
    with pytest.raises(OverflowError):
        _core.keep_mask(keys, seed=-1, fraction=0.5)
    with pytest.raises(OverflowError):
        _core.uniform(keys, seed=2**64, stage="s")
    with pytest.raises(TypeError):
        _core.keep_mask(np.arange(3, dtype=np.int64), seed=1, fraction=0.5)


# ---------------------------------------------------------------- MinHash and LSH

normalizations = st.fixed_dictionaries(
    {
        "lowercase": st.booleans(),
        "collapse_whitespace": st.booleans(),
        "strip_punctuation": st.booleans(),
    }
)
shingle_kinds = mostly(st.sampled_from(["word", "char"]), st.sampled_from(["", "Word", "byte"]))
ngrams = mostly(st.integers(1, 6), st.sampled_from([0, 2**40, 2**64 - 1]))


@fuzz(weight=1.5)
@given(
    data=st.data(),
    num_perm=mostly(st.integers(1, 300), st.sampled_from([0, MAX_NUM_PERM + 1, 2**40, 2**64 - 1])),
    ngram=ngrams,
    shingle=shingle_kinds,
    seed=any_u64,
    norm=normalizations,
)
def test_minhash_signatures(
    data: st.DataObject,
    num_perm: int,
    ngram: int,
    shingle: str,
    seed: int,
    norm: dict[str, bool],
) -> None:
    column, values = data.draw(text_columns())
    options = dict(num_perm=num_perm, ngram=ngram, shingle=shingle, seed=seed, **norm)
    result = attempt(_core.minhash_signatures, column, **options)
    in_domain = 1 <= num_perm <= MAX_NUM_PERM and ngram >= 1 and shingle in ("word", "char")
    if not in_domain:
        assert isinstance(result, Refused) and isinstance(result.error, tokenmill.ConfigError)
        return
    assert not isinstance(result, Refused), result
    signatures, short = result
    assert signatures.dtype == np.uint64 and signatures.shape == (len(values), num_perm)
    assert short.dtype == np.bool_ and short.shape == (len(values),)
    assert same(answer(_core.minhash_signatures, combined(column), **options), result)
    sets_options = dict(ngram=ngram, shingle=shingle, **norm)
    flat, offsets = answer(_core.shingle_sets, column, **sets_options)
    assert offsets.shape == (len(values) + 1,) and offsets[0] == 0
    assert (np.diff(offsets.astype(np.int64)) >= 0).all() and offsets[-1] == len(flat)
    by_set: dict[bytes, np.ndarray] = {}
    for row, value in enumerate(values):
        alone = _core.shingle_set(value or "", **sets_options)
        got = flat[offsets[row] : offsets[row + 1]]
        assert same(got, alone), f"row {row}: shingle_sets and shingle_set disagree"
        assert (np.diff(got) > 0).all(), "a shingle set is sorted and deduplicated"
        assert bool(short[row]) == (len(alone) == 0)
        # Equal shingle sets, equal signatures; each row signs on its own.
        seen = by_set.setdefault(alone.tobytes(), signatures[row])
        assert same(seen, signatures[row])
        one = _core.minhash_signatures(pa.array([value], pa.string()), **options)
        assert same(one[0][0], signatures[row])


@fuzz()
@given(data=st.data(), ngram=ngrams, shingle=shingle_kinds, norm=normalizations)
def test_shingle_sets_and_text_hashes_refuse_invalid_utf8(
    data: st.DataObject, ngram: int, shingle: str, norm: dict[str, bool]
) -> None:
    column, values = data.draw(byte_columns())
    bad = first_invalid_utf8(values)
    in_domain = ngram >= 1 and shingle in ("word", "char")
    calls = [
        lambda: _core.text_hashes(column, **norm),
        lambda: _core.shingle_sets(column, ngram=ngram, shingle=shingle, **norm),
        lambda: _core.minhash_signatures(column, ngram=ngram, shingle=shingle, **norm),
    ]
    for index, call in enumerate(calls):
        result = attempt(call)
        if index and not in_domain:
            assert isinstance(result, Refused) and isinstance(result.error, tokenmill.ConfigError)
        elif bad is not None:
            assert isinstance(result, Refused) and isinstance(result.error, tokenmill.DataError)
            assert result.error.row == bad
        else:
            assert not isinstance(result, Refused), result


@fuzz()
@given(
    data=st.data(),
    bands=mostly(st.integers(1, 4), st.sampled_from([0, 2**32, 2**63, 2**64 - 1])),
    rows=mostly(st.integers(1, 4), st.sampled_from([0, 2**32, 2**63, 2**64 - 1])),
)
def test_band_keys(data: st.DataObject, bands: int, rows: int) -> None:
    n = data.draw(st.integers(0, 8), label="docs")
    fits = bands * rows if bands * rows <= 16 else 0
    width = data.draw(mostly(st.integers(fits, fits + 3), st.integers(0, 12)), label="width")
    values = st.integers(0, 3) | st.integers(0, 2**64 - 1)
    signatures = np.array(
        data.draw(
            st.lists(st.lists(values, min_size=width, max_size=width), min_size=n, max_size=n)
        ),
        dtype=np.uint64,
    ).reshape(n, width)
    signatures = any_order(data, signatures)
    keys = attempt(_core.band_keys, signatures, bands, rows)
    if bands < 1 or rows < 1 or bands * rows > width:
        assert isinstance(keys, Refused) and isinstance(keys.error, tokenmill.ConfigError), keys
        return
    assert not isinstance(keys, Refused), keys
    assert keys.dtype == np.uint64 and keys.shape == (n, bands)
    for a in range(n):
        for b in range(n):
            for band in range(bands):
                part = slice(band * rows, (band + 1) * rows)
                equal_band = (signatures[a, part] == signatures[b, part]).all()
                assert (keys[a, band] == keys[b, band]) == equal_band
    for a in range(n):
        assert same(
            _core.band_keys(np.ascontiguousarray(signatures[a : a + 1]), bands, rows)[0], keys[a]
        )


def _candidate_pairs(band_keys: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of documents sharing a band key (keys are seeded per band, so a
    key names one bucket whatever its column)."""
    holders: dict[int, set[int]] = {}
    for doc, row in enumerate(band_keys.tolist()):
        for key in row:
            holders.setdefault(key, set()).add(doc)
    return {(a, b) for docs in holders.values() for a in docs for b in docs if a < b}


@fuzz()
@given(data=st.data())
def test_lsh_candidate_pairs_are_the_documents_sharing_a_key(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 12), label="docs")
    bands = data.draw(st.integers(0, 4), label="bands")
    keys = np.array(
        data.draw(
            st.lists(
                st.integers(0, 6) | st.integers(0, 2**64 - 1),
                min_size=n * bands,
                max_size=n * bands,
            )
        ),
        dtype=np.uint64,
    ).reshape(n, bands)
    pairs = answer(_core.lsh_candidate_pairs, any_order(data, keys))
    assert pairs.dtype == np.uint64 and pairs.ndim == 2 and pairs.shape[1] == 2
    listed = [tuple(p) for p in pairs.tolist()]
    assert listed == sorted(set(listed)), "pairs are sorted and distinct"
    assert set(listed) == _candidate_pairs(keys)


def _components(n: int, pairs: Sequence[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return [find(x) for x in range(n)]


@fuzz()
@given(data=st.data(), n=st.integers(0, 30))
def test_connected_components_match_a_union_find(data: st.DataObject, n: int) -> None:
    index = st.integers(0, max(n - 1, 0)) if n else st.integers(0, 3)
    out_of_range = st.integers(n, 2**64 - 1)
    element = index | out_of_range if data.draw(st.booleans(), label="bad") else index
    pairs = data.draw(st.lists(st.tuples(element, element), max_size=40), label="pairs")
    array = any_order(data, np.array(pairs, dtype=np.uint64).reshape(len(pairs), 2))
    roots = attempt(_core.connected_components, n, array)
    if any(a >= n or b >= n for a, b in pairs):
        assert isinstance(roots, Refused) and isinstance(roots.error, tokenmill.ConfigError), roots
        return
    assert not isinstance(roots, Refused), roots
    assert roots.dtype == np.uint64 and roots.tolist() == _components(n, pairs)


@fuzz(weight=0.5)
@given(
    n=st.integers(0, 5) | st.sampled_from([2**40, 2**63, 2**64 - 1]),
    shape=st.sampled_from([(0, 2), (1, 2), (2, 1), (2, 3), (0, 0), (3, 0)]),
)
def test_connected_components_refuse_bad_shapes_and_sizes(n: int, shape: tuple[int, int]) -> None:
    pairs = np.zeros(shape, dtype=np.uint64)
    roots = attempt(_core.connected_components, n, pairs)
    if (shape[1] != 2 and shape[0] > 0) or n > 2**36:
        assert isinstance(roots, Refused) and isinstance(roots.error, tokenmill.ConfigError), roots
    elif shape[1] != 2:
        assert isinstance(roots, Refused) or roots.tolist() == list(range(n))
    elif shape[0] and not n:
        assert isinstance(roots, Refused) and isinstance(roots.error, tokenmill.ConfigError), roots
    else:
        assert not isinstance(roots, Refused), roots
        assert roots.tolist() == _components(n, [(0, 0)] * shape[0])


@fuzz()
@given(
    threshold=unit_floats,
    num_perm=mostly(st.integers(1, 300), st.sampled_from([0, MAX_NUM_PERM + 1, 2**64 - 1])),
    fp=mostly(st.floats(0, 10), wild_floats),
    fn=mostly(st.floats(0, 10), wild_floats),
)
def test_optimal_bands(threshold: float, num_perm: int, fp: float, fn: float) -> None:
    result = attempt(_core.optimal_bands, threshold, num_perm, fp, fn)
    weights_ok = all(math.isfinite(w) and w >= 0 for w in (fp, fn)) and fp + fn > 0
    if not (0 < threshold < 1) or not 1 <= num_perm <= MAX_NUM_PERM or not weights_ok:
        assert isinstance(result, Refused) and isinstance(result.error, tokenmill.ConfigError)
        return
    assert not isinstance(result, Refused), result
    bands, rows = result
    assert bands >= 1 and rows >= 1 and bands * rows <= num_perm
    assert answer(_core.optimal_bands, threshold, num_perm, fp, fn) == result


# ---------------------------------------------------------------- clustering work files


def _write(path: Path, values: Sequence[int]) -> Path:
    np.array(values, dtype="<u8").tofile(path)
    return path


@fuzz(weight=0.5)
@given(
    data=st.data(),
    num_perm=st.integers(1, 6),
    bands=st.integers(1, 3),  # at most num_perm, as dedup's band keys are
    threshold=st.floats(0.0, 1.0) | st.sampled_from([0.5, 1.0]),
    budget=st.sampled_from([16, 64, 1 << 20]),
    exact=st.booleans(),
)
def test_cluster_minhash_files_match_a_reference(
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
    num_perm: int,
    bands: int,
    threshold: float,
    budget: int,
    exact: bool,
) -> None:
    work = tmp_path_factory.mktemp("cluster")
    bands = min(bands, num_perm)
    shard_rows = data.draw(st.lists(st.integers(0, 6), min_size=1, max_size=3), label="rows")
    value = st.integers(0, 2) | st.just(2**64 - 1)
    sig_files, band_files, shingle_files, offset_files = [], [], [], []
    signatures, keys, sets = [], [], []
    for shard, rows in enumerate(shard_rows):
        sig = [
            data.draw(st.lists(value, min_size=num_perm, max_size=num_perm)) for _ in range(rows)
        ]
        sig = [[2**64 - 1] * num_perm if row[0] == 2**64 - 1 else row for row in sig]
        key = [
            data.draw(st.lists(st.integers(0, 4), min_size=bands, max_size=bands))
            for _ in range(rows)
        ]
        shingles = [
            sorted(set(data.draw(st.lists(st.integers(0, 5), max_size=4)))) for _ in range(rows)
        ]
        sig_files.append(_write(work / f"{shard}.sig", [v for row in sig for v in row]))
        band_files.append(_write(work / f"{shard}.bands", [v for row in key for v in row]))
        shingle_files.append(_write(work / f"{shard}.sh", [v for s in shingles for v in s]))
        offsets = np.cumsum([0, *[len(s) for s in shingles]]).tolist()
        offset_files.append(_write(work / f"{shard}.off", offsets))
        signatures += sig
        keys += key
        sets += shingles
    extra = {"shingle_files": shingle_files, "offset_files": offset_files} if exact else {}
    clusters, stats = answer(
        _core.cluster_minhash_files,
        sig_files,
        band_files,
        num_perm=num_perm,
        bands=bands,
        threshold=threshold,
        scratch_dir=work / "scratch",
        memory_budget=budget,
        **extra,
    )
    n = len(signatures)
    signed = [d for d in range(n) if signatures[d][0] != 2**64 - 1]
    holders: dict[int, set[int]] = {}
    for d in signed:
        for k in keys[d]:
            holders.setdefault(k, set()).add(d)

    def similar(a: int, b: int) -> bool:
        if exact:
            x, y = set(sets[a]), set(sets[b])
            jaccard = 1.0 if not x and not y else len(x & y) / len(x | y)
        else:
            jaccard = (
                sum(p == q for p, q in zip(signatures[a], signatures[b], strict=True)) / num_perm
            )
        return jaccard >= threshold

    joined = [
        (a, b) for docs in holders.values() for a in docs for b in docs if a < b and similar(a, b)
    ]
    assert clusters.dtype == np.uint64 and clusters.tolist() == _components(n, joined)
    assert set(stats) == {"shared_buckets", "pairs_checked", "pairs_joined", "spilled_partitions"}


@fuzz(weight=0.5)
@given(
    data=st.data(),
    num_perm=mostly(st.integers(1, 4), st.sampled_from([0, 2**40, 2**64 - 1])),
    bands=mostly(st.integers(1, 2), st.sampled_from([0, 2**40, 2**64 - 1])),
    threshold=unit_floats,
    budget=st.integers(0, 64) | st.sampled_from([2**64 - 1]),
)
def test_cluster_minhash_files_refuse_what_does_not_fit(
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
    num_perm: int,
    bands: int,
    threshold: float,
    budget: int,
) -> None:
    """Work files of any size (not matching the options) and any offsets:
    an answer of the right length, or a tokenmill error, never a panic."""
    work = tmp_path_factory.mktemp("bad-cluster")
    u64 = st.integers(0, 8) | st.integers(0, 2**64 - 1)
    rows = data.draw(st.integers(0, 4), label="rows")
    # Mostly files of the sizes the options call for, holding any values.
    sizes = {
        "sig": rows * min(num_perm, 8),
        "bands": rows * min(bands, 8),
        "shingles": data.draw(st.integers(0, 8)),
        "offsets": rows + 1,
    }
    files = {
        name: _write(
            work / name,
            data.draw(
                mostly(st.lists(u64, min_size=n, max_size=n), st.lists(u64, max_size=12)),
                label=name,
            ),
        )
        for name, n in sizes.items()
    }
    exact = data.draw(st.booleans(), label="exact")
    extra = (
        {"shingle_files": [files["shingles"]], "offset_files": [files["offsets"]]} if exact else {}
    )
    result = attempt(
        _core.cluster_minhash_files,
        [files["sig"]],
        [files["bands"]],
        num_perm=num_perm,
        bands=bands,
        threshold=threshold,
        scratch_dir=work / "scratch",
        memory_budget=budget,
        **extra,
    )
    if not isinstance(result, Refused):
        clusters, _ = result
        sig_values = files["sig"].stat().st_size // 8
        assert len(clusters) == sig_values // num_perm
        assert all(c <= i for i, c in enumerate(clusters.tolist()))


def test_cluster_minhash_files_refuse_missing_files(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        _core.cluster_minhash_files(
            [tmp_path / "nope"],
            [tmp_path / "nope"],
            num_perm=2,
            bands=1,
            threshold=0.5,
            scratch_dir=tmp_path,
        )
    refusal(
        tokenmill.ConfigError,
        _core.cluster_minhash_files,
        [tmp_path / "a"],
        [],
        num_perm=2,
        bands=1,
        threshold=0.5,
        scratch_dir=tmp_path,
    )


# ---------------------------------------------------------------- exact hashes


@fuzz()
@given(data=st.data(), norm=normalizations)
def test_text_hashes(data: st.DataObject, norm: dict[str, bool]) -> None:
    column, values = data.draw(text_columns())
    hashes = answer(_core.text_hashes, column, **norm)
    assert hashes.dtype == np.uint64 and hashes.shape == (len(values), 2)
    assert same(answer(_core.text_hashes, combined(column), **norm), hashes)
    raw = answer(
        _core.text_hashes,
        column,
        lowercase=False,
        collapse_whitespace=False,
        strip_punctuation=False,
    )
    for a, ha, ra in zip(values, hashes.tolist(), raw.tolist(), strict=True):
        for b, hb, rb in zip(values, hashes.tolist(), raw.tolist(), strict=True):
            if (a or "") == (b or ""):
                assert ha == hb and ra == rb, "equal texts, equal hashes"
            if ra == rb:
                assert (a or "") == (b or ""), "unnormalized hashes collide"
            if ra == rb:
                assert ha == hb


@fuzz()
@given(data=st.data())
def test_token_hashes(data: st.DataObject) -> None:
    column, values = data.draw(token_columns(types=("list",)))
    hashes = answer(_core.token_hashes, column)
    assert hashes.dtype == np.uint64 and hashes.shape == (len(values), 2)
    for a, ha in zip(values, hashes.tolist(), strict=True):
        for b, hb in zip(values, hashes.tolist(), strict=True):
            assert (a == b) == (ha == hb)
    assert same(answer(_core.token_hashes, combined(column)), hashes)


@fuzz()
@given(data=st.data())
def test_content_hashes(data: st.DataObject) -> None:
    if data.draw(st.booleans(), label="tokens"):
        column, values = data.draw(token_columns())
    else:
        column, values = data.draw(text_columns(nulls=False))
    hashes = answer(_core.content_hashes, column)
    assert hashes.dtype == np.uint64 and hashes.shape == (len(values),)
    for a, ha in zip(values, hashes.tolist(), strict=True):
        for b, hb in zip(values, hashes.tolist(), strict=True):
            assert (a == b) == (ha == hb)


@fuzz()
@given(
    values=st.lists(st.none() | st.lists(st.none() | st.integers(0, 9), max_size=3), max_size=5),
    type_=st.sampled_from(
        [
            pa.list_(pa.uint32()),
            pa.large_list(pa.uint32()),
            pa.list_(pa.int32()),
            pa.list_(pa.uint64()),
        ]
    ),
)
def test_token_kernels_refuse_nulls_and_other_types(values: list[Any], type_: pa.DataType) -> None:
    column = pa.array(values, type=type_)
    null_list = next((r for r, v in enumerate(values) if v is None), None)
    null_id = next((r for r, v in enumerate(values) if v is not None and None in v), None)
    for kernel in (_core.token_hashes, _core.content_hashes, lambda c: _core.Packer(4).push(c, 0)):
        result = attempt(kernel, column)
        list_ok = type_ == pa.list_(pa.uint32()) or (
            type_ == pa.large_list(pa.uint32()) and kernel is _core.content_hashes
        )
        if type_ not in (pa.list_(pa.uint32()), pa.large_list(pa.uint32())):
            if kernel is _core.content_hashes:
                assert isinstance(result, Refused), result
            else:
                assert isinstance(result, Refused) and isinstance(
                    result.error, tokenmill.SchemaError
                )
        elif not list_ok:
            assert isinstance(result, Refused) and isinstance(result.error, tokenmill.SchemaError)
        elif null_list is not None or null_id is not None:
            assert isinstance(result, Refused) and isinstance(result.error, tokenmill.DataError)
        else:
            assert not isinstance(result, Refused), result


# ---------------------------------------------------------------- packing


def _pack_all(
    packer: Any, batches: list[Any], first_docs: list[int]
) -> list[tuple[list[Any], ...]]:
    outputs = [packer.push(b, d) for b, d in zip(batches, first_docs, strict=True)]
    outputs.append(packer.finish())
    return [tuple(column.to_pylist() for column in out) for out in outputs]


@fuzz(weight=1.5)
@given(
    data=st.data(),
    seq_len=st.integers(1, 12) | st.sampled_from([2**20, 2**32 - 1]),
    strategy=st.sampled_from(["bfd", "concat"]),
    buffer=st.integers(1, 5) | st.sampled_from([10_000, 2**64 - 1]),
    overlap=st.booleans(),
    first=st.integers(0, 1000) | st.sampled_from([2**64 - 100, 2**64 - 1]),
)
def test_packer_places_every_token_once(
    data: st.DataObject,
    seq_len: int,
    strategy: str,
    buffer: int,
    overlap: bool,
    first: int,
) -> None:
    batches = data.draw(
        st.lists(token_columns(max_size=5, max_len=20, types=("list",)), max_size=4),
        label="batches",
    )
    packer = attempt(_core.Packer, seq_len, strategy=strategy, buffer=buffer, overlap=overlap)
    if strategy == "concat" and overlap and seq_len == 1:
        # A row of one token would hold nothing but the token carried over.
        assert isinstance(packer, Refused) and isinstance(packer.error, tokenmill.ConfigError)
        return
    assert not isinstance(packer, Refused), packer
    docs: list[list[int]] = []
    firsts = []
    for _, values in batches:
        # (an empty last batch may start at 2^64, past what PyO3 converts)
        firsts.append(min(first + len(docs), 2**64 - 1))
        docs += values
    if first + len(docs) > 2**64:
        # Documents numbered past u64 are refused, not wrapped round to 0.
        whole = pa.array(docs, pa.list_(pa.uint32()))
        refusal(tokenmill.ConfigError, packer.push, whole, first)
        return
    outputs = _pack_all(packer, [b for b, _ in batches], firsts)
    rows = [row for out in outputs for row in zip(*out, strict=True)]
    stats = packer.stats
    assert stats["documents"] == len(docs)
    assert stats["empty_documents"] == sum(not d for d in docs)
    assert stats["rows"] == len(rows)
    placed: list[tuple[int, int, int]] = []  # (doc, offset, token)
    for ids, seq_lens, doc_index, doc_offset, positions in rows:
        assert 0 < len(ids) <= seq_len
        assert strategy == "bfd" or len(ids) == seq_len, "concat rows are full"
        assert sum(seq_lens) == len(ids), "seq_lens add up to the row"
        assert len(seq_lens) == len(doc_index) == len(doc_offset) and all(seq_lens)
        assert positions == [p for n in seq_lens for p in range(n)]
        at = 0
        for n, doc, offset in zip(seq_lens, doc_index, doc_offset, strict=True):
            source = docs[doc - first]
            assert ids[at : at + n] == source[offset : offset + n], "a segment is its document"
            placed += [(doc, offset + i, ids[at + i]) for i in range(n)]
            at += n
    tokens = [(first + d, i, t) for d, doc in enumerate(docs) for i, t in enumerate(doc)]
    if strategy == "bfd":
        assert sorted(placed) == tokens, "bfd places every token exactly once"
        assert stats["tokens"] == len(tokens)
    else:
        # Concat keeps document order, cuts every seq_len tokens and drops
        # the last partial row; with overlap each row repeats the last token
        # of the one before.
        stream = [(d, i, t) for d, i, t in placed]
        if overlap:
            unique = []
            for r, (_, seq_lens, *_rest) in enumerate(rows):
                start = sum(len(rows[q][0]) for q in range(r))
                row_tokens = stream[start : start + sum(seq_lens)]
                unique += row_tokens[1:] if r else row_tokens
            stream = unique
        assert stream == tokens[: len(stream)], "concat keeps document order"
        assert len(tokens) - len(stream) < seq_len + 1
    whole = pa.array(docs, pa.list_(pa.uint32()))
    fresh = answer(_core.Packer, seq_len, strategy=strategy, buffer=buffer, overlap=overlap)
    merged = [row for out in _pack_all(fresh, [whole], [first]) for row in zip(*out, strict=True)]
    assert merged == rows, "rows depend on the documents, not on the batches"


@fuzz()
@given(
    seq_len=st.integers(0, 8) | st.sampled_from([2**32 - 1]),
    strategy=st.sampled_from(["bfd", "concat", "", "BFD", "greedy"]),
    buffer=st.integers(0, 3) | st.sampled_from([2**64 - 1]),
)
def test_packer_refuses_bad_options(seq_len: int, strategy: str, buffer: int) -> None:
    packer = attempt(_core.Packer, seq_len, strategy=strategy, buffer=buffer)
    if seq_len == 0 or strategy not in ("bfd", "concat") or (strategy == "bfd" and buffer == 0):
        assert isinstance(packer, Refused) and isinstance(packer.error, tokenmill.ConfigError)
    else:
        assert not isinstance(packer, Refused), packer


@fuzz()
@given(
    lengths=st.lists(st.integers(0, 20) | st.integers(0, 2**32 - 1), max_size=30),
    capacity=st.integers(0, 40) | st.sampled_from([2**20, 2**32 - 1]),
)
def test_best_fit_decreasing(lengths: list[int], capacity: int) -> None:
    array = np.array(lengths, dtype=np.uint32)
    bins = attempt(_core.best_fit_decreasing, array, capacity)
    if capacity == 0 or any(n > capacity for n in lengths):
        assert isinstance(bins, Refused) and isinstance(bins.error, tokenmill.ConfigError), bins
        return
    assert not isinstance(bins, Refused), bins
    assert bins.dtype == np.uint64 and bins.shape == (len(lengths),)
    load: dict[int, int] = {}
    for n, b in zip(lengths, bins.tolist(), strict=True):
        load[b] = load.get(b, 0) + n
    assert all(v <= capacity for v in load.values()), "no bin over capacity"
    assert sorted(load) == list(range(len(load))), "bins are numbered 0..k-1"
    assert bins.tolist() == _best_fit_decreasing(lengths, capacity)


def _best_fit_decreasing(lengths: list[int], capacity: int) -> list[int]:
    """The reference: longest first (ties by index), each item into the open
    bin with the least room that fits it (the most recently left such bin
    on ties), else a new bin; full bins close."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    open_bins: dict[int, list[int]] = {}  # room -> bins, last left last
    bin_of = [0] * len(lengths)
    count = 0
    for item in order:
        n = lengths[item]
        rooms = [r for r in open_bins if r >= n and open_bins[r]]
        if rooms:
            room = min(rooms)
            b = open_bins[room].pop()
        else:
            room, b = capacity, count
            count += 1
        bin_of[item] = b
        if room - n > 0:
            open_bins.setdefault(room - n, []).append(b)
    return bin_of


# ---------------------------------------------------------------- BM25

BM25_WORDS = ["apple", "banana", "cherry", "date", "Apple", "é_t", "42", "a", "zz"]
# Words and separators whose word characters Python and Rust agree on
# (`str.isalnum` and `char::is_alphanumeric` differ on some marks).
bm25_texts = st.lists(
    st.sampled_from(BM25_WORDS) | st.sampled_from([" ", ", ", "\n", "-", "!", "\t"]), max_size=8
).map("".join)


def _bm25_terms(text: str) -> list[str]:
    words, word = [], ""
    for c in text:
        if c.isalnum() or c == "_":
            word += c.lower()
        else:
            if len(word) > 1:
                words.append(word)
            word = ""
    if len(word) > 1:
        words.append(word)
    return words


def _bm25_reference(docs: list[list[Any]], query: list[Any], k1: float, b: float) -> list[float]:
    n = len(docs)
    avgdl = max(sum(len(d) for d in docs) / n, np.finfo(np.float32).tiny)
    scores = []
    for doc in docs:
        score = 0.0
        for term in query:
            tf = doc.count(term)
            if not tf:
                continue
            df = sum(term in d for d in docs)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            score += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        scores.append(score)
    return scores


@fuzz(weight=1.5)
@given(
    data=st.data(),
    k1=st.floats(0, 3) | wild_floats,
    b=st.floats(0, 1) | wild_floats,
    k=st.integers(0, 8) | st.sampled_from([2**32, 2**64 - 1]),
    tokens=st.booleans(),
)
def test_bm25_scores_match_the_formula(
    data: st.DataObject, k1: float, b: float, k: int, tokens: bool
) -> None:
    if tokens:
        column, docs = data.draw(token_columns(max_size=8, max_len=8, max_id=6))
        queries, query_values = data.draw(token_columns(max_size=4, max_len=5, max_id=8))
        bags, query_bags = docs, query_values
    else:
        values = data.draw(st.lists(bm25_texts, max_size=8), label="docs")
        column = _layout(
            data.draw, values, TEXT_TYPES[data.draw(st.sampled_from(list(TEXT_TYPES)))], "x"
        )
        qs = data.draw(st.lists(bm25_texts, max_size=4), label="queries")
        queries = pa.array(qs, pa.string())
        bags, query_bags = [_bm25_terms(v) for v in values], [_bm25_terms(q) for q in qs]
    index = attempt(_core.Bm25Index, column, k1=k1, b=b)
    with np.errstate(over="ignore"):  # Python floats past f32 become inf, as in PyO3
        k1_32, b_32 = float(np.float32(k1)), float(np.float32(b))
    if not (math.isfinite(k1_32) and k1_32 >= 0 and 0 <= b_32 <= 1) or not bags:
        assert isinstance(index, Refused) and isinstance(index.error, tokenmill.ConfigError), index
        return
    assert not isinstance(index, Refused), index
    assert index.documents == len(bags)
    ids, scores = answer(index.search, queries, k)
    width = min(k, len(bags))
    assert ids.dtype == np.int64 and ids.shape == (len(query_bags), width)
    assert scores.dtype == np.float32 and scores.shape == (len(query_bags), width)
    assert np.isfinite(scores).all() and (scores >= 0).all()
    for q, bag in enumerate(query_bags):
        expected = _bm25_reference(bags, bag, k1_32, b_32)
        assert len(set(ids[q].tolist())) == width and all(0 <= d < len(bags) for d in ids[q])
        assert (np.diff(scores[q]) <= 0).all(), "best first"
        for d, s in zip(ids[q].tolist(), scores[q].tolist(), strict=True):
            assert s == pytest.approx(expected[d], rel=1e-4, abs=1e-5)
        top = sorted(expected, reverse=True)[:width]
        assert scores[q].tolist() == pytest.approx(top, rel=1e-4, abs=1e-5)
        row = pa.array([query_values[q] if tokens else qs[q]] * len(bags), queries.type)
        got = answer(index.score, row, list(range(len(bags))))
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert same(answer(index.search, queries, k), (ids, scores))


@fuzz(weight=0.5)
@given(documents=st.lists(st.integers(0, 10) | st.integers(0, 2**32 - 1), max_size=4))
def test_bm25_score_refuses_documents_outside_the_index(documents: list[int]) -> None:
    index = _core.Bm25Index(pa.array(["apple banana", "cherry", "banana date"]))
    queries = pa.array(["banana"] * len(documents), pa.string())
    result = attempt(index.score, queries, documents)
    if any(d >= 3 for d in documents):
        assert isinstance(result, Refused) and isinstance(result.error, tokenmill.ConfigError)
    else:
        assert not isinstance(result, Refused), result
        assert len(result) == len(documents)
    refusal(tokenmill.ConfigError, index.score, pa.array(["x"]), [0, 1])


# ---------------------------------------------------------------- vocabulary, token lists, T5


@st.composite
def vocab_options(draw: st.DrawFn) -> tuple[int, list[int], list[bool] | None]:
    size = draw(mostly(st.integers(1, 30), st.sampled_from([0, 2**24, 2**24 + 1, 2**32 - 1])))
    inside = st.integers(0, min(size, 40) - 1) if size else st.integers(0, 3)
    specials = draw(st.lists(mostly(inside, st.integers(size, 2**32 - 1)), max_size=5))
    flags = st.lists(st.booleans(), min_size=size, max_size=size) if size <= 40 else st.none()
    starts = draw(st.none() | mostly(flags, st.lists(st.booleans(), max_size=5)))
    return size, specials, starts


@fuzz()
@given(options=vocab_options())
def test_vocab(options: tuple[int, list[int], list[bool] | None]) -> None:
    size, specials, starts = options
    vocab = attempt(_core.Vocab, size, specials, word_starts=starts)
    valid = (
        1 <= size <= MAX_VOCAB_SIZE
        and all(s < size for s in specials)
        and len(set(specials)) < size  # some ordinary token to draw replacements from
        and (starts is None or len(starts) == size)
    )
    if not valid:
        assert isinstance(vocab, Refused) and isinstance(vocab.error, tokenmill.ConfigError), vocab
        return
    assert not isinstance(vocab, Refused), vocab
    assert vocab.size == size and vocab.has_word_marks == (starts is not None)
    for i in [*range(min(size, 30)), size, size + 1, 2**32 - 1]:
        if i < 2**32:
            assert vocab.is_special(i) == (i in specials and i < size)


@fuzz()
@given(
    rows=st.lists(
        st.lists(
            mostly(
                st.integers(0, 2**32 - 1) | st.integers(0, 9),
                st.integers(-5, -1) | st.integers(2**32, 2**70),
            ),
            max_size=6,
        ),
        max_size=6,
    ),
    odd=mostly(st.none(), st.sampled_from(["tuple", "float", "bool", "numpy", "str"])),
)
def test_token_lists_from_python(rows: list[list[Any]], odd: str | None) -> None:
    if odd and rows:
        r = len(rows) // 2
        rows[r] = {
            "tuple": tuple(rows[r]),
            "float": [*rows[r], 1.5],
            "bool": [*rows[r], True],
            "numpy": [*rows[r], np.uint32(7)],
            "str": [*rows[r], "7"],
        }[odd]
    result = attempt(_core.token_lists_from_python, rows)

    def id_ok(v: Any) -> bool:
        # A bool is an int to Python but no token id, as numpy bool rows are not.
        return isinstance(v, int | np.integer) and not isinstance(v, bool) and 0 <= int(v) < 2**32

    bad = next(
        (r for r, row in enumerate(rows) if not isinstance(row, list) or not all(map(id_ok, row))),
        None,
    )
    if bad is not None:
        assert isinstance(result, Refused) and isinstance(result.error, tokenmill.DataError), result
        assert result.error.row == bad
        return
    assert not isinstance(result, Refused), result
    assert result.type == pa.list_(pa.field("item", pa.uint32(), False))
    assert result.to_pylist() == [[int(v) for v in row] for row in rows]


def _t5_reference(inputs_length: int, density: float, mean_span: float) -> tuple[int, int]:
    """T5's `compute_input_and_target_lengths` (round half to even, as numpy)."""

    def lengths(tokens: int) -> tuple[int, int]:
        noise = round(tokens * density)
        spans = round(noise / mean_span)
        return tokens - noise + spans + 1, noise + spans + 1

    tokens = inputs_length
    while lengths(tokens + 1)[0] <= inputs_length:
        tokens += 1
    _, targets = lengths(tokens)
    if density == 0.5 and targets > inputs_length:
        tokens -= 1
        targets -= 1
    return tokens, targets


@fuzz()
@given(
    inputs_length=st.integers(0, 3000) | st.sampled_from([2**40, 2**63, 2**64 - 1]),
    density=st.floats(0, 1) | wild_floats,
    mean_span=st.floats(1, 20) | wild_floats,
)
def test_t5_input_and_target_lengths(inputs_length: int, density: float, mean_span: float) -> None:
    result = attempt(
        _core.t5_input_and_target_lengths, inputs_length, noise_density=density, mean_span=mean_span
    )
    in_domain = 0 <= density <= 1 and math.isfinite(mean_span) and mean_span >= 1
    if not in_domain or inputs_length == 0:
        assert isinstance(result, Refused) and isinstance(result.error, tokenmill.ConfigError)
        return
    walk = inputs_length / max(1 - density + density / mean_span, 1e-300)
    if isinstance(result, Refused):
        # Only a raw length past u64 has no answer.
        assert isinstance(result.error, tokenmill.ConfigError) and walk > 2**63, result
        return
    tokens, targets = result
    # (T5 gives up a raw token at density 0.5 to keep targets within inputs)
    assert tokens >= inputs_length - (density == 0.5)

    def lengths(tokens: int) -> tuple[int, int]:
        noise = round(tokens * density)
        spans = round(noise / mean_span)
        return tokens - noise + spans + 1, noise + spans + 1

    if inputs_length > 2**32 or walk > 2**52:
        return  # past what a float counts exactly, Python's sums drift from Rust's
    if walk < 1e5:
        assert result == _t5_reference(inputs_length, density, mean_span)
    elif density != 0.5:
        # Too long a walk for Python: the longest raw length whose inputs fit.
        assert tokens == inputs_length or lengths(tokens)[0] <= inputs_length
        assert lengths(tokens + 1)[0] > inputs_length
        assert targets == lengths(tokens)[1]


# ---------------------------------------------------------------- pairs


@fuzz(weight=1.5)
@given(
    data=st.data(),
    mode=mostly(st.sampled_from(["crop", "ict"]), st.sampled_from(["", "columns", "CROP"])),
    seed=any_u64,
    epoch=any_u64,
    min_ratio=mostly(st.floats(0.01, 1.0), wild_floats),
    max_ratio=mostly(st.floats(0.01, 1.0), wild_floats),
    keep=unit_floats,
    ends=mostly(
        st.lists(st.integers(0, 6) | st.integers(0, 2**32 - 1), min_size=1, max_size=3), st.just([])
    ),
    tokens=st.booleans(),
)
def test_make_pairs(
    data: st.DataObject,
    mode: str,
    seed: int,
    epoch: int,
    min_ratio: float,
    max_ratio: float,
    keep: float,
    ends: list[int],
    tokens: bool,
) -> None:
    if min_ratio > max_ratio and data.draw(mostly(st.just(True), st.just(False)), label="ordered"):
        min_ratio, max_ratio = max_ratio, min_ratio
    # Mostly documents long enough for a pair: two sentences of two words and
    # more (a shorter one is refused, naming its row).
    long_enough = data.draw(mostly(st.just(True), st.just(False)), label="long enough")
    if tokens:
        min_len = 6 if long_enough else 0
        column, values = data.draw(token_columns(max_size=6, max_len=20, max_id=8, min_len=min_len))
        if long_enough and mode == "ict" and ends and values:
            values = [[*v[:2], ends[0], *v[2:4], ends[0], *v[4:]] for v in values]
            column = pa.array(values, pa.list_(pa.uint32()))
    else:
        nulls = data.draw(mostly(st.just(False), st.just(True)), label="nulls")
        sentence = st.lists(st.sampled_from(WORDS[:6]), min_size=2, max_size=5).map(" ".join)
        passage = st.lists(sentence, min_size=2, max_size=4).map(". ".join)
        element = passage if long_enough else texts
        column, values = data.draw(text_columns(max_size=6, nulls=nulls, element=element))
    mismatch = data.draw(mostly(st.just(0), st.sampled_from([1, -1])), label="key mismatch")
    keys = np.array(
        data.draw(
            st.lists(
                any_u64,
                min_size=max(len(values) + mismatch, 0),
                max_size=max(len(values) + mismatch, 0),
            )
        ),
        dtype=np.uint64,
    )
    options = dict(
        mode=mode,
        seed=seed,
        epoch=epoch,
        min_ratio=min_ratio,
        max_ratio=max_ratio,
        keep_probability=keep,
        sentence_end_ids=ends,
    )
    result = attempt(_core.make_pairs, column, keys, **options)
    crop_ok = 0 < min_ratio <= max_ratio <= 1
    # ICT on token ids needs the ids that end a sentence.
    ict_ok = 0 <= keep <= 1 and (bool(ends) or not tokens)
    mode_ok = (mode == "crop" and crop_ok) or (mode == "ict" and ict_ok)
    if not mode_ok or len(keys) != len(values):
        assert isinstance(result, Refused) and isinstance(result.error, tokenmill.ConfigError)
        return
    if isinstance(result, Refused):
        # Null documents and documents too short for a pair are refused by row.
        assert isinstance(result.error, tokenmill.DataError), result
        row = result.error.row
        assert row is not None and 0 <= row < len(values)
        return
    query, positive = result
    assert len(query) == len(positive) == len(values)
    assert query.null_count == 0 or not tokens
    for q, p, doc in zip(query.to_pylist(), positive.to_pylist(), values, strict=True):
        if doc is None:
            continue
        if tokens:
            assert _is_sublist(q, doc)
        else:
            assert q in doc and all(part in doc for part in _pieces(p, doc))
    assert same(answer(_core.make_pairs, column, keys, **options), result)
    if len(values) > 1:
        alone = answer(
            _core.make_pairs, as_plain(values[:1], combined(column).type), keys[:1], **options
        )
        assert alone[0].to_pylist() == query.to_pylist()[:1]
        assert alone[1].to_pylist() == positive.to_pylist()[:1]


def _is_sublist(part: list[int], whole: list[int]) -> bool:
    n = len(part)
    return any(whole[i : i + n] == part for i in range(len(whole) - n + 1))


def _pieces(positive: str, doc: str) -> list[str]:
    """The positive as one or two pieces of the document (ICT cuts one
    sentence out of the middle)."""
    if positive in doc:
        return [positive]
    for cut in range(len(positive) + 1):
        if positive[:cut] in doc and positive[cut:] in doc:
            return [positive[:cut], positive[cut:]]
    return [positive]


# ---------------------------------------------------------------- negatives


@st.composite
def vector_rows(draw: st.DrawFn, rows: int, dim: int) -> list[list[float]]:
    """Embeddings, now and then with a NaN or an all-zero row (no cosine)."""
    value = st.floats(0.25, 2, width=32) | st.floats(-2, -0.25, width=32)
    vectors = draw(
        st.lists(st.lists(value, min_size=dim, max_size=dim), min_size=rows, max_size=rows)
    )
    if rows and draw(mostly(st.just(False), st.just(True))):
        row = draw(st.integers(0, rows - 1))
        vectors[row] = draw(st.sampled_from([[0.0] * dim, [math.nan] * dim, [math.inf] * dim]))
    return vectors


def _check_mined(
    mined: tuple[np.ndarray, ...], rows: np.ndarray, hashes: list[Any], k: int, scored: bool = True
) -> None:
    documents, scores, positive_scores, topped_up, over_margin = mined
    n = len(rows)
    assert documents.dtype == np.int64 and documents.shape == (n, k)
    assert scores.dtype == np.float32 and scores.shape == (n, k)
    assert positive_scores.shape == (n,) and topped_up.shape == (n,) and over_margin.shape == (n,)
    if scored:
        assert not np.isnan(scores).any() and not np.isnan(positive_scores).any()
    else:  # random negatives have no score
        assert np.isnan(scores).all() and np.isnan(positive_scores).all()
    for r, row in enumerate(rows.tolist()):
        picked = documents[r].tolist()
        assert all(0 <= d < len(hashes) for d in picked)
        contents = [hashes[d] for d in picked]
        assert len(set(contents)) == k, "a row's negatives are distinct texts"
        assert hashes[row] not in contents, "never the positive or a copy of it"
        assert topped_up[r] <= k and over_margin[r] <= k


@fuzz(weight=1.5)
@given(
    data=st.data(),
    strategy=mostly(
        st.sampled_from(["random", "bm25", "embedding"]), st.sampled_from(["", "hard"])
    ),
    k=mostly(st.integers(1, 4), st.sampled_from([0, 2**64 - 1])),
    range_min=mostly(st.integers(0, 4), st.sampled_from([2**64 - 1])),
    extra=mostly(st.integers(0, 8), st.sampled_from([-1, -5, 2**64])),
    margin=mostly(st.floats(0.1, 2), wild_floats),
    seed=any_u64,
    epoch=any_u64,
    tokens=st.booleans(),
)
def test_negative_miner(
    data: st.DataObject,
    strategy: str,
    k: int,
    range_min: int,
    extra: int,
    margin: float,
    seed: int,
    epoch: int,
    tokens: bool,
) -> None:
    # The rank window [range_min, range_max] holds k + extra ranks.
    range_max = min(max(range_min + min(k, 64) - 1 + extra, 0), 2**64 - 1)
    size = data.draw(mostly(st.integers(min(k, 8) + 1, 12), st.integers(0, 3)), label="corpus")
    if tokens:
        column, values = data.draw(token_columns(max_size=size, max_len=6, max_id=6))
        queries, query_values = data.draw(token_columns(max_size=4, max_len=5, max_id=8))
    else:
        words = st.lists(st.sampled_from(BM25_WORDS), max_size=5).map(" ".join)
        values = data.draw(st.lists(words, min_size=size, max_size=size), label="positives")
        column = _layout(data.draw, values, pa.string(), "x")
        query_values = data.draw(st.lists(words, max_size=4), label="queries")
        queries = pa.array(query_values, pa.string())
    dim = data.draw(st.integers(1, 4), label="dim")
    vector_type = data.draw(
        st.sampled_from(
            [pa.list_(pa.float32(), dim), pa.list_(pa.float32()), pa.large_list(pa.float32())]
        ),
        label="vector type",
    )
    vectors = _layout(data.draw, data.draw(vector_rows(len(values), dim)), vector_type, [0.5] * dim)
    q_vectors = pa.array(data.draw(vector_rows(len(query_values), dim)), vector_type)
    options = dict(
        strategy=strategy,
        num_negatives=k,
        range_min=range_min,
        range_max=range_max,
        margin=margin,
        seed=seed,
        epoch=epoch,
        column="positive",
        vectors=vectors if strategy == "embedding" else None,
    )
    miner = attempt(_core.NegativeMiner, column, **options)
    hashes = [tuple(v) if tokens else v for v in values]
    distinct = len(set(hashes))
    with np.errstate(over="ignore"):
        margin32 = float(np.float32(margin))
    valid = (
        strategy in ("random", "bm25", "embedding")
        and 1 <= k < len(values)
        and range_min <= range_max
        and range_max - range_min + 1 >= k
        and math.isfinite(margin32)
        and margin32 > 0
    )
    if not valid:
        assert isinstance(miner, Refused) and isinstance(miner.error, tokenmill.ConfigError), miner
        return
    if isinstance(miner, Refused):
        # Only a null or NaN vector may stop an otherwise valid miner.
        assert strategy == "embedding" and isinstance(miner.error, tokenmill.DataError), miner
        return
    assert miner.documents == len(values)
    n = len(query_values)
    row = mostly(st.integers(0, len(values) - 1), st.integers(len(values), 2**64 - 1))
    rows = np.array(data.draw(st.lists(row, min_size=n, max_size=n)), dtype=np.uint64)
    m = data.draw(mostly(st.just(n), st.integers(0, 5)), label="keys")
    keys = np.array(data.draw(st.lists(any_u64, min_size=m, max_size=m)), dtype=np.uint64)
    asked = q_vectors if strategy == "embedding" else queries
    mined = attempt(miner.mine, asked, rows, keys, column="query")
    if m != n or any(r >= len(values) for r in rows.tolist()):
        # A row outside the corpus, or not one key per row (unless a query
        # vector with no direction is refused first).
        assert isinstance(mined, Refused), mined
        vector_error = strategy == "embedding" and isinstance(mined.error, tokenmill.DataError)
        assert isinstance(mined.error, tokenmill.ConfigError) or vector_error, mined
        return
    if isinstance(mined, Refused):
        # A row whose positive leaves too few other texts, or a NaN query vector.
        assert isinstance(mined.error, tokenmill.DataError), mined
        # (ranked strategies leave out the range_min best documents)
        skipped = 0 if strategy == "random" else range_min
        assert distinct - 1 - skipped < k or strategy == "embedding", mined
        return
    _check_mined(mined, rows, hashes, k, scored=strategy != "random")
    assert same(answer(miner.mine, asked, rows, keys, column="query"), mined)
    if n > 1:
        one = answer(miner.mine, asked.slice(1, 1), rows[1:2], keys[1:2], column="query")
        assert same(tuple(a[1:2] for a in mined), one), "a row's negatives ignore its batch"


def test_every_miner_takes_an_empty_batch() -> None:
    """The embedding miner once refused a batch of no queries ("holds no
    vectors"), where the others return no rows."""
    positives = pa.array(["apple", "banana", "cherry"])
    vectors = pa.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], pa.list_(pa.float32(), 2))
    none = np.zeros(0, np.uint64)
    for strategy, queries in [
        ("random", pa.array([], pa.string())),
        ("bm25", pa.array([], pa.string())),
        ("embedding", pa.array([], pa.list_(pa.float32(), 2))),
        ("embedding", pa.array([], pa.list_(pa.float32()))),
    ]:
        miner = _core.NegativeMiner(
            positives, strategy=strategy, num_negatives=1, vectors=vectors, column="p"
        )
        documents, *rest = answer(miner.mine, queries, none, none)
        assert documents.shape == (0, 1) and all(len(a) == 0 for a in rest)


@fuzz()
@given(
    data=st.data(),
    k=mostly(st.integers(1, 4), st.just(0)),
    range_min=st.integers(0, 3),
    extra=mostly(st.integers(0, 6), st.integers(-4, -1)),
    margin=mostly(st.floats(0.1, 2), wild_floats),
    seed=any_u64,
)
def test_mine_embedding_arrays(
    data: st.DataObject, k: int, range_min: int, extra: int, margin: float, seed: int
) -> None:
    range_max = max(range_min + k - 1 + extra, 0)
    docs_n = data.draw(mostly(st.integers(k + 1, 10), st.integers(0, 4)), label="docs")
    queries_n = data.draw(mostly(st.integers(0, docs_n), st.integers(0, 6)), label="queries")
    dim = data.draw(mostly(st.integers(1, 4), st.just(0)), label="dim")
    qdim = data.draw(mostly(st.just(dim), st.integers(0, 4)), label="query dim")
    docs = np.array(data.draw(vector_rows(docs_n, dim)), np.float32).reshape(docs_n, dim)
    queries = np.array(data.draw(vector_rows(queries_n, qdim)), np.float32).reshape(queries_n, qdim)
    options = dict(
        num_negatives=k, range_min=range_min, range_max=range_max, margin=margin, seed=seed
    )
    mined = attempt(_core.mine_embedding_arrays, docs, queries, **options)

    def unusable(vectors: np.ndarray) -> bool:
        # Cosine needs finite vectors of non-zero norm.
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1) if vectors.size else []
        return bool(len(norms)) and not all(math.isfinite(n) and n > 0 for n in norms)

    with np.errstate(over="ignore"):
        margin32 = float(np.float32(margin))
    refused = (
        dim != qdim
        or dim == 0
        or not 1 <= k < docs_n
        or range_min > range_max
        or range_max - range_min + 1 < k
        or not (math.isfinite(margin32) and margin32 > 0)
        or queries_n > docs_n  # query i's positive is document i
        # a query with too few documents ranked range_min or below
        or (queries_n > 0 and docs_n - 1 - range_min < k)
        or unusable(docs)
        or unusable(queries)
    )
    if isinstance(mined, Refused):
        assert refused, mined
        return
    assert not refused, "mined what should have been refused"
    rows = np.arange(queries_n, dtype=np.uint64)
    _check_mined(mined, rows, list(range(docs_n)), k)
    assert same(answer(_core.mine_embedding_arrays, docs, queries, **options), mined)


# ---------------------------------------------------------------- public wrappers


def test_public_wrappers_validate_before_the_kernels(tmp_path: Path) -> None:
    """Where the raw kernels leave an out-of-type int to PyO3 (OverflowError),
    the public API checks it first and raises a ConfigError. Seeds of 2^64
    and more once reached the kernels from sample, dedup, pairs and negatives."""
    with pytest.raises(tokenmill.ConfigError):
        tokenmill.set_num_threads(-1)
    data = tmp_path / "in"
    data.mkdir()
    tokens = pa.array([[1, 2, 3]], pa.list_(pa.uint32()))
    pq.write_table(pa.table({"input_ids": tokens}), data / "a.parquet")
    for seq_len in (0, -1, 2**32):
        with pytest.raises(tokenmill.ConfigError):
            tokenmill.pack(data, tmp_path / f"out{seq_len}", seq_len=seq_len, progress=False)
    for fraction in (-0.1, 1.5, math.nan):
        with pytest.raises(tokenmill.ConfigError):
            tokenmill.sample(data, tmp_path / "s", fraction=fraction, progress=False)
    for bad in (-1, 2**64, 2**70):
        with pytest.raises(tokenmill.ConfigError):
            tokenmill.sample(data, tmp_path / "s2", fraction=0.5, seed=bad, progress=False)
        with pytest.raises(tokenmill.ConfigError):
            tokenmill.sample(data, tmp_path / "s3", fraction=0.5, epoch=bad, progress=False)
        with pytest.raises(tokenmill.ConfigError):
            tokenmill.DedupOptions(seed=bad).check()
        with pytest.raises(tokenmill.ConfigError):
            tokenmill.NegativeOptions(strategy="random", seed=bad).check()
        with pytest.raises(tokenmill.ConfigError):
            tokenmill.PairsStage("crop", epoch=bad)
    for num_perm in (0, MAX_NUM_PERM + 1, 2**64):
        with pytest.raises(tokenmill.ConfigError):
            tokenmill.DedupOptions(num_perm=num_perm).check()
    with pytest.raises(tokenmill.ConfigError):
        tokenmill.DedupOptions(ngram=2**64).check()
    with pytest.raises(tokenmill.ConfigError):
        tokenmill.NegativeOptions(strategy="random", range_max=2**64).check()
    with pytest.raises(tokenmill.ConfigError):
        tokenmill.PairsStage("ict", sentence_end_ids=[2**32])


def test_kernels_take_chunked_arrays_and_refuse_non_arrow_values() -> None:
    chunked = pa.chunked_array([["a b c d e f"], [], ["g h"]])
    assert _core.text_hashes(chunked).shape == (2, 2)
    assert _core.content_hashes(pa.chunked_array([], pa.string())).shape == (0,)
    for bad in (["a"], "a", 3, None, np.array(["a"])):
        refusal(tokenmill.SchemaError, _core.text_hashes, bad)
        refusal(tokenmill.SchemaError, _core.minhash_signatures, bad)
