from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers, processors

import tokenmill
from tokenmill.dataset import open_dataset


def test_ids_match_python_tokenizers_on_pydocs(
    pydocs: Path, pydocs_tokenizer: Path, tmp_path: Path
) -> None:
    report = tokenmill.tokenize(pydocs, tmp_path / "out", pydocs_tokenizer, progress=False)
    assert report.complete
    reference = tokenizers.Tokenizer.from_file(str(pydocs_tokenizer))
    eos = reference.token_to_id("</s>")
    source = open_dataset(pydocs).to_table()
    ours = open_dataset(tmp_path / "out").to_table()
    assert ours.column("id").to_pylist() == source.column("id").to_pylist()
    expected = reference.encode_batch(source.column("text").to_pylist(), add_special_tokens=False)
    got = ours.column("input_ids").to_pylist()
    assert len(got) == len(expected) == 497
    mismatched = [
        i for i, (e, g) in enumerate(zip(expected, got, strict=True)) if [*e.ids, eos] != g
    ]
    assert mismatched == []
    assert report.tokens == sum(len(g) for g in got)


def test_post_processor_runs_with_add_special_tokens(tmp_path: Path) -> None:
    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "hello": 3, "world": 4}
    reference = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    reference.pre_tokenizer = pre_tokenizers.Whitespace()
    reference.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    path = tmp_path / "wordlevel.json"
    reference.save(str(path))
    ours = tokenmill.load_tokenizer(path)
    texts = pa.array(["hello world", "world hello mars", ""])
    with_specials = ours.tokenize(texts, add_special_tokens=True).to_pylist()
    assert with_specials == [e.ids for e in reference.encode_batch(texts.to_pylist())]
    assert with_specials[0] == [1, 3, 4, 2]
    without = ours.tokenize(texts, add_special_tokens=False, eos_id=2).to_pylist()
    assert without == [[3, 4, 2], [4, 3, 0, 2], [2]]


def test_other_columns_pass_through_in_place(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    tokenmill.tokenize(small_dataset, tmp_path / "out", small_tokenizer, progress=False)
    table = open_dataset(tmp_path / "out").to_table()
    assert table.schema.names == ["id", "input_ids", "lang"]
    assert table.column("lang").to_pylist() == ["en"] * 20
    assert pa.types.is_uint32(table.schema.field("input_ids").type.value_type)
    tokenizer = tokenmill.load_tokenizer(small_tokenizer)
    eos = tokenizer.token_to_id("</s>")
    rows = table.column("input_ids").to_pylist()
    assert all(row[-1] == eos for row in rows)
    assert rows[2] == [eos]  # the empty document keeps its end marker
    assert tokenizer.decode(rows[3][:-1]) == "naïve café — 漢字 🙂"


def test_keep_text_and_output_column(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    tokenmill.tokenize(
        small_dataset,
        tmp_path / "out",
        small_tokenizer,
        keep_text=True,
        output_column="tokens",
        eos=False,
        progress=False,
    )
    table = open_dataset(tmp_path / "out").to_table()
    assert table.schema.names == ["id", "text", "lang", "tokens"]
    tokenizer = tokenmill.load_tokenizer(small_tokenizer)
    for text, ids in zip(
        table.column("text").to_pylist(), table.column("tokens").to_pylist(), strict=True
    ):
        assert tokenizer.decode(ids) == text


def test_named_eos_must_exist(small_tokenizer: Path, small_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(tokenmill.TokenizerError, match="--eos-token"):
        tokenmill.tokenize(
            small_dataset, tmp_path / "out", small_tokenizer, eos_token="<|eot|>", progress=False
        )
    assert not (tmp_path / "out").exists()


def test_large_string_and_arrow_ipc_round_trip(small_tokenizer: Path, tmp_path: Path) -> None:
    source = tmp_path / "ipc"
    source.mkdir()
    table = pa.table({"text": pa.array(["hello there", "general"], type=pa.large_string())})
    with (
        pa.OSFile(str(source / "s.arrow"), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as writer,
    ):
        writer.write_table(table)
    tokenmill.tokenize(source, tmp_path / "out", small_tokenizer, fmt="arrow", progress=False)
    out = tmp_path / "out" / "s.arrow"
    # Token shards written as Arrow IPC map straight into memory.
    with pa.memory_map(str(out)) as mapped:
        ids = pa.ipc.open_file(mapped).read_all().column("input_ids")
        values = ids.chunk(0).values.to_numpy(zero_copy_only=True)
    tokenizer = tokenmill.load_tokenizer(small_tokenizer)
    assert tokenizer.decode(ids.to_pylist()[0][:-1]) == "hello there"
    assert values.dtype.name == "uint32"


def test_truncation_and_padding_in_the_file_are_ignored(tmp_path: Path) -> None:
    vocab = {"[UNK]": 0, "[PAD]": 1, "a": 2, "b": 3}
    reference = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    reference.pre_tokenizer = pre_tokenizers.Whitespace()
    reference.enable_truncation(max_length=2)
    reference.enable_padding(length=6, pad_id=1, pad_token="[PAD]")
    path = tmp_path / "truncating.json"
    reference.save(str(path))
    ours = tokenmill.load_tokenizer(path)
    assert ours.tokenize(pa.array(["a b a b"])).to_pylist() == [[2, 3, 2, 3]]
    assert ours.tokenize(pa.array(["a"])).to_pylist() == [[2]]


@pytest.mark.slow
def test_one_long_document_tokenizes_in_memory_a_small_multiple_of_it(
    pydocs: Path, pydocs_tokenizer: Path, tmp_path: Path
) -> None:
    """A 20 MB document once took 2.5 GB, 125 times itself (and 200 MB took 24 GB):
    the exact path kept every token's offsets and strings. Measured in a
    child, whose peak resident memory is its own."""
    texts = open_dataset(pydocs).to_table(columns=["text"]).column("text").to_pylist()
    document = ("\n".join(texts) + "\n") * 2
    source = tmp_path / "long"
    source.mkdir()
    pq.write_table(pa.table({"id": ["one"], "text": [document]}), source / "one.parquet")
    # VmHWM, the peak of this process's own memory (ru_maxrss would carry
    # the forking pytest's peak over the exec).
    script = (
        "import re, sys, pyarrow, tokenmill\n"
        "peak = lambda: re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]\n"
        "tokenmill.load_tokenizer(sys.argv[3]).tokenize(pyarrow.array(['warm up']))\n"
        "print(int(peak()) * 1024)\n"
        "tokenmill.tokenize(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)\n"
        "print(int(peak()) * 1024)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(source), str(tmp_path / "out"), str(pydocs_tokenizer)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    # Before: the interpreter with everything loaded, a tokenizer used once.
    before, peak = (int(line) for line in child.stdout.split()[-2:])
    used = peak - before
    assert used < 16 * len(document.encode()), f"{used / 2**20:.0f} MiB for one document"
    tokens = open_dataset(tmp_path / "out").to_table().column("input_ids")[0].as_py()
    reference = tokenizers.Tokenizer.from_file(str(pydocs_tokenizer))
    eos = reference.token_to_id("</s>")
    assert tokens == [*reference.encode(document, add_special_tokens=False).ids, eos]
