"""`negatives`: hard and random negatives for (query, positive) pair rows.

Two phases:

1. *corpus*, once: the ``positive`` column of every shard, in shard order,
   becomes the corpus (document ``i`` is pair row ``i``'s positive), with a
   content hash per document, and, by strategy, a BM25 index over it or its
   unit-normalized vectors. Corpus, hashes and index are held in memory:
   they grow with the corpus, nothing else does.
2. *mine*, shard by shard through the stage runner: each batch's queries
   are ranked against the whole corpus (BM25 or exact cosine, blocked, so
   memory stays bounded) and given ``num_negatives`` negatives.

Rules, the same for every strategy (see ``tokenmill_core::negatives``): a
negative is never the row's positive or a text identical to it (by content
hash), never repeats within a row, comes from ranks
``[range_min, range_max]`` of the ranking (0 is the best; copies of the
positive are not counted), and scores at most ``margin * positive_score``
(the default 0.95 is sentence-transformers' ``relative_margin=0.05``). Rows
left short are topped up with documents under the same rules (random
draws, then the lowest-scoring), counted in the manifest as
``negatives_topped_up``; when the margin leaves no such document, the row
takes its lowest-scoring admissible documents anyway, counted as
``negatives_over_margin``. Only a row for which the whole corpus holds too
few distinct texts besides its positive is an error.

The corpus is held as ``large_string`` or ``large_list<uint32>``, so it may
pass 2 GiB of text or 2^31 token ids; negatives are written in the type of
the positive column. Query and positive must be the same kind (both text or
both tokens) in every shard.

Output: the pair rows plus ``negatives`` (a list of texts, or of token
lists, like ``positive``), ``negative_ids`` (the negatives' row indices in
the corpus, ``list<int64>``) and, for bm25 and embedding,
``negative_scores`` (``list<float32>``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill import _core
from tokenmill._core import ConfigError, DataError, SchemaError, TokenmillError
from tokenmill.checks import (
    NULLS_FIX,
    as_uint32_tokens,
    at_row,
    check_nulls,
    is_token_list,
    locate_error,
    null_rows,
    refuse_nulls,
    require_column,
    require_id_column,
    require_u64,
)
from tokenmill.dataset import Dataset, Shard, open_dataset
from tokenmill.options import (
    Options,
    epoch_option,
    id_column_option,
    keywords_of,
    option,
    seed_option,
)
from tokenmill.output import refuse_output_over_input
from tokenmill.runner import DEFAULT_BATCH_ROWS, BatchContext, RunReport, Stage, run_stage
from tokenmill.stages._common import drop_nulls, nulls_option, rows_as_read

STRATEGIES = ("random", "bm25", "embedding")
#: Texts (or token lists) handed to an embedding function per call.
EMBED_BATCH = 4096

#: An embedding function: texts (or token-id lists) to a `[n, dim]` float array.
EmbedFunction = Callable[[list[Any]], Any]


@dataclass(frozen=True)
class NegativeOptions(Options):
    """The options of `negatives` (and of `tokenmill negatives`)."""

    strategy: str = option(
        "bm25",
        "random: any other positive; bm25: BM25-hard; embedding: cosine-hard over vectors.",
        choices=STRATEGIES,
    )
    num_negatives: int = option(4, "Negatives per query.", low=1)
    range_min: int = option(
        0,
        "First rank (0 = best, the positive's copies not counted) a negative may come from.",
        low=0,
    )
    range_max: int = option(99, "Last rank a negative may come from, inclusive.", low=0)
    margin: float = option(
        0.95,
        "Drop candidates scoring above margin x the positive's score (likely false negatives).",
    )
    k1: float = option(1.5, "BM25 k1.")
    b: float = option(0.75, "BM25 b.")
    query_column: str = option("query", "The query column (text or tokens).")
    positive_column: str = option(
        "positive", "The positive column, the corpus negatives come from."
    )
    query_vector_column: str = option("query_embedding", "Query vectors (embedding).")
    positive_vector_column: str = option("positive_embedding", "Positive vectors (embedding).")
    id_column: str | None = id_column_option(
        "Document id column keying each row's draws ('' keys rows by position)."
    )
    seed: int = seed_option("Seed of the draws.")
    epoch: int = epoch_option("Epoch of the draws: another epoch, other negatives.")
    #: A row whose query or positive is null: a DataError ("error"), or
    #: dropped, counted as rows_null, and never in the corpus ("skip").
    nulls: str = nulls_option()

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        check_nulls(self.nulls)
        if self.num_negatives < 1:
            raise ConfigError(f"--num-negatives {self.num_negatives} is not at least 1")
        if self.range_min < 0 or self.range_min > self.range_max:
            raise ConfigError(
                f"--range-min {self.range_min} and --range-max {self.range_max} are not "
                "0 <= min <= max; pass e.g. --range-min 0 --range-max 99"
            )
        if self.range_max - self.range_min + 1 < self.num_negatives:
            raise ConfigError(
                f"the rank window [{self.range_min}, {self.range_max}] holds fewer than "
                f"{self.num_negatives} negatives; widen it with --range-max"
            )
        if not (np.isfinite(self.margin) and self.margin > 0):
            raise ConfigError(
                f"--margin {self.margin} is not a positive number; pass e.g. --margin 0.95"
            )
        # An infinite k1 scores every document 0; NaN fails no comparison.
        if not (np.isfinite(self.k1) and self.k1 >= 0):
            raise ConfigError(f"--k1 {self.k1} is not a finite number >= 0; pass e.g. --k1 1.5")
        if not 0 <= self.b <= 1:
            raise ConfigError(f"--b {self.b} is not in [0, 1]; pass e.g. --b 0.75")
        require_u64(
            seed=self.seed,
            epoch=self.epoch,
            num_negatives=self.num_negatives,
            range_max=self.range_max,
        )


def _vectors(values: Any) -> pa.Array:
    """A `[n, dim]` array as a fixed_size_list<float32> column."""
    matrix = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
    if matrix.ndim != 2:
        raise ConfigError(
            f"the embedding function returned shape {matrix.shape}; it must return [n, dim]"
        )
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def _embed(embed: EmbedFunction, column: pa.Array) -> pa.Array:
    parts = []
    for start in range(0, len(column), EMBED_BATCH):
        chunk = column.slice(start, EMBED_BATCH).to_pylist()
        vectors = np.asarray(embed(chunk), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(chunk):
            raise ConfigError(
                f"the embedding function returned shape {vectors.shape} for {len(chunk)} "
                "inputs; it must return [n, dim]"
            )
        parts.append(vectors)
    return _vectors(np.concatenate(parts) if parts else np.zeros((0, 1), np.float32))


def _check_vectors(column: pa.Array, name: str, rows: npt.NDArray[np.int64] | None = None) -> int:
    """The dimension of a vector column; DataError naming the first bad row
    (`rows[i]`, the shard row of entry `i`, when rows were dropped)."""

    def shard_row(at: int) -> int:
        return at if rows is None else int(rows[at])

    t = column.type
    if not (
        (pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t))
        and pa.types.is_float32(t.value_type)
    ):
        raise SchemaError(
            f"column '{name}' has type {t}, not fixed_size_list<float32> or list<float32> "
            "vectors; cast it to float32 vectors"
        )
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"row {shard_row(row)}: the vector in '{name}' is null; embed every row")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise DataError(
            f"row {shard_row(row)}: the vector in '{name}' has {lengths[row]} values, the "
            f"first row {lengths[0]}; give every row a vector of the same dimension"
        )
    if pc.list_flatten(column).null_count:
        raise DataError(f"a vector in '{name}' holds a null value; re-embed those rows")
    return int(lengths[0]) if len(lengths) else 0


@dataclass
class _Corpus:
    positives: pa.Array
    offsets: dict[str, int]
    fingerprint: str
    positive_vectors: pa.Array | None
    #: Per shard with rows skipped for a null, each row's place among the
    #: shard's corpus documents (a skipped row's entry is never read).
    places: dict[str, npt.NDArray[np.int64]]

    def rows(
        self, shard: str, first_row: int, positions: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.uint64]:
        """The corpus index of each batch row: its positive's document."""
        rows = first_row + positions
        if shard in self.places:
            rows = self.places[shard][rows]
        return np.asarray(self.offsets[shard] + rows, dtype=np.uint64)


