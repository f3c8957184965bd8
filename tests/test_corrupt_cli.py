"""The `corrupt` command: where it writes by default, and its option errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import tokenmill
from tests.conftest import (
    read_folder,
    write_shards,
)
from tokenmill.tokenizer import save_tokenizer, sentinel_ids
from tokenmill_cli.main import cli


def test_cli_writes_next_to_the_input(
    pydocs_tokens: Path, pydocs_tokenizer: Path, tmp_path: Path
) -> None:
    source = tmp_path / "shards"
    write_shards(source, {"a.parquet": read_folder(pydocs_tokens).slice(0, 20)})
    cli = Path(sys.executable).parent / "tokenmill"
    done = subprocess.run(
        [
            *(str(cli), "corrupt", "--mode", "span", str(source)),
            *("--tokenizer", str(pydocs_tokenizer), "--input-length", "128", "--no-progress"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "shards-span" / "manifest.json").is_file()
    wrong = subprocess.run(
        [
            str(cli),
            "corrupt",
            "--mode",
            "mlm",
            "--noise-density",
            "0.3",
            str(source),
            "--tokenizer",
            str(pydocs_tokenizer),
            "-o",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 1
    assert wrong.stderr.strip().splitlines()[-1] == (
        "Error: ConfigError: --mode mlm takes no option --noise-density; its options are "
        "--probability, --mask-rate, --random-rate, --whole-word, --span, --span-p, "
        "--span-max, --max-predictions, --mask-token"
    )
    assert not (tmp_path / "x").exists()


def test_sentinels_from_top_refuses_special_tokens(
    pydocs: Path, short_docs: Path, tmp_path: Path
) -> None:
    # A tokenmill vocabulary keeps its 109 special tokens at ids 0..108.
    tokenizer = save_tokenizer(
        tokenmill.train_tokenizer(pydocs, 8192, progress=False), tmp_path / "tokenizer.json"
    )
    out = tmp_path / "out"
    args = ["corrupt", str(short_docs), "-o", str(out), "--mode", "span"]
    args += ["--tokenizer", str(tokenizer), "--sentinels-from-top"]
    result = CliRunner().invoke(cli, [*args, "8192"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ConfigError: --sentinels-from-top 8192 is not between")
    assert "pass --sentinels-from-top 8083 or less" in lines[0]
    assert not out.exists()
    assert sentinel_ids(tokenmill.load_tokenizer(tokenizer), 8083)[-1] == 109
