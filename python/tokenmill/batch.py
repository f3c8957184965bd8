"""Batch forms: every shape a loader hands a collator, read and checked in one place.

A collator may be given a list of dicts (a `datasets` dataset's rows, a
tokenizer's per-example output), a list of token rows (lists, numpy arrays
or tensors), a dict of 2-D arrays (a Hugging Face tokenizer's padded
output), a 2-D array or tensor, or an Arrow list array, record batch or
table. Every form passes the same checks, so a batch that is wrong in one
form is wrong, with the same error, in all of them:

- token ids are integers in [0, 2^32): floats, booleans, negative ids and
  ids past 2^32 are a :class:`DataError` naming the row, never wrapped or
  truncated;
- an `attention_mask` holds only 0 and 1 and marks each row's tokens by
  position, so pads may come first (left padding) or last; a mask whose
  ones are not one run is not padding and is refused;
- a null row is a :class:`DataError` naming the row.

Rows come out as :class:`TokenRows`: an Arrow `list<uint32>` array (or, for
right-padded 2-D input, the matrix itself and each row's length, which the
Rust engine cuts without a copy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill import _core
from tokenmill._core import ConfigError, DataError

TOKEN_LIST = pa.list_(pa.field("item", pa.uint32(), nullable=False))
WORD_ID_LIST = pa.list_(pa.field("item", pa.int32(), nullable=False))
IDS_FIX = "token ids are integers in [0, 2^32)"
NULL_FIX = "drop or fill null rows before collating"
MASK_FIX = (
    "an attention_mask holds 1 on each row's tokens and 0 on the padding before or after them"
)
EMPTY_BATCH = "a collator needs a non-empty list of rows, a 2-D array or an Arrow array; got {}"

#: The dtypes the Rust engine reads a 2-D token matrix in, as they are.
ENGINE_DTYPES = (np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.uint32))


def data_error(row: int, problem: str, fix: str) -> DataError:
    """A DataError naming the row of the batch, with the parts the runner reads."""
    err = DataError(f"row {row}: {problem}; {fix}")
    err.row, err.problem, err.fix = row, problem, fix
    return err


@dataclass
class TokenRows:
    """A batch as the engine takes it.

    `tokens` is a `list<uint32>` Arrow array, or a C-contiguous 2-D int64,
    int32 or uint32 array whose row `r` is its first `lengths[r]` tokens
    (every row whole when `lengths` is None). `keys` are the rows' keys
    (None: hashed from their tokens), `seq_lens` the document lengths of
    packed rows and `word_ids` each token's word.
    """

    tokens: Any
    keys: npt.NDArray[np.uint64] | None
    seq_lens: pa.Array | None
    lengths: list[int] | None = None
    word_ids: pa.Array | None = None

    def flat(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """All tokens in one int64 buffer, and each row's length. A matrix's
        ids are checked here: the Rust engine checks them as it cuts rows,
        but this buffer goes to numpy consumers."""
        if isinstance(self.tokens, np.ndarray):
            rows, width = self.tokens.shape
            if self.lengths is None:
                lengths = np.full(rows, width, dtype=np.int64)
                values = self.tokens.reshape(-1)
            else:
                lengths = np.asarray(self.lengths, dtype=np.int64)
                values = self.tokens[np.arange(width)[None, :] < lengths[:, None]]
            _check_ids(values, np.concatenate([[0], np.cumsum(lengths)]), "the array")
            return values.astype(np.int64), lengths
        offsets = self.tokens.offsets.to_numpy().astype(np.int64)
        values = pc.list_flatten(self.tokens).to_numpy(zero_copy_only=False)
        return values.astype(np.int64), np.diff(offsets)


def read_token_rows(
    batch: Any, *, column: str = "input_ids", key_column: str | None = "id"
) -> TokenRows:
    """Any supported batch form as checked :class:`TokenRows`.

    Rows carrying `key_column` (an Arrow column or a dict entry) are keyed
    by it, as the `corrupt` stage keys them, so stage and collator make the
    same rows. Packed rows bring `seq_lens`, and `word_ids` (from `tokenize
    --word-ids`) say where words start.

    Raises:
        ConfigError: the batch is empty, or not a form listed in the module
            docstring, or lacks `column`.
        DataError: a row holds something other than token ids, is null, or
            has an attention mask that is not padding.
    """
    if isinstance(batch, (pa.RecordBatch, pa.Table)):
        return _from_record_batch(batch, column, key_column)
    if isinstance(batch, (pa.Array, pa.ChunkedArray)):
        return TokenRows(arrow_token_lists(_combined(batch), column), None, None)
    if hasattr(batch, "ndim") and batch.ndim == 2:
        return TokenRows(token_matrix(batch), None, None)
    if isinstance(batch, Mapping):
        return _from_padded_dict(batch, column, key_column)
    if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)) or len(batch) == 0:
        raise ConfigError(EMPTY_BATCH.format(type(batch).__name__))
    if isinstance(batch[0], Mapping):
        return _from_dict_rows(batch, column, key_column)
    return TokenRows(python_token_lists(list(batch)), None, None)


def _combined(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _from_record_batch(
    batch: pa.RecordBatch | pa.Table, column: str, key_column: str | None
) -> TokenRows:
    names = batch.schema.names
    if column not in names:
        raise ConfigError(
            f"the batch has no '{column}' column (the columns are: {', '.join(names)})"
        )
    tokens = arrow_token_lists(_combined(batch.column(column)), column)
    keys = None
    if key_column and key_column in names:
        keys = _core.row_keys_from_ids(_combined(batch.column(key_column)), column=key_column)
    seq_lens = (
        arrow_token_lists(_combined(batch.column("seq_lens")), "seq_lens")
        if "seq_lens" in names
        else None
    )
    word_ids = _combined(batch.column("word_ids")) if "word_ids" in names else None
    rows = TokenRows(tokens, keys, seq_lens, word_ids=word_ids)
    if "attention_mask" in names:
        mask = arrow_token_lists(_combined(batch.column("attention_mask")), "attention_mask")
        rows = _masked_lists(rows, mask)
    return rows


def _from_padded_dict(batch: Mapping[str, Any], column: str, key_column: str | None) -> TokenRows:
    """A dict of `[batch, length]` arrays, as a Hugging Face tokenizer pads them."""
    if column not in batch or getattr(batch[column], "ndim", 0) != 2:
        raise ConfigError(f"a dict batch needs a 2-D '{column}' array")
    matrix = token_matrix(batch[column])
    keys = None
    if key_column and key_column in batch:
        ids = batch[key_column]
        ids = pa.array(_numpy(ids) if hasattr(ids, "ndim") else list(ids))
        keys = _core.row_keys_from_ids(ids, column=key_column)
    mask = batch.get("attention_mask")
    if mask is None:
        return TokenRows(matrix, keys, None)
    mask = _mask_matrix(mask, matrix.shape)
    starts, lengths = _mask_runs(mask.reshape(-1), np.arange(matrix.shape[0] + 1) * mask.shape[1])
    if not starts.any():
        # Right padding: the engine cuts each row at its length, no copy.
        return TokenRows(matrix, keys, None, lengths=lengths.tolist())
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    kept = matrix[mask.astype(bool)]
    _check_ids(kept, offsets, "input_ids")
    return TokenRows(_token_list_array(offsets, kept), keys, None)


def _from_dict_rows(batch: Sequence[Any], column: str, key_column: str | None) -> TokenRows:
    for r, row in enumerate(batch):
        if not isinstance(row, Mapping) or column not in row:
            raise ConfigError(f"every row needs a '{column}' entry (row {r} has none)")
    tokens = python_token_lists([row[column] for row in batch])
    keys = None
    if key_column and all(key_column in row for row in batch):
        keys = _core.row_keys_from_ids(
            pa.array([row[key_column] for row in batch]), column=key_column
        )
    has_segments = "seq_lens" in batch[0]
    if any(("seq_lens" in row) != has_segments for row in batch):
        raise ConfigError("some rows have 'seq_lens' and some do not; mix no packed rows")
    seq_lens = python_token_lists([row["seq_lens"] for row in batch]) if has_segments else None
    word_ids = None
    if all("word_ids" in row for row in batch):
        word_ids = pa.array([list(row["word_ids"]) for row in batch], type=WORD_ID_LIST)
    rows = TokenRows(tokens, keys, seq_lens, word_ids=word_ids)
    if any("attention_mask" in row for row in batch):
        if not all("attention_mask" in row for row in batch):
            raise ConfigError("some rows have 'attention_mask' and some do not")
        rows = _masked_lists(rows, _python_mask_lists([row["attention_mask"] for row in batch]))
    return rows


def _python_mask_lists(masks: list[Any]) -> pa.Array:
    """Per-row masks as a list array, read as token lists are (fast); a mask
    value no list reader takes (-1, 0.5) gets the mask's own error."""
    try:
        return python_token_lists(masks)
    except DataError as err:
        given = getattr(err, "row", None)
        row = given if isinstance(given, int) else 0
        shown = _numpy(masks[row]).reshape(-1)
        bad = shown[(shown != 0) & (shown != 1)]
        value = bad[0] if len(bad) else shown.dtype
        raise data_error(row, f"the attention_mask holds {value}, not 0 or 1", MASK_FIX) from None