def _load_corpus(
    dataset: Dataset, options: NegativeOptions, embed: EmbedFunction | None
) -> _Corpus:
    parts: list[pa.Array] = []
    vectors: list[pa.Array] = []
    offsets: dict[str, int] = {}
    places: dict[str, npt.NDArray[np.int64]] = {}
    digest = hashlib.sha256()
    dims: set[int] = set()
    start = 0
    first: tuple[pa.DataType, pa.DataType] | None = None
    for shard in dataset.shards:
        try:
            first = _check_schema(shard, options, embed, first)
            texts = list(dict.fromkeys([options.query_column, options.positive_column]))
            columns = list(texts)
            wants_vectors = options.strategy == "embedding" and embed is None
            if wants_vectors:
                columns += [options.query_vector_column, options.positive_vector_column]
            table = shard.read(columns)
            # Before the miner sees them, so no null is ever handed out as a negative.
            kept: npt.NDArray[np.int64] | None = None
            if options.nulls == "error":
                refuse_nulls(table, texts, NULLS_FIX)
            else:
                null = np.zeros(table.num_rows, dtype=bool)
                for name in texts:
                    null |= null_rows(table.column(name).combine_chunks())
                if null.any():
                    kept = np.flatnonzero(~null)
                    places[shard.name] = np.cumsum(~null) - 1
                    table = table.filter(pa.array(~null))
            try:
                positive = _large(table.column(options.positive_column).combine_chunks(), options)
            except DataError as err:  # a negative id: its row among the kept ones
                row = getattr(err, "row", None)
                if kept is None or row is None:
                    raise
                raise at_row(err, int(kept[row])) from None
            if wants_vectors:
                for name in (options.query_vector_column, options.positive_vector_column):
                    dim = _check_vectors(table.column(name).combine_chunks(), name, kept)
                    if dim:
                        dims.add(dim)
                vectors.append(table.column(options.positive_vector_column).combine_chunks())
        except TokenmillError as err:
            raise locate_error(err, shard) from None
        parts.append(positive)
        offsets[shard.name] = start
        start += len(positive)
        digest.update(_core.file_checksum(shard.path).encode())
    if len(dims) > 1:
        raise DataError(
            f"{dataset.root}: the query and positive vectors have dimensions "
            f"{sorted(dims)}; embed them with the same model"
        )
    # Large offsets: a corpus past 2 GiB of text or 2^31 token ids would
    # overflow the 32-bit offsets of string and list<uint32>.
    positives = pa.concat_arrays(parts) if parts else pa.array([], type=pa.large_string())
    positive_vectors = None
    if options.strategy == "embedding":
        positive_vectors = _embed(embed, positives) if embed else pa.concat_arrays(vectors)
    return _Corpus(positives, offsets, digest.hexdigest()[:32], positive_vectors, places)


