"""Collators: from token rows to the tensors a model's forward pass takes.

Each collator takes a batch in whatever form a loader hands it (a list of
dicts, a list of arrays, a dict of padded 2-D arrays, a 2-D array or tensor,
an Arrow list array or record batch; :mod:`tokenmill.batch` reads and checks
them all alike) and returns contiguous tensors under the names Hugging Face and
PyTorch users know. All the work is vectorized numpy over the flat token
buffer: nothing loops over tokens in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.compute as pc

from tokenmill import _core
from tokenmill._core import ConfigError, DataError
from tokenmill.batch import ENGINE_DTYPES, TokenRows, read_token_rows

IGNORE_INDEX = -100


@dataclass
class FlatRows:
    """A batch as one flat buffer: tokens, row lengths, and the document
    segments inside each row (one per row when the rows are not packed)."""

    tokens: npt.NDArray[np.int64]
    row_lengths: npt.NDArray[np.int64]
    segment_lengths: npt.NDArray[np.int64]
    segments_per_row: npt.NDArray[np.int64]


def flatten_batch(batch: Any) -> FlatRows:
    """Any supported batch form (see :mod:`tokenmill.batch`) as :class:`FlatRows`."""
    rows = read_token_rows(batch, key_column=None)
    tokens, lengths = rows.flat()
    if rows.seq_lens is None:
        return FlatRows(tokens, lengths, lengths.copy(), np.ones(len(lengths), dtype=np.int64))
    segments_per_row = np.diff(rows.seq_lens.offsets.to_numpy()).astype(np.int64)
    segments = pc.list_flatten(rows.seq_lens).to_numpy(zero_copy_only=False).astype(np.int64)
    return FlatRows(tokens, lengths, segments, segments_per_row)


class CausalLMCollator:
    """Padded `[batch, length]` tensors for decoder-only training on packed rows.

    Returns `input_ids`, `attention_mask` (1 on real tokens), `labels` (the
    inputs, -100 on padding and, with `mask_document_starts`, on each
    document's first token so no loss is taken across a document boundary),
    `position_ids` restarting at each document, `document_ids` (each
    document segment's index in the batch, -1 on padding; FlexAttention's
    document mask compares these), and for variable-length flash attention
    over the flattened batch `cu_seq_lens_q`/`cu_seq_lens_k` (int32, every
    row's padding a segment of its own) and `max_length_q`/`max_length_k`.
    With `document_mask=True` it adds `document_mask` `[batch, 1, length,
    length]`, True where a query may attend a key (same document, not later),
    for `scaled_dot_product_attention`.

    A Hugging Face model given `attention_mask` takes it for the only mask and
    lets documents of one row attend each other; pass it the document mask,
    or use `flatten=True`, which returns the batch as one unpadded row with
    `cu_seq_lens_*` and no `attention_mask`, the layout Hugging Face's
    `DataCollatorWithFlattening` makes for flash attention.
    """

    def __init__(
        self,
        *,
        pad_id: int = 0,
        seq_len: int | None = None,
        mask_document_starts: bool = False,
        document_mask: bool = False,
        flatten: bool = False,
        vocab_size: int | None = None,
        return_tensors: str = "pt",
    ) -> None:
        if return_tensors not in ("pt", "np"):
            raise ConfigError(f"return_tensors={return_tensors!r} is not 'pt' or 'np'")
        if seq_len is not None and seq_len <= 0:
            raise ConfigError(f"seq_len {seq_len} is not positive")
        if flatten and (seq_len is not None or document_mask):
            raise ConfigError("flatten=True pads nothing: leave seq_len and document_mask unset")
        self.flatten = flatten
        self.pad_id = pad_id
        self.seq_len = seq_len
        self.mask_document_starts = mask_document_starts
        self.document_mask = document_mask
        self.vocab_size = vocab_size
        self.return_tensors = return_tensors

    def __call__(self, batch: Any) -> dict[str, Any]:
        flat = flatten_batch(batch)
        rows = len(flat.row_lengths)
        row_of_segment = np.repeat(np.arange(rows), flat.segments_per_row)
        covered = np.bincount(row_of_segment, weights=flat.segment_lengths, minlength=rows)
        if not np.array_equal(covered.astype(np.int64), flat.row_lengths):
            raise DataError("seq_lens do not add up to the row lengths; pass rows from `pack`")
        if (
            self.vocab_size is not None
            and len(flat.tokens)
            and (flat.tokens.min() < 0 or flat.tokens.max() >= self.vocab_size)
        ):
            bad = int(flat.tokens[(flat.tokens < 0) | (flat.tokens >= self.vocab_size)][0])
            raise DataError(f"token id {bad} is outside the vocabulary of {self.vocab_size}")
        if self.flatten:
            return self._flattened(flat)
        longest = int(flat.row_lengths.max()) if rows else 0
        width = self.seq_len if self.seq_len is not None else longest
        if longest > width:
            raise DataError(f"a row of {longest} tokens does not fit seq_len {width}")

        row_of_token = np.repeat(np.arange(rows), flat.row_lengths)
        column_of_token = np.arange(len(flat.tokens)) - np.repeat(
            _starts(flat.row_lengths), flat.row_lengths
        )
        segment_starts = _starts(flat.segment_lengths)
        position = np.arange(len(flat.tokens)) - np.repeat(segment_starts, flat.segment_lengths)
        segment_of_token = np.repeat(np.arange(len(flat.segment_lengths)), flat.segment_lengths)

        input_ids = np.full((rows, width), self.pad_id, dtype=np.int64)
        input_ids[row_of_token, column_of_token] = flat.tokens
        attention_mask = np.zeros((rows, width), dtype=np.int64)
        attention_mask[row_of_token, column_of_token] = 1
        position_ids = np.zeros((rows, width), dtype=np.int64)
        position_ids[row_of_token, column_of_token] = position
        document_ids = np.full((rows, width), -1, dtype=np.int64)
        document_ids[row_of_token, column_of_token] = segment_of_token
        labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX)
        if self.mask_document_starts:
            labels[(position_ids == 0) & (attention_mask == 1)] = IGNORE_INDEX

        padding = width - flat.row_lengths
        last_segment_of_row = np.cumsum(flat.segments_per_row)
        pieces = np.insert(flat.segment_lengths, last_segment_of_row, padding)
        pieces = pieces[pieces > 0]
        cu_seq_lens = np.concatenate([[0], np.cumsum(pieces)]).astype(np.int32)
        max_length = int(pieces.max()) if len(pieces) else 0

        out: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "position_ids": position_ids,
            "document_ids": document_ids,
            "cu_seq_lens_q": cu_seq_lens,
            "cu_seq_lens_k": cu_seq_lens,
            "max_length_q": max_length,
            "max_length_k": max_length,
        }
        if self.document_mask:
            same = document_ids[:, :, None] == document_ids[:, None, :]
            causal = np.tril(np.ones((width, width), dtype=bool))
            real = attention_mask.astype(bool)
            mask = same & causal & real[:, None, :] & real[:, :, None]
            # A padding query attends itself: a row of all False makes the
            # softmax NaN, and NaN spreads into real tokens in later layers.
            padding_rows, padding_columns = np.nonzero(~real)
            mask[padding_rows, padding_columns, padding_columns] = True
            out["document_mask"] = mask[:, None]
        return _to_tensors(out) if self.return_tensors == "pt" else out

    def _flattened(self, flat: FlatRows) -> dict[str, Any]:
        """The whole batch as one row with no padding, as Hugging Face's
        `DataCollatorWithFlattening` lays it out: models with flash attention
        read `cu_seq_lens_*` and keep documents apart; there is no
        `attention_mask` to override them."""
        position = np.arange(len(flat.tokens)) - np.repeat(
            _starts(flat.segment_lengths), flat.segment_lengths
        )
        labels = flat.tokens.copy()
        if self.mask_document_starts:
            labels[position == 0] = IGNORE_INDEX
        pieces = flat.segment_lengths[flat.segment_lengths > 0]
        cu_seq_lens = np.concatenate([[0], np.cumsum(pieces)]).astype(np.int32)
        max_length = int(pieces.max()) if len(pieces) else 0
        out: dict[str, Any] = {
            "input_ids": flat.tokens[None, :],
            "labels": labels[None, :],
            "position_ids": position[None, :],
            "document_ids": np.repeat(np.arange(len(flat.segment_lengths)), flat.segment_lengths)[
                None, :
            ],
            "cu_seq_lens_q": cu_seq_lens,
            "cu_seq_lens_k": cu_seq_lens,
            "max_length_q": max_length,
            "max_length_k": max_length,
        }
        return _to_tensors(out) if self.return_tensors == "pt" else out


def _starts(lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Where each of consecutive pieces of these lengths starts."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def _to_tensors(arrays: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {
        name: torch.from_numpy(value) if isinstance(value, np.ndarray) else value
        for name, value in arrays.items()
    }


# --- Corruption collators -------------------------------------------------


def _check_draw_key(**values: int) -> None:
    """Seeds and epochs key every draw as u64s: refuse what does not fit one."""
    for name, value in values.items():
        if not 0 <= value < 2**64:
            raise ConfigError(f"{name} {value} is not a non-negative integer below 2^64")


class _CorruptionCollator:
    """Shared by the corruption collators: build the mode's corruptor from a
    tokenizer, normalize the batch, run the engine (GIL released, one call per
    batch) and hand back padded tensors.

    Rows are keyed by `key_column` when the batch carries it, else by a hash
    of their tokens; each row's corruption is then a pure function of (seed,
    epoch, key), so worker processes, resumed loaders and the `corrupt` stage
    all produce the same rows. Call :meth:`set_epoch` at each epoch for fresh
    noise. `return_attention_mask=False` leaves out `attention_mask`, as
    Hugging Face tokenizers do: rows of one length (T5's static shapes) need
    none; rows of several lengths then have unmasked padding. The other
    outputs are the same either way.
    """

    mode = ""
    # Collators pickled before the option existed unpickle with the mask.
    return_attention_mask = True

    def __init__(
        self,
        tokenizer: Any,
        *,
        seed: int = 0,
        epoch: int = 0,
        pad_to_multiple_of: int = 1,
        key_column: str = "id",
        return_tensors: str = "pt",
        return_attention_mask: bool = True,
        **options: Any,
    ) -> None:
        from tokenmill.objectives import objective
        from tokenmill.tokenizer import decoder_start_id, load_tokenizer, pad_id

        if return_tensors not in ("pt", "np"):
            raise ConfigError(f"return_tensors={return_tensors!r} is not 'pt' or 'np'")
        _check_draw_key(seed=seed, epoch=epoch)
        if pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of {pad_to_multiple_of} is below 1")
        tok = tokenizer if isinstance(tokenizer, _core.Tokenizer) else load_tokenizer(tokenizer)
        self.tokenizer = tok
        spec = objective(self.mode, corrupting=True)
        self.corruptor, self.options = spec.build_corruptor(tok, **options)
        self.layout = spec.layout(self.options)
        self.pad_id = pad_id(tok)
        self.seed = seed
        self.epoch = epoch
        self.pad_to_multiple_of = pad_to_multiple_of
        self.key_column = key_column
        self.return_tensors = return_tensors
        self.return_attention_mask = return_attention_mask
        start = self.layout.decoder_start
        self.decoder_start_id = None if start is None else decoder_start_id(tok, start)

    def set_epoch(self, epoch: int) -> None:
        """Fresh noise for a new epoch. With `persistent_workers=True` the
        workers keep the copy they started with: recreate the DataLoader (or
        its collator) per epoch there."""
        _check_draw_key(epoch=epoch)
        self.epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        # The Rust objects do not pickle; spawned DataLoader workers rebuild
        # them from the tokenizer's JSON and the options.
        state = dict(self.__dict__)
        state["tokenizer"] = self.tokenizer.to_str(pretty=False)
        del state["corruptor"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from tokenmill.objectives import objective

        spec = objective(self.mode, corrupting=True)
        state["tokenizer"] = _core.Tokenizer.from_str(state["tokenizer"])
        given = {k: v for k, v in state["options"].items() if k in spec.defaults()}
        state["corruptor"], _ = spec.build_corruptor(state["tokenizer"], **given)
        state.setdefault("layout", spec.layout(state["options"]))
        self.__dict__.update(state)

    def __call__(self, batch: Any) -> dict[str, Any]:
        if type(batch) is np.ndarray and batch.ndim == 2 and batch.dtype in ENGINE_DTYPES:
            # The engine reads and checks these as they are.
            given = TokenRows(batch, None, None)
        else:
            given = read_token_rows(batch, key_column=self.key_column)
        out: dict[str, Any] = self.corruptor.corrupt_padded(
            given.tokens,
            given.keys,
            seed=self.seed,
            epoch=self.epoch,
            lengths=given.lengths,
            seq_lens=given.seq_lens,
            word_ids=given.word_ids,
            pad_id=self.pad_id,
            pad_to_multiple_of=self.pad_to_multiple_of,
            decoder_start_id=self.decoder_start_id,
            attention_mask=self.return_attention_mask,
        )
        out = self._finish(out)
        return _to_tensors(out) if self.return_tensors == "pt" else out

    def _finish(self, out: dict[str, Any]) -> dict[str, Any]:
        prefix = out.pop("prefix_lens", None)
        if prefix is not None and "prefix_lens" in self.layout.columns:
            # Each row's first document's prefix, and every document's.
            out["prefix_len"] = prefix[:, 0].copy()
            out["prefix_lens"] = prefix
        return out


class MLMCollator(_CorruptionCollator):
    """BERT-style masked LM: `input_ids`, `attention_mask`, `labels` (the
    original id at chosen positions, -100 elsewhere). Options: the fields of
    :class:`tokenmill.objectives.MlmOptions`."""

    mode = "mlm"


class SpanCorruptionCollator(_CorruptionCollator):
    """T5 span corruption: `input_ids` (sentinels in place of the spans, EOS
    last), `attention_mask`, `labels` (sentinel-delimited spans, EOS last,
    -100 padding) and `decoder_input_ids` (labels shifted right after the
    pad id, T5's decoder start). Options: the fields of
    :class:`tokenmill.objectives.SpanOptions`."""

    mode = "span"


class DenoisingCollator(_CorruptionCollator):
    """BART denoising: noised `input_ids`, `attention_mask`, the clean row as
    `labels`, and `decoder_input_ids` starting with EOS as BART's decoder
    does (the first EOS spelling the vocabulary has, as `tokenmill train`
    takes). Options: the fields of :class:`tokenmill.objectives.BartOptions`."""

    mode = "bart"


class PrefixLMCollator(_CorruptionCollator):
    """Prefix LM. The decoder layout (default) returns `input_ids`,
    `attention_mask`, `labels` (-100 on the prefix), `prefix_len` (`[batch]`,
    the prefix of each row's first document) and `prefix_lens` (`[batch,
    documents]`, every document's, 0-padded: packed rows have several); the
    encoder-decoder layout returns the prefix as `input_ids` and the rest as
    `labels`, with `decoder_input_ids`. Options: the fields of
    :class:`tokenmill.objectives.PrefixOptions`."""

    mode = "prefix"


class UL2Collator(_CorruptionCollator):
    """UL2's mixture of denoisers: each row gets one R, X or S denoiser (a
    pure function of its key), its mode token first in `input_ids`; returns
    `input_ids`, `attention_mask`, `labels`, `decoder_input_ids` and
    `denoiser` (the index of each row's denoiser). Options: the fields of
    :class:`tokenmill.objectives.Ul2Options`."""

    mode = "ul2"