def _masked_lists(rows: TokenRows, mask: pa.Array) -> TokenRows:
    """`rows` cut to the tokens their per-row `mask` marks (left or right padding)."""
    tokens = rows.tokens
    offsets = tokens.offsets.to_numpy().astype(np.int64)
    mask_offsets = mask.offsets.to_numpy().astype(np.int64)
    lengths, mask_lengths = np.diff(offsets), np.diff(mask_offsets)
    if not np.array_equal(lengths, mask_lengths):
        r = int(np.flatnonzero(lengths != mask_lengths)[0])
        raise data_error(
            r,
            f"{lengths[r]} tokens but an attention_mask of {mask_lengths[r]}",
            "give each row a mask as long as its input_ids",
        )
    flat_mask = pc.list_flatten(mask).to_numpy(zero_copy_only=False)
    _check_mask_values(flat_mask, mask_offsets - mask_offsets[0])
    _, kept = _mask_runs(flat_mask, mask_offsets - mask_offsets[0])
    if np.array_equal(kept, lengths):
        return rows
    keep = pa.array(flat_mask.astype(bool))
    new_offsets = pa.array(np.concatenate([[0], np.cumsum(kept)]).astype(np.int32))
    values = pc.filter(pc.list_flatten(tokens), keep)
    word_ids = rows.word_ids
    if word_ids is not None and len(pc.list_flatten(word_ids)) == len(flat_mask):
        word_values = pc.filter(pc.list_flatten(word_ids), keep)
        word_ids = pa.ListArray.from_arrays(new_offsets, word_values, type=WORD_ID_LIST)
    return TokenRows(
        pa.ListArray.from_arrays(new_offsets, values, type=TOKEN_LIST),
        rows.keys,
        rows.seq_lens,
        word_ids=word_ids,
    )