LARGE_TOKENS = pa.large_list(pa.field("item", pa.uint32(), nullable=False))


def _large(column: pa.Array, options: NegativeOptions) -> pa.Array:
    """A shard's positives with 64-bit offsets, token ids as uint32."""
    if is_token_list(column.type):
        return as_uint32_tokens(column, options.positive_column).cast(LARGE_TOKENS)
    return column.cast(pa.large_string())


def _check_schema(
    shard: Shard,
    options: NegativeOptions,
    embed: EmbedFunction | None,
    first: tuple[pa.DataType, pa.DataType] | None,
) -> tuple[pa.DataType, pa.DataType]:
    """Checks one shard; returns its (query, positive) types for the next."""
    schema = shard.schema
    require_id_column(schema, options.id_column)
    query = require_column(schema, options.query_column, "--query-column")
    positive = require_column(schema, options.positive_column, "--positive-column")
    for field in (query, positive):
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)) and (
            not is_token_list(field.type)
        ):
            raise SchemaError(
                f"column '{field.name}' has type {field.type}, neither text nor list<uint32> "
                "token ids; run `tokenmill pairs` first"
            )
    if is_token_list(query.type) != is_token_list(positive.type):
        kinds = ["tokens" if is_token_list(f.type) else "text" for f in (query, positive)]
        raise SchemaError(
            f"column '{query.name}' holds {kinds[0]} ({query.type}) and '{positive.name}' "
            f"{kinds[1]} ({positive.type}); BM25 and an embedding function compare them as "
            "one kind, so tokenize both or neither"
        )
    if first is not None:
        for field, earlier in zip((query, positive), first, strict=True):
            if field.type != earlier:
                raise SchemaError(
                    f"column '{field.name}' has type {field.type} here and {earlier} in "
                    "an earlier shard; give every shard the same schema"
                )
    if options.strategy == "embedding" and embed is None:
        require_column(schema, options.query_vector_column, "--query-vector-column")
        require_column(schema, options.positive_vector_column, "--positive-vector-column")
    return query.type, positive.type


