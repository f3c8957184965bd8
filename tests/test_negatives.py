from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import tokenmill
from tokenmill import _core
from tokenmill.stages.negatives import LARGE_TOKENS, NegativeOptions, _load_corpus
from tokenmill_cli.main import cli

from .conftest import folder_bytes, write_shards


@pytest.fixture(scope="module")
def pydocs_pairs(pydocs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pairs") / "pairs"
    tokenmill.pairs(pydocs, out, "crop", min_ratio=0.05, max_ratio=0.1, seed=1, progress=False)
    return out


def _read(folder: Path) -> pa.Table:
    return tokenmill.open_dataset(folder).to_table()


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in folder_bytes(folder).items() if k.endswith(".parquet")}


@pytest.mark.parametrize("strategy", ["random", "bm25"])
def test_no_negative_equals_its_positive_and_rules_hold(
    pydocs_pairs: Path, tmp_path: Path, strategy: str
) -> None:
    options = NegativeOptions(
        strategy=strategy, num_negatives=3, range_min=2, range_max=30, margin=0.9
    )
    report = tokenmill.negatives(pydocs_pairs, tmp_path / "out", options, progress=False)
    table = _read(tmp_path / "out")
    positives = table.column("positive").to_pylist()
    index = _core.Bm25Index(pa.array(positives))
    for i, row in enumerate(table.to_pylist()):
        assert len(row["negatives"]) == 3
        assert len(set(row["negatives"])) == 3
        assert row["positive"] not in row["negatives"]
        assert [positives[j] for j in row["negative_ids"]] == row["negatives"]
        if strategy == "bm25" and i < 60:
            query = pa.array([row["query"]] * 4)
            docs = [i, *row["negative_ids"]]
            scores = index.score(query, docs)
            assert all(s <= 0.9 * scores[0] + 1e-5 for s in scores[1:])
            assert row["negative_scores"] == pytest.approx(scores[1:], rel=1e-5)
            # Window: no negative mined from the top two ranks (copies of the
            # positive aside); top-ups are random and are counted.
            ids, _ = index.search(pa.array([row["query"]]), 40)
            ranked = [d for d in ids[0].tolist() if positives[d] != row["positive"]]
            assert not set(row["negative_ids"]) & set(ranked[:2])
    assert report.manifest is not None
    assert report.manifest.totals["negatives"] == 3 * table.num_rows
    if strategy == "random":
        assert "negative_scores" not in table.column_names


@pytest.mark.parametrize("strategy", ["random", "bm25", "embedding"])
def test_output_is_the_same_for_any_thread_count_and_batch_size(
    pydocs_pairs: Path, tmp_path: Path, strategy: str
) -> None:
    src = _embedding_dataset(tmp_path) if strategy == "embedding" else pydocs_pairs
    # A margin that drops many candidates, so top-ups are exercised too.
    options = NegativeOptions(strategy=strategy, num_negatives=4, seed=5, margin=0.8)
    outputs = []
    for threads, batch in ((1, 2048), (2, 53)):
        _core.set_num_threads(threads)
        try:
            out = tmp_path / f"t{threads}"
            tokenmill.negatives(src, out, options, batch_size=batch, progress=False)
            outputs.append(_shard_bytes(out))
        finally:
            _core.set_num_threads(0)
    assert outputs[0] and outputs[0] == outputs[1]


def _embedding_dataset(tmp_path: Path, n: int = 300, dim: int = 16) -> Path:
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(n, dim)).astype(np.float32)
    queries = (docs + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "query": [f"q{i}" for i in range(n)],
            "positive": [f"p{i}" for i in range(n)],
            "query_embedding": pa.FixedSizeListArray.from_arrays(pa.array(queries.ravel()), dim),
            "positive_embedding": pa.FixedSizeListArray.from_arrays(pa.array(docs.ravel()), dim),
        }
    )
    return write_shards(
        tmp_path / "emb", {"a.parquet": table.slice(0, 120), "b.parquet": table.slice(120)}
    )


