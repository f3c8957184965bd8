"""Contract 5: real work runs without the GIL, and survives fork()."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

import tokenmill
from tokenmill.dataset import open_dataset


@pytest.fixture(scope="module")
def big_texts(pydocs: Path) -> pa.Array:
    texts = open_dataset(pydocs).to_table().column("text").combine_chunks()
    return pa.concat_arrays([texts] * 2)


def _tokenize_in_child(tokenizer_path: str, texts: list[str], queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    tokenizer = tokenmill.load_tokenizer(tokenizer_path)
    queue.put(tokenizer.tokenize(pa.array(texts)).to_pylist())


def test_parallel_work_survives_fork(pydocs_tokenizer: Path, big_texts: pa.Array) -> None:
    tokenizer = tokenmill.load_tokenizer(pydocs_tokenizer)
    expected = tokenizer.tokenize(big_texts.slice(0, 64)).to_pylist()  # the parent's pool is up
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    texts = big_texts.slice(0, 64).to_pylist()
    child = context.Process(
        target=_tokenize_in_child, args=(str(pydocs_tokenizer), texts, queue), daemon=True
    )
    child.start()
    try:
        got = queue.get(timeout=60)  # a child stuck on the parent's pool never answers
        child.join(timeout=60)
    finally:
        if child.is_alive():
            child.terminate()
    assert child.exitcode == 0
    assert got == expected


def test_tokenize_releases_the_gil(pydocs_tokenizer: Path, big_texts: pa.Array) -> None:
    # The exact path, slow enough to time on one thread; both paths run in
    # the same GIL-free call of the binding.
    tokenizer = tokenmill.load_tokenizer(pydocs_tokenizer).exact()
    tokenmill.set_num_threads(1)
    try:
        started = time.perf_counter()
        tokenizer.tokenize(big_texts)
        alone = time.perf_counter() - started
        worker = threading.Thread(target=tokenizer.tokenize, args=(big_texts,))
        ticks: list[float] = []
        worker.start()
        while worker.is_alive():
            ticks.append(time.perf_counter())
            time.sleep(0.001)
        worker.join()
    finally:
        tokenmill.set_num_threads(0)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # Holding the GIL would stall this loop for the whole call.
    assert alone > 0.2
    assert len(ticks) > 20
    assert max(gaps) < alone / 4


def test_thread_count_is_configurable() -> None:
    tokenmill.set_num_threads(3)
    try:
        assert tokenmill.num_threads() == 3
    finally:
        tokenmill.set_num_threads(0)
    assert tokenmill.num_threads() >= 1