class NegativesStage(Stage):
    name = "negatives"

    def __init__(
        self,
        options: NegativeOptions,
        corpus: _Corpus,
        miner: _core.NegativeMiner,
        embed: EmbedFunction | None,
    ) -> None:
        self.options = options
        self.corpus = corpus
        self.miner = miner
        self.embed = embed
        self.seed = options.seed
        self.id_column = options.id_column

    def params(self) -> dict[str, Any]:
        params = asdict(self.options)
        params["corpus"] = self.corpus.fingerprint
        if self.embed is not None:
            # The function itself cannot be fingerprinted: pass overwrite=True
            # when it changes under the same name.
            params["embed"] = getattr(self.embed, "__qualname__", type(self.embed).__name__)
        return params

    def _scored(self) -> bool:
        return self.options.strategy != "random"

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        positive = schema.field(self.options.positive_column)
        added = [
            pa.field("negatives", pa.list_(positive.type)),
            pa.field("negative_ids", pa.list_(pa.int64())),
        ]
        if self._scored():
            added.append(pa.field("negative_scores", pa.list_(pa.float32())))
        clash = [f.name for f in added if f.name in schema.names]
        if clash:
            raise SchemaError(
                f"the input already has a column '{clash[0]}'; drop it before `negatives`"
            )
        return pa.schema([*schema, *added])

    def _queries(self, batch: pa.RecordBatch) -> tuple[pa.Array, str]:
        o = self.options
        if o.strategy == "embedding":
            if self.embed is not None:
                return _embed(self.embed, batch.column(o.query_column)), "query vectors"
            return batch.column(o.query_vector_column), o.query_vector_column
        column = batch.column(o.query_column)
        if is_token_list(column.type):
            column = as_uint32_tokens(column, o.query_column)
        return column, o.query_column

    def process(self, batch: pa.RecordBatch, ctx: BatchContext) -> pa.RecordBatch:
        o = self.options
        # The rows the corpus left out, by the same rule, so each kept row's
        # positive is its corpus document.
        batch, ctx = drop_nulls(batch, ctx, [o.query_column, o.positive_column], o.nulls)
        k = o.num_negatives
        n = batch.num_rows
        schema = self.output_schema(batch.schema)
        if n == 0:  # every row of the batch skipped: nothing to embed or mine
            return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
        positions = ctx.positions if ctx.positions is not None else np.arange(n)
        rows = self.corpus.rows(ctx.shard, ctx.first_row, positions)
        with rows_as_read(ctx):  # a row the corpus cannot serve, among the kept ones
            queries, column = self._queries(batch)
            ids, scores, _, topped, over = self.miner.mine(
                queries, rows, ctx.row_keys(), column=column
            )
        offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
        negative_type = schema.field("negatives").type
        # The corpus has 64-bit offsets; one batch's negatives fit the input's type.
        taken = self.corpus.positives.take(pa.array(ids.reshape(-1)))
        negatives = pa.ListArray.from_arrays(
            offsets, taken.cast(negative_type.value_type), type=negative_type
        )
        added = [
            negatives,
            pa.ListArray.from_arrays(offsets, pa.array(ids.reshape(-1), type=pa.int64())),
        ]
        if self._scored():
            added.append(
                pa.ListArray.from_arrays(offsets, pa.array(scores.reshape(-1), type=pa.float32()))
            )
        ctx.count("negatives", n * k)
        ctx.count("negatives_topped_up", int(topped.sum()))
        ctx.count("rows_topped_up", int((topped > 0).sum()))
        ctx.count("negatives_over_margin", int(over.sum()))
        ctx.count("rows_over_margin", int((over > 0).sum()))
        return pa.RecordBatch.from_arrays([*batch.columns, *added], schema=schema)


