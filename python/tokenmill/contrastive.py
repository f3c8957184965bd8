"""Training dual encoders on pair rows: a batch sampler and a collator.

:class:`ContrastiveBatchSampler` groups the rows of a pairs (or negatives)
dataset into batches in which no text occurs twice: with in-batch
negatives, a duplicate query or positive would be scored as a negative of
itself. It compares content hashes (XXH3-64 of the text bytes or token
bytes), so checking a batch costs a set lookup per text. Order is a pure
function of (seed, epoch); ``len()`` is the exact number of batches.

:class:`ContrastiveCollator` turns rows into the tensors a dual encoder
takes, in the layout of sentence-transformers' MultipleNegativesRankingLoss::

    query_input_ids     [B, Lq]       query_attention_mask [B, Lq]
    doc_input_ids       [B * (1 + K), Ld]
    doc_attention_mask  [B * (1 + K), Ld]
    labels              [B]           (= arange(B))

The documents are the B positives first, in row order, then each row's K
hard negatives, grouped by row: row ``i``'s negatives are documents
``B + i*K .. B + (i+1)*K - 1``. InfoNCE over in-batch and hard negatives is
then::

    q = encode(query_input_ids, query_attention_mask)   # [B, H]
    d = encode(doc_input_ids, doc_attention_mask)       # [B * (1 + K), H]
    loss = cross_entropy(q @ d.T / temperature, labels)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tokenmill import _core
from tokenmill._core import ConfigError, DataError
from tokenmill.batch import arrow_token_lists
from tokenmill.checks import refuse_nulls

STAGE = "contrastive"
TEXT_COLUMNS = ("query", "positive", "negatives")


def _as_table(rows: Any) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, Sequence) and rows and isinstance(rows[0], Mapping):
        names = [c for c in TEXT_COLUMNS if c in rows[0]]
        return pa.table({c: [row[c] for row in rows] for c in names})
    raise ConfigError(
        "expected a pyarrow Table or RecordBatch, or a non-empty list of dict rows with "
        f"'query' and 'positive'; got {type(rows).__name__}"
    )


def _column(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        raise ConfigError(
            f"the rows have no '{name}' column (they have: {', '.join(table.column_names)})"
        )
    column = table.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _hashes(values: pa.Array) -> npt.NDArray[np.uint64]:
    """Content hashes of a text or token column."""
    if pa.types.is_list(values.type) and pa.types.is_int32(values.type.value_type):
        values = values.cast(pa.list_(pa.field("item", pa.uint32(), nullable=False)))
    if pa.types.is_list(values.type) and pa.types.is_int64(values.type.value_type):
        values = values.cast(pa.list_(pa.field("item", pa.uint32(), nullable=False)))
    return _core.content_hashes(values, column="text")


def _drain(queue: deque[int]) -> Iterator[int]:
    """Pops from the front of `queue` as long as it is iterated."""
    while queue:
        yield queue.popleft()


class ContrastiveBatchSampler:
    """Batches of row indices in which no row's text is another's.

    Rows are visited in a random order keyed by (seed, epoch). A row joins
    the batch unless its query or positive equals a query or positive
    already there, or (with ``check_negatives``) one of its negatives equals
    one of those, or one of the batch's negatives equals its query or
    positive: each of these would score a text as a negative of itself.
    Rows sharing a hard negative are fine: InfoNCE just sees that negative
    twice. A row that clashes waits in a queue and is offered to the next
    batches before fresh rows, so no row is rescanned more than once a batch.

    Batches are computed once per epoch, so ``len()`` is exact. With
    ``drop_last``, short batches (the last, and any made only of waiting
    rows that clash with each other) are dropped; ``dropped`` counts the
    rows left out this epoch, on every rank.

    For DDP, pass ``num_replicas`` and ``rank``: batch ``j`` of the epoch goes
    to rank ``j % num_replicas``, and batches past the last multiple of
    ``num_replicas`` are dropped (counted), so every rank gets the same number
    of batches and no row is on two ranks. Every rank must pass the same
    rows, batch size, seed and epoch.
    """

    def __init__(
        self,
        rows: pa.Table | pa.RecordBatch,
        batch_size: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        check_negatives: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size {batch_size} is not positive")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(
                f"rank {rank} of num_replicas {num_replicas} is not 0 <= rank < num_replicas"
            )
        table = _as_table(rows)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        n = table.num_rows
        query = _hashes(_column(table, "query"))
        positive = _hashes(_column(table, "positive"))
        self._own: list[frozenset[int]] = [
            frozenset((int(q), int(p))) for q, p in zip(query, positive, strict=True)
        ]
        empty: frozenset[int] = frozenset()
        self._negatives: list[frozenset[int]] = [empty] * n
        if check_negatives and "negatives" in table.column_names:
            negatives = _column(table, "negatives")
            flat = _hashes(negatives.flatten())
            offsets = negatives.offsets.to_numpy()
            offsets = offsets - offsets[0]
            self._negatives = [
                frozenset(map(int, flat[offsets[i] : offsets[i + 1]])) for i in range(n)
            ]
        self._keys = np.arange(n, dtype=np.uint64)
        self._batches: list[list[int]] | None = None
        self._dropped = 0

    def set_epoch(self, epoch: int) -> None:
        """A new order for the next epoch (call it before each, as with DistributedSampler)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._batches = None

    def _order(self) -> npt.NDArray[np.int64]:
        draws = _core.uniform(self._keys, seed=self.seed, stage=STAGE, epoch=self.epoch)
        return np.lexsort((self._keys, draws)).astype(np.int64)

    def _fits(self, row: int, own: set[int], negatives: set[int]) -> bool:
        mine, theirs = self._own[row], self._negatives[row]
        return own.isdisjoint(mine) and own.isdisjoint(theirs) and negatives.isdisjoint(mine)

    def _all_batches(self) -> list[list[int]]:
        """Every rank's batches of the epoch, in order."""
        fresh = iter(self._order().tolist())
        waiting: deque[int] = deque()
        out: list[list[int]] = []
        self._dropped = 0
        while True:
            batch: list[int] = []
            own: set[int] = set()
            negatives: set[int] = set()
            still: deque[int] = deque()
            # Rows that waited longest go first, each looked at once a batch;
            # then fresh rows, each looked at once on arrival.
            for row in chain(_drain(waiting), fresh):
                if self._fits(row, own, negatives):
                    batch.append(row)
                    own.update(self._own[row])
                    negatives.update(self._negatives[row])
                    if len(batch) == self.batch_size:
                        break
                else:
                    still.append(row)
            still.extend(waiting)
            waiting = still
            if not batch:
                return out
            if len(batch) < self.batch_size and self.drop_last:
                self._dropped += len(batch)
                continue
            out.append(batch)

    def batches(self) -> list[list[int]]:
        """This rank's batches of the epoch."""
        if self._batches is None:
            every = self._all_batches()
            even = len(every) - len(every) % self.num_replicas
            self._dropped += sum(len(b) for b in every[even:])
            self._batches = every[self.rank : even : self.num_replicas]
        return self._batches

    @property
    def dropped(self) -> int:
        """Rows in no batch of any rank this epoch (``drop_last``, or DDP's even split)."""
        self.batches()
        return self._dropped

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class ContrastiveCollator:
    """Padded query and document tensors for a dual encoder; see the module docstring.

    Rows hold ``query``, ``positive`` and optionally ``negatives`` (every
    row the same number), as text (pass ``tokenizer``, a
    :class:`tokenmill.Tokenizer`) or token-id lists. ``query_max_length``
    and ``doc_max_length`` truncate; padding is on the right with
    ``pad_id``. ``return_tensors="np"`` gives numpy arrays instead of torch.
    """

    def __init__(
        self,
        tokenizer: _core.Tokenizer | None = None,
        *,
        pad_id: int = 0,
        query_max_length: int | None = None,
        doc_max_length: int | None = None,
        add_special_tokens: bool = False,
        return_tensors: str = "pt",
    ) -> None:
        if return_tensors not in ("pt", "np"):
            raise ConfigError(f"return_tensors={return_tensors!r} is not 'pt' or 'np'")
        for name, value in (
            ("query_max_length", query_max_length),
            ("doc_max_length", doc_max_length),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"{name} {value} is not positive")
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.query_max_length = query_max_length
        self.doc_max_length = doc_max_length
        self.add_special_tokens = add_special_tokens
        self.return_tensors = return_tensors

    def _tokens(self, values: pa.Array, name: str) -> pa.Array:
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            return arrow_token_lists(values, name)
        if self.tokenizer is None:
            raise ConfigError(
                f"'{name}' holds text; pass tokenizer= (a tokenmill Tokenizer) to the collator"
            )
        return self.tokenizer.tokenize(values, add_special_tokens=self.add_special_tokens)

    def _pad(self, tokens: pa.Array, limit: int | None) -> tuple[Any, Any]:
        offsets = tokens.offsets.to_numpy().astype(np.int64)
        flat = tokens.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        lengths = np.diff(offsets)
        if limit is not None:
            lengths = np.minimum(lengths, limit)
        rows = len(lengths)
        width = int(lengths.max()) if rows else 0
        ids = np.full((rows, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((rows, width), dtype=np.int64)
        row_of = np.repeat(np.arange(rows), lengths)
        column_of = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        source = np.repeat(offsets[:-1] - offsets[0], lengths) + column_of
        ids[row_of, column_of] = flat[source]
        mask[row_of, column_of] = 1
        return ids, mask

    def __call__(self, rows: Any) -> dict[str, Any]:
        table = _as_table(rows)
        if table.num_rows == 0:
            raise ConfigError("the collator got an empty batch")
        present = [c for c in ("query", "positive", "negatives") if c in table.column_names]
        refuse_nulls(table, present, "drop or fill null rows before collating")
        queries = self._tokens(_column(table, "query"), "query")
        documents = [self._tokens(_column(table, "positive"), "positive")]
        if "negatives" in table.column_names:
            negatives = _column(table, "negatives")
            counts = np.diff(negatives.offsets.to_numpy())
            if len(counts) and (counts != counts[0]).any():
                row = int(np.flatnonzero(counts != counts[0])[0])
                raise DataError(
                    f"row {row} has {counts[row]} negatives, row 0 {counts[0]}; every row of "
                    "a batch needs the same number"
                )
            # Offsets of a sliced list array index its parent's values: take
            # exactly this batch's negatives, in row order.
            documents.append(self._tokens(negatives.flatten(), "negatives"))
        doc_tokens = pa.concat_arrays([d.cast(documents[0].type) for d in documents])
        query_ids, query_mask = self._pad(queries, self.query_max_length)
        doc_ids, doc_mask = self._pad(doc_tokens, self.doc_max_length)
        out = {
            "query_input_ids": query_ids,
            "query_attention_mask": query_mask,
            "doc_input_ids": doc_ids,
            "doc_attention_mask": doc_mask,
            "labels": np.arange(table.num_rows, dtype=np.int64),
        }
        if self.return_tensors == "pt":
            import torch

            return {k: torch.from_numpy(v) for k, v in out.items()}
        return out
