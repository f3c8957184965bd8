from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import tokenizers
from click.testing import CliRunner

import tokenmill
from tokenmill_cli.main import cli

from .conftest import write_shards


def test_special_tokens_are_listed_in_id_order() -> None:
    specials = tokenmill.special_tokens()
    assert specials[:9] == [
        "<pad>",
        "<s>",
        "</s>",
        "<mask>",
        "<cls>",
        "<sep>",
        "[NLU]",
        "[S2S]",
        "[NLG]",
    ]
    assert specials[9:] == [f"<extra_id_{i}>" for i in range(100)]


def test_cli_train_writes_a_tokenizer_python_tokenizers_loads(pydocs: Path, tmp_path: Path) -> None:
    out = tmp_path / "tokenizer.json"
    result = CliRunner().invoke(
        cli, ["tokenizer", "train", str(pydocs), "-o", str(out), "--vocab-size", "2000"]
    )
    assert result.exit_code == 0, result.output
    reference = tokenizers.Tokenizer.from_file(str(out))
    assert reference.get_vocab_size() == 2000
    for i, token in enumerate(tokenmill.special_tokens()):
        assert reference.token_to_id(token) == i
    text = "def tokenize(self):\n    return [x for x in range(10)]  # ünïcode"
    ids = reference.encode(text, add_special_tokens=False).ids
    assert reference.decode(ids) == text
    # Special tokens in text are matched whole, never split.
    assert reference.encode("a<mask>b", add_special_tokens=False).ids[1] == 3


def test_training_is_deterministic_across_processes(small_dataset: Path, tmp_path: Path) -> None:
    outputs = []
    for i in range(2):
        out = tmp_path / f"t{i}.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tokenmill_cli",
                "tokenizer",
                "train",
                str(small_dataset),
                "-o",
                str(out),
                "--vocab-size",
                "400",
                "--min-frequency",
                "1",
                "--no-progress",
            ],
            check=True,
        )
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_vocab_too_small_for_the_special_tokens(small_dataset: Path) -> None:
    with pytest.raises(tokenmill.ConfigError, match="use --vocab-size 365 or more"):
        tokenmill.train_tokenizer(small_dataset, 300, progress=False)


def test_training_on_a_non_text_column(tmp_path: Path) -> None:
    source = write_shards(tmp_path / "in", {"n.parquet": pa.table({"text": [1.5]})})
    with pytest.raises(tokenmill.SchemaError, match="has type double"):
        tokenmill.train_tokenizer(source, 1000, progress=False)


def test_training_on_non_utf8_bytes_names_file_and_row(tmp_path: Path) -> None:
    texts = pa.array([b"fine", b"\xc3\x28"], type=pa.binary())
    source = write_shards(tmp_path / "in", {"bin.parquet": pa.table({"text": texts})})
    with pytest.raises(tokenmill.DataError, match=r"bin\.parquet: row 1: text is not valid UTF-8"):
        tokenmill.train_tokenizer(source, 1000, progress=False)
