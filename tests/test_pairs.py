from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import tokenmill
from tokenmill import _core
from tokenmill_cli.main import cli

from .conftest import folder_bytes, write_shards


def _read(folder: Path) -> pa.Table:
    return tokenmill.open_dataset(folder).to_table()


def test_ict_on_a_small_case_is_the_passage_without_its_sentence(tmp_path: Path) -> None:
    text = "Alpha one. Beta two! Gamma three?"
    src = write_shards(tmp_path / "in", {"a.parquet": pa.table({"id": ["d"], "text": [text]})})
    tokenmill.pairs(src, tmp_path / "out", "ict", keep_probability=0.0, progress=False)
    row = _read(tmp_path / "out").to_pylist()[0]
    rest = {
        "Alpha one.": "Beta two! Gamma three?",
        "Beta two!": "Alpha one. Gamma three?",
        "Gamma three?": "Alpha one. Beta two!",
    }
    assert row["id"] == "d"
    assert row["positive"] == rest[row["query"]]


def test_crop_spans_are_word_runs_of_their_document(tmp_path: Path) -> None:
    words = [f"w{i}" for i in range(100)]
    table = pa.table({"id": ["a", "b"], "text": [" ".join(words), " ".join(words[:10])]})
    src = write_shards(tmp_path / "in", {"a.parquet": table})
    tokenmill.pairs(src, tmp_path / "out", "crop", min_ratio=0.2, max_ratio=0.3, progress=False)
    for row, n in zip(_read(tmp_path / "out").to_pylist(), (100, 10), strict=True):
        for span in (row["query"], row["positive"]):
            got = span.split(" ")
            first = words.index(got[0])
            assert got == words[first : first + len(got)]
            assert int(0.2 * n) <= len(got) <= int(0.3 * n)


def test_token_input_gives_token_pairs(tmp_path: Path) -> None:
    tokens = pa.array([[1, 2, 3, 9, 4, 5, 9]], type=pa.list_(pa.uint32()))
    src = write_shards(tmp_path / "in", {"a.parquet": pa.table({"input_ids": tokens})})
    tokenmill.pairs(
        src,
        tmp_path / "out",
        "ict",
        keep_probability=0.0,
        sentence_end_ids=[9],
        id_column=None,
        progress=False,
    )
    row = _read(tmp_path / "out").to_pylist()[0]
    assert sorted([row["query"], row["positive"]]) == [[1, 2, 3, 9], [4, 5, 9]]


def test_columns_mode_renames_and_passes_through(tmp_path: Path) -> None:
    table = pa.table({"id": [1, 2], "q": ["a", "b"], "d": ["x", "y"], "lang": ["en", "fr"]})
    src = write_shards(tmp_path / "in", {"a.parquet": table})
    tokenmill.pairs(
        src, tmp_path / "out", "columns", query_column="q", positive_column="d", progress=False
    )
    out = _read(tmp_path / "out")
    assert out.column_names == ["id", "lang", "query", "positive"]
    assert out.column("positive").to_pylist() == ["x", "y"]


def test_pairs_are_the_same_for_any_thread_count_and_batch_size(
    pydocs: Path, tmp_path: Path
) -> None:
    outputs = []
    for threads, batch in ((1, 2048), (2, 37)):
        _core.set_num_threads(threads)
        try:
            out = tmp_path / f"t{threads}"
            tokenmill.pairs(pydocs, out, "crop", seed=3, batch_size=batch, progress=False)
            outputs.append({k: v for k, v in folder_bytes(out).items() if "manifest" not in k})
        finally:
            _core.set_num_threads(0)
    shards = [k for k in outputs[0] if k.endswith(".parquet")]
    assert shards and all(outputs[0][k] == outputs[1][k] for k in shards)
    table = _read(tmp_path / "t1")
    texts = dict(
        zip(
            tokenmill.open_dataset(pydocs).to_table().column("id").to_pylist(),
            tokenmill.open_dataset(pydocs).to_table().column("text").to_pylist(),
            strict=True,
        )
    )
    for row in table.to_pylist()[:50]:
        assert row["query"] in texts[row["id"]] and row["positive"] in texts[row["id"]]


@pytest.mark.parametrize("mode", ["crop", "columns"])
def test_another_seed_or_epoch_is_not_taken_for_finished_output(
    pydocs: Path, tmp_path: Path, mode: str
) -> None:
    # Seed and epoch belong to the fingerprint: a rerun under other values
    # must not skip the shards as done, so without --overwrite it is refused.
    src = pydocs
    if mode == "columns":
        table = pa.table({"query": ["a", "b"], "positive": ["x", "y"]})
        src = write_shards(tmp_path / "in", {"a.parquet": table})
    out = tmp_path / "out"
    tokenmill.pairs(src, out, mode, seed=1, progress=False)
    first = folder_bytes(out)
    for changed in ({"seed": 2}, {"seed": 1, "epoch": 1}):
        with pytest.raises(tokenmill.ConfigError, match="different parameters"):
            tokenmill.pairs(src, out, mode, progress=False, **changed)
        assert folder_bytes(out) == first
    tokenmill.pairs(src, out, mode, seed=2, overwrite=True, progress=False)
    if mode == "crop":
        shards = [k for k in first if k.endswith(".parquet")]
        assert any(folder_bytes(out)[k] != first[k] for k in shards)


def test_a_document_too_short_is_a_data_error_naming_the_row(tmp_path: Path) -> None:
    table = pa.table({"id": ["a", "b", "c"], "text": ["two words", "fine text here", "one"]})
    src = write_shards(tmp_path / "in", {"a.parquet": table})
    with pytest.raises(tokenmill.DataError, match=r"a\.parquet: row 2: .*cropping needs"):
        tokenmill.pairs(src, tmp_path / "out", "crop", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(tokenmill.DataError, match=r"row 0: .*inverse cloze"):
        tokenmill.pairs(src, tmp_path / "out2", "ict", progress=False)


def test_missing_columns_and_bad_options_are_refused(tmp_path: Path) -> None:
    src = write_shards(tmp_path / "in", {"a.parquet": pa.table({"body": ["a b c"]})})
    with pytest.raises(tokenmill.SchemaError, match="--text-column"):
        tokenmill.pairs(src, tmp_path / "out", "crop", progress=False)
    with pytest.raises(tokenmill.SchemaError, match="--query-column"):
        tokenmill.pairs(src, tmp_path / "out", "columns", progress=False)
    with pytest.raises(tokenmill.ConfigError, match="--min-ratio"):
        tokenmill.pairs(src, tmp_path / "out", "crop", min_ratio=0.6, max_ratio=0.5)
    tokens = pa.table({"input_ids": pa.array([[1, 2]], type=pa.list_(pa.uint32()))})
    src = write_shards(tmp_path / "tok", {"a.parquet": tokens})
    with pytest.raises(tokenmill.ConfigError, match="--sentence-end-id"):
        tokenmill.pairs(src, tmp_path / "out", "ict", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_pairs(tmp_path: Path) -> None:
    table = pa.table({"id": ["a"], "text": ["one two three four"]})
    src = write_shards(tmp_path / "in", {"a.parquet": table})
    result = CliRunner().invoke(
        cli, ["pairs", str(src), "-o", str(tmp_path / "out"), "--mode", "crop", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "out" / "a.parquet").column_names == ["id", "query", "positive"]
    bad = CliRunner().invoke(cli, ["pairs", str(src), "-o", str(tmp_path / "x"), "--mode", "ict"])
    assert bad.exit_code == 1
    assert "DataError" in bad.output and "row 0" in bad.output
