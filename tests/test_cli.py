from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import tokenmill
from tokenmill.demo import run_demo
from tokenmill_cli.main import cli


def test_every_command_has_help() -> None:
    runner = CliRunner()
    commands = (
        [],
        ["tokenize"],
        ["sample"],
        ["dedup"],
        ["inspect"],
        ["demo"],
        ["train"],
        ["tokenizer", "train"],
    )
    for command in commands:
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage: " in result.output


def test_installed_command_reports_its_version() -> None:
    # The script sits beside the interpreter, whether or not its folder is on PATH.
    command = Path(sys.executable).parent / "tokenmill"
    result = subprocess.run([command, "--version"], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == f"tokenmill, version {tokenmill.__version__}"


def test_inspect_counts_and_decodes(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tokens"
    tokenmill.tokenize(small_dataset, out, small_tokenizer, progress=False)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["inspect", str(out), "--tokenizer", str(small_tokenizer), "--rows", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "2 shard(s), 20 rows" in result.output
    assert "made by: tokenmill" in result.output and "tokenize" in result.output
    assert "decoded: 'The quick brown fox jumps over the lazy dog.</s>'" in result.output
    assert "tokenizer: fast: byte-level BPE, gpt2 pre-tokenizer" in result.output
    summary = json.loads(runner.invoke(cli, ["inspect", str(out), "--json"]).output)
    tokens = next(c for c in summary["columns"] if c["name"] == "input_ids")
    lengths = [
        len(r) for r in tokenmill.open_dataset(out).to_table().column("input_ids").to_pylist()
    ]
    assert tokens["tokens"] == sum(lengths)
    assert (tokens["min_len"], tokens["max_len"]) == (min(lengths), max(lengths))
    assert summary["rows"] == 20 and summary["shards"] == 2


def test_inspect_reads_raw_text_shards(pydocs: Path) -> None:
    result = CliRunner().invoke(cli, ["inspect", str(pydocs), "--rows", "0"])
    assert result.exit_code == 0, result.output
    assert "4 shard(s), 497 rows" in result.output
    assert "text (string): 11." in result.output


def test_demo_runs_every_stage(tmp_path: Path) -> None:
    # One training step per family, no plots: the stages are under test, not learning.
    has_torch = importlib.util.find_spec("torch") is not None
    result = run_demo(
        tmp_path / "demo",
        vocab_size=2000,
        progress=False,
        echo=lambda _: None,
        train_steps=1,
        plots=False,
    )
    stages = [line.split()[0] for line in result.lines]
    assert stages == [
        "corpus",
        "dedup",
        "tokenizer",
        "tokenize",
        "sample",
        "pack",
        "pairs",
        "negatives",
        *(["corrupt", *["train"] * 7] if has_torch else ["train"]),
        "done",
    ]
    trained = [line.split()[1] for line in result.lines if line.startswith("train ")]
    if has_torch:
        assert trained == ["clm", "mlm", "span", "bart", "prefix", "ul2", "contrastive"]
    else:
        assert trained == ["skipped:"]
    for folder in ("corpus", "dedup", "tokens", "train", "valid", "packed", "negatives"):
        assert (tmp_path / "demo" / folder).is_dir()
    train = tokenmill.open_dataset(tmp_path / "demo" / "train").num_rows
    valid = tokenmill.open_dataset(tmp_path / "demo" / "valid").num_rows
    corpus = tokenmill.open_dataset(tmp_path / "demo" / "corpus")
    deduped = tokenmill.open_dataset(tmp_path / "demo" / "dedup")
    assert train + valid == deduped.num_rows <= corpus.num_rows
    assert deduped.num_rows > 500
    sources = set(corpus.to_table(columns=["source"]).column("source").to_pylist())
    assert sources == {"topics", "docstrings", "code"}


def test_tokenize_says_which_encoder_it_runs(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "tokenize",
            str(small_dataset),
            "-o",
            str(tmp_path / "t"),
            "--tokenizer",
            str(small_tokenizer),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("encoder: fast: byte-level BPE, gpt2")
    config = json.loads(small_tokenizer.read_text())
    config["normalizer"] = {"type": "Lowercase"}
    exact = tmp_path / "lowercase.json"
    exact.write_text(json.dumps(config))
    result = CliRunner().invoke(
        cli, ["tokenize", str(small_dataset), "-o", str(tmp_path / "u"), "--tokenizer", str(exact)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "encoder: exact: the tokenizers crate, since the fast path does not implement "
        "the normalizer Lowercase"
    )
