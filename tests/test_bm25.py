from __future__ import annotations

import math
from pathlib import Path

import bm25s
import numpy as np
import pyarrow as pa
import pytest

import tokenmill
from tokenmill._core import Bm25Index
from tokenmill.dataset import open_dataset


def test_scores_equal_the_formula() -> None:
    docs = ["apple apple banana", "banana cherry", "cherry cherry cherry date"]
    index = Bm25Index(pa.array(docs))
    k1, b, n, avgdl = 1.5, 0.75, 3, 3.0

    def term(tf: int, dl: int, df: int) -> float:
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))

    expected = [term(2, 3, 1), term(1, 2, 2), term(3, 4, 2)]
    got = index.score(pa.array(["apple cherry"] * 3), [0, 1, 2])
    assert got == pytest.approx(expected, rel=1e-6)
    ids, scores = index.search(pa.array(["apple cherry"]), 3)
    assert ids.tolist() == [[0, 2, 1]]
    assert scores[0].tolist() == pytest.approx(sorted(expected, reverse=True), rel=1e-6)


def test_ranks_like_bm25s_on_pydocs(pydocs: Path) -> None:
    texts = open_dataset(pydocs).to_table().column("text").to_pylist()
    queries = [
        "asyncio event loop coroutine",
        "how to open a file for writing",
        "dictionary comprehension syntax",
        "regular expression groups",
        "unicode strings and bytes",
        "exception handling try except finally",
        "thread pool executor",
        "decimal floating point arithmetic",
    ]
    ours = Bm25Index(pa.array(texts))
    ids, scores = ours.search(pa.array(queries), 10)

    reference = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    reference.index(bm25s.tokenize(texts, stopwords=None, show_progress=False), show_progress=False)
    ref_ids, ref_scores = reference.retrieve(
        bm25s.tokenize(queries, stopwords=None, show_progress=False), k=10, show_progress=False
    )
    assert np.allclose(scores, ref_scores, rtol=1e-4)
    # Same documents in the same order; where the two differ, the scores tie.
    for q, (mine, theirs) in enumerate(zip(ids, ref_ids, strict=True)):
        for a, b in zip(mine, theirs, strict=True):
            if a != b:
                pair = ours.score(pa.array([queries[q]] * 2), [int(a), int(b)])
                assert pair[0] == pytest.approx(pair[1], rel=1e-5)
    assert (ids == ref_ids).mean() > 0.9


def test_token_columns_index_ids() -> None:
    docs = pa.array([[1, 2, 2], [3], [2, 3]], type=pa.list_(pa.uint32()))
    index = Bm25Index(docs, column="input_ids")
    ids, _ = index.search(pa.array([[2]], type=pa.list_(pa.uint32())), 2, column="input_ids")
    assert ids.tolist() == [[0, 2]]


def test_bad_parameters() -> None:
    with pytest.raises(tokenmill.ConfigError, match="k1"):
        Bm25Index(pa.array(["a b"]), k1=-1)
    with pytest.raises(tokenmill.ConfigError, match="cannot index 0 documents"):
        Bm25Index(pa.array([], type=pa.string()))
    with pytest.raises(tokenmill.SchemaError):
        Bm25Index(pa.array([1.5]))
