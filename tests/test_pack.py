from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import tokenmill
from tokenmill.dataset import open_dataset
from tokenmill_cli.main import cli

from .conftest import corpus, folder_bytes, long_token_row, peak_memory_used, write_shards


@pytest.fixture(scope="module")
def pydocs_tokens(
    pydocs: Path, pydocs_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("pydocs-tokens")
    tokenmill.tokenize(pydocs, out, pydocs_tokenizer, progress=False)
    return out


def _unpack(folder: Path) -> dict[tuple[str, int], list[int]]:
    """Rebuilds every document from its pieces, keyed by (output shard, doc index)."""
    pieces: dict[tuple[str, int], list[tuple[int, list[int]]]] = {}
    for shard in open_dataset(folder).shards:
        table = shard.read()
        for ids, lens, docs, offsets in zip(
            *(
                table.column(c).to_pylist()
                for c in ("input_ids", "seq_lens", "doc_index", "doc_offset")
            ),
            strict=True,
        ):
            assert sum(lens) == len(ids)
            at = 0
            for length, doc, offset in zip(lens, docs, offsets, strict=True):
                pieces.setdefault((shard.name, doc), []).append((offset, ids[at : at + length]))
                at += length
    documents = {}
    for key, parts in pieces.items():
        rebuilt: list[int] = []
        for offset, tokens in sorted(parts):
            assert offset == len(rebuilt)
            rebuilt.extend(tokens)
        documents[key] = rebuilt
    return documents


def test_unpacking_gives_back_every_document(pydocs_tokens: Path, tmp_path: Path) -> None:
    report = tokenmill.pack(pydocs_tokens, tmp_path / "packed", 512, buffer=100, progress=False)
    original = {
        (shard.name, i): ids
        for shard in open_dataset(pydocs_tokens).shards
        for i, ids in enumerate(shard.read(["input_ids"]).column("input_ids").to_pylist())
    }
    assert _unpack(tmp_path / "packed") == original
    assert report.manifest is not None
    totals = report.manifest.totals
    assert totals["documents"] == 497 and totals["tokens"] == sum(map(len, original.values()))
    assert totals["documents_split"] == sum(len(ids) > 512 for ids in original.values())
    assert totals["tokens_truncated"] == 0
    table = open_dataset(tmp_path / "packed").to_table()
    for ids, lens, positions in zip(
        table.column("input_ids").to_pylist(),
        table.column("seq_lens").to_pylist(),
        table.column("position_ids").to_pylist(),
        strict=True,
    ):
        assert len(ids) <= 512
        assert positions == [p for n in lens for p in range(n)]


def test_output_does_not_depend_on_batch_size(pydocs_tokens: Path, tmp_path: Path) -> None:
    tokenmill.pack(pydocs_tokens, tmp_path / "a", 1024, buffer=50, batch_size=7, progress=False)
    tokenmill.pack(pydocs_tokens, tmp_path / "b", 1024, buffer=50, batch_size=1000, progress=False)
    assert folder_bytes(tmp_path / "a") == folder_bytes(tmp_path / "b")


def test_concat_cuts_the_stream_like_group_texts(pydocs_tokens: Path, tmp_path: Path) -> None:
    report = tokenmill.pack(
        pydocs_tokens, tmp_path / "c", 256, strategy="concat", shifted=True, progress=False
    )
    assert report.manifest is not None
    for shard in open_dataset(pydocs_tokens).shards:
        stream = [
            t for ids in shard.read(["input_ids"]).column("input_ids").to_pylist() for t in ids
        ]
        rows = tmp_path / "c" / shard.name
        packed = open_dataset(rows).to_table().column("input_ids").to_pylist()
        assert all(len(r) == 257 for r in packed)
        # Windows of 257 at stride 256: each row opens with the last token of the one before.
        for k, row in enumerate(packed):
            assert row == stream[k * 256 : k * 256 + 257]
    assert report.manifest.ratios["fill"] == 1.0
    assert report.manifest.totals["tokens_truncated"] > 0


@pytest.mark.slow
def test_best_fit_fills_web_like_lengths(pydocs_tokenizer: Path, tmp_path: Path) -> None:
    """Tokenized real text cut into documents of web-like (log-normal) lengths."""
    tokens = tmp_path / "tokens"
    for name in ("pydocs", "licenses"):
        tokenmill.tokenize(corpus(name), tokens / name, pydocs_tokenizer, progress=False)
    stream = np.concatenate(
        [
            open_dataset(tokens / name)
            .to_table()
            .column("input_ids")
            .combine_chunks()
            .values.to_numpy()
            for name in ("pydocs", "licenses")
        ]
    )
    stream = np.concatenate([stream, stream[::-1]])  # enough for two full windows
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(500), 1.0, size=len(stream) // 300), 16, 32_000)
    cuts = np.cumsum(lengths.astype(np.int64))
    cuts = cuts[cuts < len(stream)]
    documents = np.split(stream, cuts)
    assert len(documents) > 20_000
    array = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], cuts, [len(stream)]]).astype(np.int32)),
        pa.array(stream, type=pa.uint32()),
    )
    source = write_shards(tmp_path / "web", {"web.parquet": pa.table({"input_ids": array})})
    report = tokenmill.pack(source, tmp_path / "packed", 2048, buffer=10_000, progress=False)
    assert report.manifest is not None
    fill = report.manifest.ratios["fill"]
    print(f"{len(documents)} documents, fill {fill:.5f}")
    assert fill >= 0.999
    assert report.manifest.totals["tokens"] == len(stream)


