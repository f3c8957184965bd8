"""A numpy span-corruption collator in the manner of Hugging Face's Flax T5
example (`FlaxDataCollatorForT5MLM` in `run_t5_mlm_flax.py`), the reference
`benches/bench_corrupt.py` measures tokenmill's `SpanCorruptionCollator`
against.

Written here from the algorithm, not copied. Per row, one noise mask: the
noise tokens (`round(length * density)`, kept in `[1, length - 1]`) and the
other tokens are each cut into the same number of spans
(`round(min(noise, other) / mean_span)`, at least 1) by a random
segmentation (a shuffled vector of cut flags), and the spans interleave,
starting with a non-noise span. Then, over the whole batch at once, each
noise span collapses into one sentinel in the inputs, and each non-noise
span into one sentinel in the labels; both end with EOS. Rows of
`t5_input_and_target_lengths(512)` = 568 tokens give 512 inputs and 114
labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Mask = npt.NDArray[np.bool_]
Ids = npt.NDArray[np.int64]


def segment_lengths(items: int, segments: int, rng: np.random.Generator) -> Ids:
    """`items` cut into `segments` non-empty pieces uniformly at random: a
    shuffled flag vector marks which of the `items - 1` gaps are cuts."""
    cuts = np.zeros(items - 1, dtype=bool)
    cuts[: segments - 1] = True
    rng.shuffle(cuts)
    segment_of_item = np.cumsum(np.concatenate([[False], cuts]))
    return np.bincount(segment_of_item, minlength=segments)


def noise_mask(length: int, density: float, mean_span: float, rng: np.random.Generator) -> Mask:
    """T5's `random_spans_noise_mask` for one row of `length` tokens."""
    noise = min(max(round(length * density), 1), length - 1)
    kept = length - noise
    spans = max(round(min(noise, kept) / mean_span), 1)
    noise_spans = segment_lengths(noise, spans, rng)
    kept_spans = segment_lengths(kept, spans, rng)
    interleaved = np.stack([kept_spans, noise_spans], axis=1).reshape(-1)
    starts = np.zeros(length, dtype=np.int8)
    starts[np.cumsum(interleaved)[:-1]] = 1
    noise: Mask = (np.cumsum(starts) % 2) == 1
    return noise


def sentinel_layout(mask: Mask, sentinels: Ids) -> Ids:
    """Per position: the sentinel id where a masked span starts, -1 on the
    rest of a masked span (to drop), 0 elsewhere (keep the token)."""
    as_int = mask.astype(np.int64)
    previous = np.zeros_like(as_int)
    previous[:, 1:] = as_int[:, :-1]
    starts = as_int * (1 - previous)
    span_number = np.cumsum(starts, axis=1)
    out = np.where(starts == 1, sentinels[np.maximum(span_number - 1, 0)], 0)
    out[(as_int == 1) & (starts == 0)] = -1
    return out


def collapse(tokens: Ids, layout: Ids, eos_id: int) -> Ids:
    """Sentinels in place of span starts, the rest of each span dropped, EOS
    appended; every row keeps the same length, as T5's layout guarantees."""
    merged = np.where(layout > 0, layout, tokens)
    kept = merged[layout >= 0].reshape(tokens.shape[0], -1)
    eos = np.full((tokens.shape[0], 1), eos_id, dtype=np.int64)
    return np.concatenate([kept, eos], axis=1)


class NumpyT5Collator:
    """The Flax T5 example's collator: list of `{"input_ids": [...]}` rows (or
    a 2-D array) of equal length in, numpy `input_ids`, `labels` and
    `decoder_input_ids` out."""

    def __init__(
        self,
        sentinels: Sequence[int],
        eos_id: int,
        pad_id: int,
        *,
        noise_density: float = 0.15,
        mean_span: float = 3.0,
        seed: int = 0,
    ) -> None:
        self.sentinels = np.asarray(sentinels, dtype=np.int64)
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.noise_density = noise_density
        self.mean_span = mean_span
        self.rng = np.random.default_rng(seed)

    def __call__(self, examples: Any) -> dict[str, Ids]:
        if isinstance(examples, np.ndarray):
            tokens = examples.astype(np.int64)
        else:
            tokens = np.array([e["input_ids"] for e in examples], dtype=np.int64)
        rows, length = tokens.shape
        mask = np.stack(
            [noise_mask(length, self.noise_density, self.mean_span, self.rng) for _ in range(rows)]
        )
        inputs = collapse(tokens, sentinel_layout(mask, self.sentinels), self.eos_id)
        labels = collapse(tokens, sentinel_layout(~mask, self.sentinels), self.eos_id)
        decoder = np.full_like(labels, self.pad_id)
        decoder[:, 1:] = labels[:, :-1]
        return {"input_ids": inputs, "labels": labels, "decoder_input_ids": decoder}