def test_embedding_mining_is_exact_cosine_top_k(tmp_path: Path) -> None:
    src = _embedding_dataset(tmp_path)
    options = NegativeOptions(strategy="embedding", num_negatives=2, range_min=1, margin=0.95)
    tokenmill.negatives(src, tmp_path / "out", options, progress=False)
    table = _read(tmp_path / "out")
    q = np.array(table.column("query_embedding").to_pylist(), dtype=np.float64)
    d = np.array(table.column("positive_embedding").to_pylist(), dtype=np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    scores = q @ d.T
    for i, row in enumerate(table.to_pylist()):
        ranked = [j for j in np.argsort(-scores[i], kind="stable") if j != i]
        eligible = [j for j in ranked[1:100] if scores[i, j] <= 0.95 * scores[i, i]]
        assert row["negative_ids"] == eligible[:2]
        assert row["negative_scores"] == pytest.approx(scores[i, eligible[:2]], abs=1e-5)


def test_embedding_function_in_the_api(tmp_path: Path) -> None:
    table = pa.table(
        {"query": [f"q{i}" for i in range(40)], "positive": [f"p{i}" for i in range(40)]}
    )
    src = write_shards(tmp_path / "in", {"a.parquet": table})

    def embed(texts: list[str]) -> np.ndarray:
        numbers = np.array([int(t[1:]) for t in texts], dtype=np.float32)
        return np.stack([np.cos(numbers / 7), np.sin(numbers / 7)], axis=1)

    options = NegativeOptions(strategy="embedding", num_negatives=2, margin=100.0)
    tokenmill.negatives(src, tmp_path / "out", options, embed=embed, progress=False)
    rows = _read(tmp_path / "out").to_pylist()
    # On the unit circle, the nearest other points of angle i/7 are i-1 and i+1.
    assert sorted(rows[10]["negative_ids"]) == [9, 11]


def test_bad_inputs_are_one_clear_error_and_no_output(tmp_path: Path) -> None:
    table = pa.table({"query": ["a b", "c d", "e f"], "positive": ["x", "y", "z"]})
    src = write_shards(tmp_path / "in", {"a.parquet": table})
    out = tmp_path / "out"
    cases = [
        (NegativeOptions(num_negatives=3), tokenmill.ConfigError, "at most 2"),
        (NegativeOptions(range_min=5, range_max=2), tokenmill.ConfigError, "--range-min"),
        (NegativeOptions(margin=0.0), tokenmill.ConfigError, "--margin"),
        (NegativeOptions(query_column="nope"), tokenmill.SchemaError, "--query-column"),
        (NegativeOptions(strategy="embedding"), tokenmill.SchemaError, "--query-vector-column"),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            tokenmill.negatives(src, out, options, progress=False)
        assert not out.exists()
    floats = pa.list_(pa.float32())
    good = pa.array([[1.0, 0.0]] * 3, type=floats)
    bad_vectors = [
        (pa.array([[1.0, 0.0], [1.0], [0.0, 1.0]], type=floats), r"row 1: .*dimension"),
        (pa.array([[1.0, 0.0], [0.0, 1.0], None], type=floats), r"row 2: .*null"),
        (pa.array([[1.0, 0.0, 0.0]] * 3, type=floats), "dimensions"),
    ]
    for i, (vectors, message) in enumerate(bad_vectors):
        bad = table.append_column("query_embedding", vectors).append_column(
            "positive_embedding", good
        )
        src = write_shards(tmp_path / f"vec{i}", {"a.parquet": bad})
        with pytest.raises(tokenmill.DataError, match=message):
            tokenmill.negatives(src, out, NegativeOptions(strategy="embedding", num_negatives=1))
        assert not out.exists()


def test_cli_negatives(pydocs_pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["negatives", str(pydocs_pairs), "-o", str(out), "--num-negatives", "2"]
    result = CliRunner().invoke(cli, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "negatives_topped_up" in result.output
    bad = CliRunner().invoke(cli, [*args[:4], "--range-min", "9", "--range-max", "3"])
    assert bad.exit_code == 1 and "ConfigError" in bad.output


def test_query_and_positive_of_different_kinds_are_refused(tmp_path: Path) -> None:
    tokens = pa.list_(pa.uint32())
    text = pa.table({"query": ["a b", "c d", "e f"], "positive": ["x", "y", "z"]})
    mixed = text.set_column(1, "positive", pa.array([[1], [2], [3]], type=tokens))
    src = write_shards(tmp_path / "mixed", {"a.parquet": mixed})
    for strategy in ("random", "bm25"):
        with pytest.raises(tokenmill.SchemaError, match="tokenize both or neither"):
            tokenmill.negatives(src, tmp_path / "out", NegativeOptions(strategy, num_negatives=1))
    # The query column's type must hold across shards, as the positive's does.
    other = text.set_column(0, "query", pa.array(["a", "b", "c"], type=pa.large_string()))
    src = write_shards(tmp_path / "shards", {"a.parquet": text, "b.parquet": other})
    with pytest.raises(tokenmill.SchemaError, match=r"b\.parquet.*'query'.*earlier shard"):
        tokenmill.negatives(src, tmp_path / "out", NegativeOptions(num_negatives=1))
    assert not (tmp_path / "out").exists()


def test_too_many_negatives_are_refused_before_the_corpus_is_embedded(tmp_path: Path) -> None:
    table = pa.table({"query": ["a", "b"], "positive": ["x", "y"]})
    src = write_shards(tmp_path / "in", {"a.parquet": table, "b.parquet": table})
    calls: list[int] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return np.ones((len(texts), 2), dtype=np.float32)

    options = NegativeOptions(strategy="embedding", num_negatives=4)
    with pytest.raises(tokenmill.ConfigError, match="has 4 positive"):
        tokenmill.negatives(src, tmp_path / "out", options, embed=embed)
    assert calls == []


@pytest.mark.parametrize("kind", ["text", "tokens"])
def test_corpus_has_64_bit_offsets_and_output_keeps_the_input_type(
    tmp_path: Path, kind: str
) -> None:
    # Past 2 GiB of text (or 2^31 token ids) 32-bit offsets overflow; the
    # corpus is large_string / large_list and each batch is cast back.
    n = 30
    if kind == "text":
        positive = pa.array([f"doc {i} word{i % 4}" for i in range(n)])
        query = pa.array([f"word{i % 4} doc" for i in range(n)])
    else:
        item = pa.list_(pa.uint32())
        positive = pa.array([[i, 100 + i % 4] for i in range(n)], type=item)
        query = pa.array([[100 + i % 4] for i in range(n)], type=item)
    table = pa.table({"query": query, "positive": positive})
    src = write_shards(tmp_path / "in", {"a.parquet": table.slice(0, 12), "b.parquet": table})
    dataset = tokenmill.open_dataset(src)
    corpus = _load_corpus(dataset, NegativeOptions(), None)
    assert corpus.positives.type in (pa.large_string(), LARGE_TOKENS)
    tokenmill.negatives(src, tmp_path / "out", NegativeOptions(num_negatives=2), progress=False)
    out = _read(tmp_path / "out")
    assert out.schema.field("negatives").type.value_type == positive.type
    corpus_rows = pa.concat_tables([table.slice(0, 12), table]).column("positive").to_pylist()
    for row in out.to_pylist():
        assert [corpus_rows[j] for j in row["negative_ids"]] == row["negatives"]
    # The miner reads large token lists and large strings directly.
    miner = _core.NegativeMiner(
        corpus.positives, strategy="bm25", num_negatives=1, column="positive"
    )
    assert miner.documents == 42


def test_a_margin_nothing_passes_is_counted_not_fatal(tmp_path: Path) -> None:
    # Every positive vector points the same way: nothing scores below 50% of
    # the positive, so rows take their lowest-scoring documents, counted.
    n = 20
    table = pa.table(
        {
            "query": [f"q{i}" for i in range(n)],
            "positive": [f"p{i}" for i in range(n)],
            "query_embedding": pa.array([[1.0, 0.0]] * n, type=pa.list_(pa.float32())),
            "positive_embedding": pa.array(
                [[1.0, 0.001 * i] for i in range(n)], type=pa.list_(pa.float32())
            ),
        }
    )
    src = write_shards(tmp_path / "in", {"a.parquet": table})
    options = NegativeOptions(strategy="embedding", num_negatives=2, margin=0.5)
    report = tokenmill.negatives(src, tmp_path / "out", options, progress=False)
    assert report.manifest is not None
    assert report.manifest.totals["negatives_over_margin"] == 2 * n
    assert report.manifest.totals["rows_over_margin"] == n
    rows = _read(tmp_path / "out").to_pylist()
    assert set(rows[0]["negative_ids"]) == {n - 1, n - 2}


@pytest.mark.parametrize(
    ("option", "value"),
    [("--k1", "inf"), ("--k1", "nan"), ("--k1", "-1"), ("--b", "nan"), ("--b", "1.5")],
)
def test_bm25_parameters_outside_their_domain_are_refused(
    tmp_path: Path, option: str, value: str
) -> None:
    table = pa.table({"query": ["a b", "c d", "e f"], "positive": ["x", "y", "z"]})
    src = write_shards(tmp_path / "in", {"a.parquet": table})
    out = tmp_path / "out"
    args = ["negatives", str(src), "-o", str(out), "--num-negatives", "1", option, value]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: ConfigError: {option} {value}")
    assert result.output.count("\n") == 1 and option in result.output
    assert not out.exists()


@pytest.mark.parametrize("strategy", ["random", "bm25", "embedding", "embed"])
def test_null_rows_are_an_error_or_skipped_never_a_negative(tmp_path: Path, strategy: str) -> None:
    """A null query or positive is no pair: by default a DataError naming its
    shard and row; with nulls="skip" the row is dropped, counted, and left
    out of the corpus, so no row is ever handed a null (or a skipped row's
    positive) as a negative. The output is a run on the shards without it
    (batches of one row: a batch left empty is written as nothing)."""
    n, dim = 30, 4
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    words = ["fox", "dog", "cat", "owl", "bee"]
    queries: list[str | None] = [f"{words[i % 5]} query {i}" for i in range(n)]
    positives: list[str | None] = [
        f"{words[i % 5]} passage {words[(i + 1) % 5]} {i}" for i in range(n)
    ]
    positive_vectors: list[list[float] | None] = vectors.tolist()
    positives[3] = None
    positive_vectors[3] = None  # a skipped row's vector is not needed
    queries[17] = None  # shard b's row 2
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "query": queries,
            "positive": positives,
            "query_embedding": pa.array(vectors.tolist(), pa.list_(pa.float32())),
            "positive_embedding": pa.array(positive_vectors, pa.list_(pa.float32())),
        }
    )
    shards = {"a.parquet": table.slice(0, 15), "b.parquet": table.slice(15)}
    source = write_shards(tmp_path / "in", shards)
    clean = write_shards(
        tmp_path / "clean",
        {
            name: t.filter(pa.array([r not in ("r3", "r17") for r in t.column("id").to_pylist()]))
            for name, t in shards.items()
        },
    )

    def embed(texts: list[str]) -> np.ndarray:
        assert None not in texts
        return np.array([[len(t), t.count("o") + 1.0] for t in texts], dtype=np.float32)

    options = NegativeOptions(
        strategy="embedding" if strategy == "embed" else strategy, num_negatives=3
    )
    function = embed if strategy == "embed" else None
    with pytest.raises(tokenmill.DataError) as err:
        tokenmill.negatives(source, tmp_path / "e", options, embed=function, progress=False)
    assert err.value.row == 3
    assert str(err.value) == (
        f"{source / 'a.parquet'}: row 3: column 'positive' is null here; "
        "drop or fill null rows, or pass --nulls skip"
    )
    assert not (tmp_path / "e").exists()

    skip = dataclasses.replace(options, nulls="skip")
    report = tokenmill.negatives(
        source, tmp_path / "out", skip, embed=function, batch_size=1, progress=False
    )
    assert report.manifest is not None and report.manifest.totals["rows_null"] == 2
    out = _read(tmp_path / "out")
    kept = [p for i, p in enumerate(positives) if p is not None and queries[i] is not None]
    assert out.column("positive").to_pylist() == kept
    for row in out.to_pylist():
        assert None not in row["negatives"]
        assert row["negatives"] == [kept[j] for j in row["negative_ids"]]
    tokenmill.negatives(clean, tmp_path / "c", skip, embed=function, progress=False)
    assert out.equals(_read(tmp_path / "c"))

    # Skipped rows leave a smaller corpus, checked like the footers' count.
    few = write_shards(tmp_path / "few", {"a.parquet": table.slice(2, 3).drop(["query_embedding"])})
    with pytest.raises(tokenmill.ConfigError, match="the corpus has 2 positive"):
        tokenmill.negatives(
            few,
            tmp_path / "f",
            NegativeOptions(strategy="random", num_negatives=2, nulls="skip"),
            progress=False,
        )


def test_a_row_the_corpus_cannot_serve_is_named_as_read_after_skipped_rows(
    tmp_path: Path,
) -> None:
    """Mining sees the kept rows only; its error names the row in the shard."""
    table = pa.table(
        {"id": list("abcde"), "query": ["q w"] * 5, "positive": [None, "c", "c", "a", "c"]}
    )
    source = write_shards(tmp_path / "in", {"n.parquet": table})
    options = NegativeOptions(strategy="random", num_negatives=2, nulls="skip")
    with pytest.raises(tokenmill.DataError, match="row 1: only 1 document") as err:
        tokenmill.negatives(source, tmp_path / "out", options, progress=False)
    assert err.value.row == 1


def test_a_negative_id_after_skipped_rows_names_its_row(tmp_path: Path) -> None:
    queries = pa.array([[1, 2]] * 5, pa.list_(pa.int32()))
    positives = pa.array([[3], None, [4], [-5], [6]], pa.list_(pa.int32()))
    source = write_shards(
        tmp_path / "in", {"n.parquet": pa.table({"query": queries, "positive": positives})}
    )
    options = NegativeOptions(strategy="random", num_negatives=2, nulls="skip")
    with pytest.raises(tokenmill.DataError, match="row 3: column 'positive' holds the negative"):
        tokenmill.negatives(source, tmp_path / "out", options, progress=False)