def negatives(
    source: str | Path | Dataset,
    output: str | Path,
    options: NegativeOptions | None = None,
    *,
    embed: EmbedFunction | None = None,
    overwrite: bool = False,
    fmt: str = "parquet",
    batch_size: int = DEFAULT_BATCH_ROWS,
    progress: bool | None = None,
    **fields: Any,
) -> RunReport:
    """Adds negatives to every pair row of `source`; see the module docstring.

    `fields` are fields of :class:`NegativeOptions`, over `options` (else
    the defaults). With the embedding strategy, vectors come from the query
    and positive vector columns, or from `embed`, a function from a list of
    texts (or token-id lists) to a `[n, dim]` float array, called in batches.
    """
    options = NegativeOptions.parse(
        fields, what="negatives", base=options, also=("options", *keywords_of(negatives))
    )
    dataset = source if isinstance(source, Dataset) else open_dataset(source)
    out = Path(output)
    refuse_output_over_input(out, dataset)
    # From the footers alone, before the corpus is read or embedded.
    first: tuple[pa.DataType, pa.DataType] | None = None
    for shard in dataset.shards:
        try:
            first = _check_schema(shard, options, embed, first)
        except TokenmillError as err:
            raise locate_error(err, shard) from None
    documents = dataset.num_rows
    _refuse_too_few(dataset, options, documents)
    if documents > 2**32 - 1:
        raise ConfigError(
            f"{dataset.root}: {documents} pair rows are more than a miner indexes (2^32 - 1); "
            "mine smaller groups of shards"
        )
    corpus = _load_corpus(dataset, options, embed)
    _refuse_too_few(dataset, options, len(corpus.positives))  # rows skipped for a null
    miner = _core.NegativeMiner(
        corpus.positives,
        strategy=options.strategy,
        num_negatives=options.num_negatives,
        range_min=options.range_min,
        range_max=options.range_max,
        margin=options.margin,
        k1=options.k1,
        b=options.b,
        seed=options.seed,
        epoch=options.epoch,
        column=options.positive_column,
        vectors=corpus.positive_vectors,
    )
    stage = NegativesStage(options, corpus, miner, embed)
    return run_stage(
        stage, dataset, out, overwrite=overwrite, fmt=fmt, batch_size=batch_size, progress=progress
    )


def _refuse_too_few(dataset: Dataset, options: NegativeOptions, documents: int) -> None:
    if options.num_negatives > documents - 1:
        raise ConfigError(
            f"{dataset.root}: {options.num_negatives} negatives per row, but the corpus has "
            f"{documents} positive(s); pass --num-negatives of at most {max(documents - 1, 0)}"
        )


def mined_summary(report: RunReport) -> str:
    """One line on what mining did, from the manifest's totals."""
    totals = report.manifest.totals if report.manifest else {}
    keys = ("rows", "negatives", "negatives_topped_up", "negatives_over_margin")
    return json.dumps(
        {k: totals.get(k, 0) for k in keys},
        sort_keys=True,
    )