def _mask_matrix(mask: Any, shape: tuple[int, ...]) -> npt.NDArray[Any]:
    array = _numpy(mask)
    if array.shape != shape:
        raise ConfigError(
            f"attention_mask has shape {list(array.shape)}, input_ids {list(shape)}; "
            "pass the mask the tokenizer returned with these ids"
        )
    if array.dtype.kind not in "biu":
        raise data_error(0, f"the attention_mask holds {array.dtype} values", MASK_FIX)
    array = array.astype(np.int8) if array.dtype.kind == "b" else array
    _check_mask_values(array.reshape(-1), np.arange(shape[0] + 1) * shape[1])
    return array


def _check_mask_values(flat: npt.NDArray[Any], offsets: npt.NDArray[np.int64]) -> None:
    bad = (flat != 0) & (flat != 1)
    if bad.any():
        at = int(np.argmax(bad))
        row = int(np.searchsorted(offsets, at, side="right")) - 1
        raise data_error(row, f"the attention_mask holds {flat[at]}, not 0 or 1", MASK_FIX)


def _mask_runs(
    flat: npt.NDArray[Any], offsets: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Where each row's run of ones starts and how long it is; a DataError
    for a row whose ones are not one run (that is no padding)."""
    rows = len(offsets) - 1
    ones = flat.astype(bool)
    row_of = np.repeat(np.arange(rows), np.diff(offsets))
    before = np.zeros(len(ones), dtype=bool)
    before[1:] = ones[:-1]
    before[offsets[:-1][np.diff(offsets) > 0]] = False
    run_starts = ones & ~before
    runs = np.bincount(row_of[run_starts], minlength=rows)
    if (runs > 1).any():
        r = int(np.flatnonzero(runs > 1)[0])
        raise data_error(r, "the attention_mask has padding between tokens", MASK_FIX)
    lengths = np.bincount(row_of[ones], minlength=rows).astype(np.int64)
    starts = np.zeros(rows, dtype=np.int64)
    at = np.flatnonzero(run_starts)
    starts[row_of[at]] = at - offsets[row_of[at]]
    return starts, lengths


def _numpy(values: Any) -> npt.NDArray[Any]:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _check_ids(flat: npt.NDArray[Any], offsets: npt.NDArray[np.int64], what: str) -> None:
    """A DataError naming the row of the first value in `flat` that is not a token id."""
    if flat.dtype.kind not in "iu":
        # Floats and booleans are no ids, even where their values are whole numbers.
        shown = flat[0] if len(flat) else flat.dtype
        raise data_error(0, f"{shown!r} is not a token id ({what} is {flat.dtype})", IDS_FIX)
    if not len(flat) or (flat.dtype.kind == "u" and flat.dtype.itemsize <= 4):
        return
    bad = flat < 0 if flat.dtype.itemsize <= 4 else (flat < 0) | (flat > 0xFFFF_FFFF)
    if bad.any():
        at = int(np.argmax(bad))
        row = int(np.searchsorted(offsets, at, side="right")) - 1
        raise data_error(row, f"{int(flat[at])} is not a token id", IDS_FIX)


def token_matrix(values: Any) -> npt.NDArray[Any]:
    """A 2-D batch as a contiguous array the engine reads (int64, int32 or
    uint32 kept as they are; other integer types widened after their ids are
    checked, so uint64 ids past 2^63 are refused, not wrapped)."""
    array = _numpy(values)
    rows = array.shape[0]
    width = array.shape[1] if array.ndim == 2 else 0
    if array.dtype not in ENGINE_DTYPES:
        _check_ids(array.reshape(-1), np.arange(rows + 1) * width, "the array")
        array = array.astype(np.int64)
    return np.ascontiguousarray(array)


def python_token_lists(rows: Sequence[Any]) -> pa.Array:
    """Rows of token ids (Python lists, numpy arrays or tensors, one form
    per batch) as a `list<uint32>` array."""
    if isinstance(rows, list) and all(type(row) is list for row in rows):
        return _core.token_lists_from_python(rows)
    arrays = []
    for r, row in enumerate(rows):
        if row is None:
            raise data_error(r, "the row is null", NULL_FIX)
        array = _numpy(row)
        if array.ndim != 1:
            raise data_error(
                r, f"the row has {array.ndim} dimensions", "pass each row as a 1-D list of ids"
            )
        if not len(array):
            array = array.astype(np.uint32)
        elif array.dtype.kind not in "iu":
            raise data_error(
                r, f"{array[0]!r} is not a token id (the row is {array.dtype})", IDS_FIX
            )
        elif array.dtype == np.uint64:
            # Concatenated with signed rows, uint64 would become float64.
            if array.max() > 0xFFFF_FFFF:
                raise data_error(r, f"{int(array.max())} is not a token id", IDS_FIX)
            array = array.astype(np.int64)
        arrays.append(array)
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays], dtype=np.int64)])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)
    _check_ids(flat, offsets, "the row")
    return _token_list_array(offsets, flat)


def _token_list_array(offsets: npt.NDArray[np.int64], ids: npt.NDArray[Any]) -> pa.Array:
    """`list<uint32>` rows from checked ids and their offsets."""
    return pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(ids.astype(np.uint32)), type=TOKEN_LIST
    )


def arrow_token_lists(values: pa.Array, name: str) -> pa.Array:
    """An Arrow column of integer lists (list, large_list or fixed_size_list
    of any integer type) as checked `list<uint32>`; null rows and null ids
    are a DataError naming the row."""
    t = values.type
    if not (
        (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
        and pa.types.is_integer(t.value_type)
    ):
        raise ConfigError(f"'{name}' has type {t}, not a list of token ids")
    if values.null_count:
        row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise data_error(row, f"'{name}' is null here", NULL_FIX)
    flat_values = pc.list_flatten(values)
    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if flat_values.null_count:
        at = int(np.flatnonzero(flat_values.is_null().to_numpy(zero_copy_only=False))[0])
        row = int(np.searchsorted(offsets, at, side="right")) - 1
        raise data_error(row, f"'{name}' holds a null id", NULL_FIX)
    if pa.types.is_uint32(t.value_type) and pa.types.is_list(t):
        return values
    flat = flat_values.to_numpy(zero_copy_only=False)
    _check_ids(flat, offsets, f"'{name}'")
    return _token_list_array(offsets, flat)