def test_bad_input(tmp_path: Path, small_dataset: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["pack", str(small_dataset), "-o", str(tmp_path / "o"), "--seq-len", "-5"]
    )
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == "Error: ConfigError: --seq-len -5 is not in [1, 4294967294]; pass e.g. --seq-len 2048"
    )
    result = runner.invoke(
        cli, ["pack", str(small_dataset), "-o", str(tmp_path / "o"), "--seq-len", "8"]
    )
    assert result.exit_code == 1
    assert "SchemaError" in result.output and "'input_ids' is missing" in result.output
    assert not (tmp_path / "o").exists()
    floats = write_shards(tmp_path / "f", {"f.parquet": pa.table({"input_ids": [[1.5], [3.0]]})})
    with pytest.raises(tokenmill.SchemaError, match="not list<uint32>"):
        tokenmill.pack(floats, tmp_path / "o", 8, progress=False)


def test_empty_documents_are_skipped_and_counted(tmp_path: Path) -> None:
    ids = pa.array([[1, 2], [], [3], []], type=pa.list_(pa.uint32()))
    source = write_shards(tmp_path / "in", {"e.parquet": pa.table({"input_ids": ids})})
    report = tokenmill.pack(source, tmp_path / "out", 4, progress=False)
    assert report.manifest is not None
    assert report.manifest.totals["empty_documents"] == 2
    packed = open_dataset(tmp_path / "out").to_table()
    assert packed.column("input_ids").to_pylist() == [[1, 2, 3]]
    assert packed.column("doc_index").to_pylist() == [[0, 2]]


def test_best_fit_decision_api() -> None:
    bins = tokenmill._core.best_fit_decreasing(np.array([3, 7, 5, 5], dtype=np.uint32), 10)
    assert bins.tolist() == [0, 0, 1, 1]  # 7 + 3 and 5 + 5
    with pytest.raises(tokenmill.ConfigError, match="does not fit"):
        tokenmill._core.best_fit_decreasing(np.array([11], dtype=np.uint32), 10)


def test_int32_tokens_are_accepted_and_nulls_refused(tmp_path: Path) -> None:
    ids = pa.array([[1, 2], [3]], type=pa.list_(pa.int32()))
    source = write_shards(tmp_path / "i", {"i.parquet": pa.table({"input_ids": ids})})
    tokenmill.pack(source, tmp_path / "o", 4, progress=False)
    assert open_dataset(tmp_path / "o").to_table().column("input_ids").to_pylist() == [[1, 2, 3]]
    negative = write_shards(
        tmp_path / "n",
        {
            "n.parquet": pa.table(
                {"input_ids": pa.array([[1, 2], [3], [4, -2], [-7]], pa.list_(pa.int32()))}
            )
        },
    )
    # The first row holding a negative id, and that id (not the smallest).
    with pytest.raises(
        tokenmill.DataError, match=r"n\.parquet: row 2: .* negative token id -2"
    ) as err:
        tokenmill.pack(negative, tmp_path / "o2", 4, progress=False)
    assert err.value.row == 2
    nulls = write_shards(
        tmp_path / "z",
        {"z.parquet": pa.table({"input_ids": pa.array([[1], None], pa.list_(pa.uint32()))})},
    )
    with pytest.raises(tokenmill.DataError, match=r"z\.parquet: row 1: the token list is null"):
        tokenmill.pack(nulls, tmp_path / "o3", 4, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["bfd", "concat"])
def test_one_long_document_packs_in_memory_a_small_multiple_of_it(
    strategy: str, tmp_path: Path
) -> None:
    """A 50M-token document once took up to 7.3 times its 200 MB: the packer
    kept a copy of it besides its rows, and the buffers pyarrow's reader freed
    stayed with its allocator, under everything the Rust side allocated next.
    Reading the row alone takes about 4 times it (README, Performance)."""
    tokens = 20_000_000
    source = long_token_row(tmp_path / "long", tokens)
    call = f"tokenmill.pack(source, out, 2048, strategy={strategy!r}, progress=False)"
    used = peak_memory_used(call, source.with_suffix(".small"), source, tmp_path)
    assert used < 5 * 4 * tokens + (160 << 20), f"{used / 2**20:.0f} MiB for one document"
    rows = pq.read_metadata(tmp_path / "out" / "long.parquet").num_rows
    assert rows == (-(-tokens // 2048) if strategy == "bfd" else tokens // 2048)
