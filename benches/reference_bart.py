"""A per-sample PyTorch BART noiser in the style of fairseq's
`DenoisingDataset`, the reference `benches/bench_corrupt.py` measures
tokenmill's `DenoisingCollator` against.

Written here from the algorithm (not copied), with `bart.large`'s settings
as tokenmill's defaults: every sentence permuted, 30% of words masked by
text infilling (span lengths from a Poisson(3.5) truncated where its mass
falls under 1e-7, zero-length spans turned into insertions), one mask per
span (`replace_length=1`), 10% of the masks a random token instead, no
extra insertion, no rotation. Each row starts with BOS and ends with EOS,
which stay in place. Rows are noised one at a time with torch ops, as the
dataset's `__getitem__` does, then padded into a batch as its collater does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def poisson_table(rate: float) -> torch.Tensor:
    """P(k) for k = 0, 1, ... until it drops under 1e-7 (at most 128 terms)."""
    probabilities = []
    term = math.exp(-rate)
    for k in range(128):
        probabilities.append(term)
        if term < 1e-7:
            break
        term *= rate / (k + 1)
    return torch.tensor(probabilities)


class TorchBartNoiser:
    def __init__(
        self,
        word_start: Sequence[bool],
        sentence_ends: Sequence[int],
        *,
        mask_id: int,
        pad_id: int,
        eos_id: int,
        vocab_size: int,
        mask_ratio: float = 0.3,
        random_ratio: float = 0.1,
        insert_ratio: float = 0.0,
        rotate_ratio: float = 0.0,
        permute_sentence_ratio: float = 1.0,
        poisson_lambda: float = 3.5,
        seed: int = 0,
    ) -> None:
        self.word_start = torch.tensor(list(word_start), dtype=torch.long)
        self.sentence_ends = torch.tensor(list(sentence_ends), dtype=torch.long)
        self.mask_id, self.pad_id, self.eos_id = mask_id, pad_id, eos_id
        self.vocab_size = vocab_size
        self.mask_ratio, self.random_ratio = mask_ratio, random_ratio
        self.insert_ratio, self.rotate_ratio = insert_ratio, rotate_ratio
        self.permute_ratio = permute_sentence_ratio
        self.spans = torch.distributions.Categorical(poisson_table(poisson_lambda))
        self.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # Categorical.sample draws from the global generator

    # -- the noise functions, one row at a time --------------------------------

    def permute_sentences(self, row: torch.Tensor) -> torch.Tensor:
        stops = torch.isin(row, self.sentence_ends)
        stops[-2] = True  # the text before EOS is a sentence too
        # A sentence ends after the last of a run of stops; BOS stays first.
        ends = (stops[1:] & ~stops[:-1]).nonzero().squeeze(1) + 2
        count = ends.numel()
        moved = math.ceil(count * self.permute_ratio)
        chosen = torch.randperm(count, generator=self.generator)[:moved]
        order = torch.arange(count)
        order[chosen] = chosen[torch.randperm(moved, generator=self.generator)]
        out = row.clone()
        at = 1
        for s in order.tolist():
            begin = int(ends[s - 1]) if s > 0 else 1
            piece = row[begin : int(ends[s])]
            out[at : at + piece.numel()] = piece
            at += piece.numel()
        return out

    def word_starts(self, row: torch.Tensor) -> torch.Tensor:
        starts = self.word_start.gather(0, row)
        starts[0] = 0
        starts[-1] = 0
        return starts

    def infill(self, row: torch.Tensor) -> torch.Tensor:
        """Text infilling with `replace_length=1`: each span's first token
        becomes the mask (or a random token), the rest of the span goes."""
        starts = self.word_starts(row)
        budget = math.ceil(float(starts.sum()) * self.mask_ratio)
        if budget == 0:
            return row
        lengths = self.spans.sample((budget,))
        total = torch.cumsum(lengths, 0)
        while total[-1] < budget:
            lengths = torch.cat([lengths, self.spans.sample((budget,))])
            total = torch.cumsum(lengths, 0)
        last = int(torch.searchsorted(total, budget))  # first span reaching the budget
        lengths[last] = budget - (int(total[last - 1]) if last > 0 else 0)
        lengths = lengths[: last + 1]
        spans = lengths[lengths > 0]
        inserts = lengths.numel() - spans.numel()
        if spans.numel() == 0:
            return self.insert(row, inserts / row.numel())
        candidates = starts.nonzero().squeeze(1)
        picked = torch.randperm(candidates.numel(), generator=self.generator)[: spans.numel()]
        at = candidates[picked]
        spans = spans[: at.numel()]
        random = torch.rand(at.numel(), generator=self.generator) < self.random_ratio
        keep = torch.ones(row.numel(), dtype=torch.bool)
        row = row.clone()
        row[at] = self.mask_id
        row[at[random]] = torch.randint(
            1, self.vocab_size, (int(random.sum()),), generator=self.generator
        )
        starts[-1] = 255  # a span never runs past EOS
        left = spans - 1
        while at.numel():
            left = left - starts[at + 1]
            going = left >= 0
            at, left = at[going] + 1, left[going]
            keep[at] = False
        row = row[keep]
        if inserts:
            row = self.insert(row, inserts / row.numel())
        return row

    def insert(self, row: torch.Tensor, ratio: float) -> torch.Tensor:
        if ratio == 0.0:
            return row
        n = math.ceil(row.numel() * ratio)
        where = torch.randperm(row.numel() + n - 2, generator=self.generator)[:n] + 1
        noise = torch.zeros(row.numel() + n, dtype=torch.bool)
        noise[where] = True
        out = torch.full((row.numel() + n,), -1, dtype=torch.long)
        randoms = math.ceil(n * self.random_ratio)
        out[where[randoms:]] = self.mask_id
        out[where[:randoms]] = torch.randint(
            1, self.vocab_size, (randoms,), generator=self.generator
        )
        out[~noise] = row
        return out

    def rotate(self, row: torch.Tensor) -> torch.Tensor:
        shift = int(torch.randint(1, max(1, row.numel() - 1) + 1, (1,), generator=self.generator))
        return torch.cat([row[:1], row[shift:-1], row[1:shift], row[-1:]])

    def noise(self, row: torch.Tensor) -> torch.Tensor:
        source = row
        if self.permute_ratio > 0:
            source = self.permute_sentences(source)
        if self.mask_ratio > 0:
            source = self.infill(source)
        if self.insert_ratio > 0:
            source = self.insert(source, self.insert_ratio)
        if (
            self.rotate_ratio > 0
            and float(torch.rand(1, generator=self.generator)) < self.rotate_ratio
        ):
            source = self.rotate(source)
        return source

    # -- the batch, as the dataset's collater pads it --------------------------

    def __call__(self, rows: Any) -> dict[str, torch.Tensor]:
        clean = [torch.as_tensor(r, dtype=torch.long) for r in rows]
        noised = [self.noise(r) for r in clean]
        width = max(r.numel() for r in noised)
        label_width = max(r.numel() for r in clean)
        inputs = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), label_width), -100, dtype=torch.long)
        decoder = torch.full((len(rows), label_width), self.pad_id, dtype=torch.long)
        for i, (source, target) in enumerate(zip(noised, clean, strict=True)):
            inputs[i, : source.numel()] = source
            mask[i, : source.numel()] = 1
            labels[i, : target.numel()] = target
            decoder[i, 0] = self.eos_id
            decoder[i, 1 : target.numel()] = target[:-1]
        return {
            "input_ids": inputs,
            "attention_mask": mask,
            "labels": labels,
            "decoder_input_ids": decoder,
        }
