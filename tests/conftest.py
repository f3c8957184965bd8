from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tokenmill
from tokenmill.tokenizer import save_tokenizer

REPO = Path(__file__).resolve().parent.parent
CORPORA = Path(os.environ.get("TOKENMILL_CORPORA", REPO.parent / "shared" / "corpora"))
TOKENIZERS = Path(os.environ.get("TOKENMILL_TOKENIZERS", REPO.parent / "shared" / "tokenizers"))


#: Set (as `.ci/run` does) to fail, not skip, when the shared files are missing,
#: so CI never passes without the tests that read them.
REQUIRE_SHARED = os.environ.get("TOKENMILL_REQUIRE_SHARED", "") not in ("", "0")


def _missing(path: Path, what: str, variable: str) -> None:
    reason = (
        f"{path} is missing: this test reads the shared {what} (set {variable} to their folder)"
    )
    if REQUIRE_SHARED:
        pytest.fail(reason)
    pytest.skip(reason)


def shared_tokenizer(name: str) -> Path:
    """A tokenizer.json of `../shared/tokenizers` (gpt2, cl100k_base, o200k_base...)."""
    path = TOKENIZERS / f"{name}.json"
    if not path.is_file():
        _missing(path, "tokenizer files", "TOKENMILL_TOKENIZERS")
    return path


def corpus(name: str) -> Path:
    path = CORPORA / name
    if not path.is_dir():
        _missing(path, "corpora", "TOKENMILL_CORPORA")
    return path


@pytest.fixture(scope="session")
def pydocs() -> Path:
    return corpus("pydocs")


@pytest.fixture(scope="session")
def pydocs_tokenizer(pydocs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE trained on the Python docs, saved as tokenizer.json."""
    tokenizer = tokenmill.train_tokenizer(pydocs, 4096, progress=False)
    return save_tokenizer(tokenizer, tmp_path_factory.mktemp("tok") / "tokenizer.json")


SMALL_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "",
    "naïve café — 漢字 🙂",
    "def f(x):\n    return x + 1\n",
] * 4


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trainer = tokenmill.BpeTrainer()
    trainer.add(pa.array(SMALL_TEXTS))
    tokenizer = trainer.train(400, min_frequency=1)
    return save_tokenizer(tokenizer, tmp_path_factory.mktemp("small") / "tokenizer.json")


#: Each corruption collator by its `corrupt --mode`.
CORRUPTION_COLLATORS = {
    "mlm": tokenmill.MLMCollator,
    "span": tokenmill.SpanCorruptionCollator,
    "bart": tokenmill.DenoisingCollator,
    "prefix": tokenmill.PrefixLMCollator,
    "ul2": tokenmill.UL2Collator,
}


def write_shards(folder: Path, tables: dict[str, pa.Table]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, folder / name)
    return folder


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """Two shards with id, text and a pass-through column."""
    n = len(SMALL_TEXTS)
    table = pa.table(
        {
            "id": [f"doc-{i}" for i in range(n)],
            "text": SMALL_TEXTS,
            "lang": ["en"] * n,
        }
    )
    return write_shards(
        tmp_path / "small",
        {"a.parquet": table.slice(0, n // 2), "b.parquet": table.slice(n // 2)},
    )


@pytest.fixture(scope="module")
def tokenizer(pydocs_tokenizer: Path) -> tokenmill.Tokenizer:
    """The pydocs tokenizer, loaded."""
    return tokenmill.load_tokenizer(pydocs_tokenizer)


@pytest.fixture(scope="session")
def pydocs_tokens(
    pydocs: Path, pydocs_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The Python docs, tokenized with the pydocs tokenizer."""
    out = tmp_path_factory.mktemp("corrupt") / "tokens"
    tokenmill.tokenize(pydocs, out, pydocs_tokenizer, progress=False)
    return out


@pytest.fixture(scope="session")
def short_docs(pydocs_tokens: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each pydocs document cut to its first 300 tokens: short enough for
    every mode's defaults (100 sentinels) without concatenation."""
    table = read_folder(pydocs_tokens)
    cut = pa.array(
        [t[:300] for t in table.column("input_ids").to_pylist()], type=pa.list_(pa.uint32())
    )
    out = tmp_path_factory.mktemp("short") / "docs"
    half = table.num_rows // 2
    short = pa.table({"id": table.column("id"), "input_ids": cut})
    return write_shards(out, {"a.parquet": short.slice(0, half), "b.parquet": short.slice(half)})


def read_folder(folder: Path) -> pa.Table:
    """Every Parquet shard of `folder`, in name order, as one table."""
    return pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("*.parquet")))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a dataset folder (manifest and state included) by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


_HOLD_LOCKS = """
import sys
from pathlib import Path
from tokenmill.output import lock_outputs
with lock_outputs(Path(sys.argv[1]), sys.argv[2:]):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def holding_locks(out: Path, *names: str) -> Iterator[subprocess.Popen[str]]:
    """Another process, holding the runner's locks on `names` in `out` for the block."""
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCKS, str(out), *names],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "held\n", "the holder could not take the locks"
            yield holder
        finally:
            holder.communicate(timeout=60)  # closing its stdin releases the locks


_PEAK_MEMORY = """
import re, sys
import tokenmill
from tokenmill.stages.dedup import DedupOptions, dedup
# VmHWM, the peak of this process's own memory (ru_maxrss would carry the
# forking pytest's peak over the exec).
peak = lambda: int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1]) * 1024
def run(source, out):
    {call}
run(sys.argv[1], sys.argv[2])
print(peak())
run(sys.argv[3], sys.argv[4])
print(peak())
"""


def peak_memory_used(call: str, small: Path, source: Path, tmp_path: Path) -> int:
    """How far a child process's peak memory rose while `call` (a statement
    on `source` and `out`) ran over `source`, after it ran over `small` (a
    few short rows of the same columns): imports, thread pools and
    allocators' arenas are then already there, and only what the data
    takes is counted."""
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEAK_MEMORY.format(call=call),
            str(small),
            str(tmp_path / "small-out"),
            str(source),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    before, peak = (int(line) for line in child.stdout.split()[-2:])
    return peak - before


def long_token_row(folder: Path, tokens: int, vocab: tuple[int, int] = (300, 4000)) -> Path:
    """A shard of one `id`, `input_ids` row of `tokens` random ids in `vocab`,
    and beside it (`folder.with_suffix(".small")`) a shard of three short
    rows: the input of :func:`peak_memory_used`."""
    ids = np.random.default_rng(0).integers(*vocab, tokens, dtype=np.uint32)
    item = pa.list_(pa.field("item", pa.uint32(), nullable=False))
    rows = pa.ListArray.from_arrays(pa.array([0, tokens], pa.int32()), pa.array(ids), type=item)
    write_shards(folder, {"long.parquet": pa.table({"id": ["long"], "input_ids": rows})})
    small = [ids[i * 1000 : (i + 1) * 1000].tolist() for i in range(3)]
    short = pa.table({"id": ["a", "b", "c"], "input_ids": pa.array(small, item)})
    write_shards(folder.with_suffix(".small"), {"short.parquet": short})
    return folder
