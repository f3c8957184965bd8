"""Contract 4: bad input gets one clear error naming the file (and row) and the fix,
and leaves no output behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import tokenmill
from tokenmill_cli.main import cli

from .conftest import folder_bytes, write_shards


def _cli_error(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def test_missing_column(small_dataset: Path, small_tokenizer: Path, out: Path) -> None:
    line = _cli_error(
        "tokenize",
        str(small_dataset),
        "-o",
        str(out),
        "--tokenizer",
        str(small_tokenizer),
        "--text-column",
        "body",
    )
    assert line.startswith("Error: SchemaError: ")
    assert str(small_dataset / "a.parquet") in line
    assert "'body' is missing" in line and "columns are: id, text, lang" in line
    assert "--text-column" in line
    assert not out.exists()


def test_wrong_column_type(tmp_path: Path, small_tokenizer: Path, out: Path) -> None:
    source = write_shards(tmp_path / "in", {"n.parquet": pa.table({"text": [1, 2, 3]})})
    with pytest.raises(tokenmill.SchemaError, match=r"n\.parquet: column 'text' has type int64"):
        tokenmill.tokenize(source, out, small_tokenizer, progress=False)
    assert not out.exists()


def test_truncated_parquet(small_dataset: Path, small_tokenizer: Path, out: Path) -> None:
    shard = small_dataset / "b.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    line = _cli_error(
        "tokenize", str(small_dataset), "-o", str(out), "--tokenizer", str(small_tokenizer)
    )
    assert line.startswith(f"Error: ShardError: {shard}: cannot read shard")
    assert "truncated, corrupt or not Parquet" in line
    assert not out.exists()


def test_corrupt_parquet_body(small_tokenizer: Path, tmp_path: Path, out: Path) -> None:
    # A valid footer over garbage pages: the error surfaces only when rows are read.
    table = pa.table({"text": ["some words here"] * 2000})
    source = write_shards(tmp_path / "in", {"c.parquet": table})
    raw = bytearray((source / "c.parquet").read_bytes())
    raw[8:4000] = bytes(range(256)) * 15 + bytes(152)
    (source / "c.parquet").write_bytes(bytes(raw))
    with pytest.raises(tokenmill.ShardError, match=r"c\.parquet: cannot read shard"):
        tokenmill.tokenize(source, out, small_tokenizer, progress=False)
    assert not out.exists()


def test_not_a_shard_at_all(tmp_path: Path, small_tokenizer: Path, out: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "notes.parquet").write_text("this is plain text, not parquet\n")
    with pytest.raises(tokenmill.ShardError, match=r"notes\.parquet: cannot read shard"):
        tokenmill.tokenize(source, out, small_tokenizer, progress=False)


def test_empty_folder_and_empty_file(tmp_path: Path, small_tokenizer: Path, out: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _cli_error("tokenize", str(empty), "-o", str(out), "--tokenizer", str(small_tokenizer))
    assert line == (
        f"Error: ShardError: {empty}: the folder holds no shards (.parquet, .arrow, .feather, "
        ".ipc); point at a folder of Parquet or Arrow IPC files"
    )
    (empty / "zero.parquet").write_bytes(b"")
    with pytest.raises(tokenmill.ShardError, match=r"zero\.parquet: the shard is empty"):
        tokenmill.tokenize(empty, out, small_tokenizer, progress=False)
    with pytest.raises(tokenmill.ShardError, match="no such file or folder"):
        tokenmill.tokenize(tmp_path / "missing", out, small_tokenizer, progress=False)


def test_non_utf8_text_names_file_and_row(tmp_path: Path, small_tokenizer: Path, out: Path) -> None:
    texts = pa.array([b"ok", b"fine", b"caf\xe9 latin-1"], type=pa.binary())
    source = write_shards(tmp_path / "in", {"latin.parquet": pa.table({"text": texts})})
    line = _cli_error("tokenize", str(source), "-o", str(out), "--tokenizer", str(small_tokenizer))
    assert line == (
        f"Error: DataError: {source / 'latin.parquet'}: row 2: text is not valid UTF-8 "
        "(bad byte at offset 3); re-encode the source as UTF-8 before this stage"
    )
    assert not out.exists()


def test_invalid_utf8_in_a_string_column(tmp_path: Path, small_tokenizer: Path, out: Path) -> None:
    # Parquet files from other writers can carry invalid bytes in a UTF8 column.
    raw = pa.Array.from_buffers(
        pa.string(),
        1,
        [None, pa.py_buffer(b"\x00\x00\x00\x00\x02\x00\x00\x00"), pa.py_buffer(b"\xff\xfe")],
    )
    source = tmp_path / "in"
    source.mkdir()
    pq.write_table(pa.table({"text": raw}), source / "bad.parquet")
    with pytest.raises(tokenmill.DataError, match=r"bad\.parquet: row 0: text is not valid UTF-8"):
        tokenmill.tokenize(source, out, small_tokenizer, progress=False)
    assert not out.exists()


def test_tokenizer_that_does_not_parse(small_dataset: Path, tmp_path: Path, out: Path) -> None:
    broken = tmp_path / "tokenizer.json"
    broken.write_text('{"model": {"type": "BPE", "vocab": ')
    line = _cli_error("tokenize", str(small_dataset), "-o", str(out), "--tokenizer", str(broken))
    assert line.startswith(f"Error: TokenizerError: tokenizer: {broken}: does not parse")
    assert "tokenizer.json" in line
    missing = tmp_path / "nope.json"
    with pytest.raises(tokenmill.TokenizerError, match="cannot read"):
        tokenmill.load_tokenizer(missing)
    assert issubclass(tokenmill.TokenizerError, tokenmill.ConfigError)
    assert not out.exists()


def test_exception_tree() -> None:
    for error in (
        tokenmill.SchemaError,
        tokenmill.ShardError,
        tokenmill.DataError,
        tokenmill.ConfigError,
        tokenmill.TokenizerError,
        tokenmill.InternalError,
    ):
        assert issubclass(error, tokenmill.TokenmillError)
        assert error.__module__ == "tokenmill"
    assert not issubclass(tokenmill.TokenmillError, (ValueError, RuntimeError))


def test_output_folder_must_differ_from_input(small_dataset: Path, small_tokenizer: Path) -> None:
    with pytest.raises(tokenmill.ConfigError, match="the output folder is the input's folder"):
        tokenmill.tokenize(small_dataset, small_dataset, small_tokenizer, progress=False)


def test_sample_fraction_outside_unit_interval(small_dataset: Path, out: Path) -> None:
    with pytest.raises(tokenmill.ConfigError, match=r"fraction 1\.5 is outside \[0, 1\]"):
        tokenmill.sample(small_dataset, out, 1.5, progress=False)
    with pytest.raises(tokenmill.ConfigError):
        tokenmill._core.keep_mask(
            tokenmill._core.row_keys_from_position("s", 0, 3), seed=0, fraction=-0.1
        )


def test_null_document_id_names_the_row(tmp_path: Path, out: Path) -> None:
    table = pa.table({"id": ["a", None, "c"], "text": ["x", "y", "z"]})
    source = write_shards(tmp_path / "in", {"ids.parquet": table})
    with pytest.raises(
        tokenmill.DataError, match=r"ids\.parquet: row 1: the id column 'id' is null"
    ):
        tokenmill.sample(source, out, 0.5, progress=False)


def test_negative_seed_is_a_usage_error(small_dataset: Path, out: Path) -> None:
    result = CliRunner().invoke(
        cli, ["sample", str(small_dataset), "-o", str(out), "--fraction", "0.5", "--seed", "-1"]
    )
    assert result.exit_code == 2 and "--seed" in result.output
    with pytest.raises(tokenmill.ConfigError, match="non-negative"):
        tokenmill.sample(small_dataset, out, 0.5, seed=-1, progress=False)


def test_a_named_id_column_must_exist(small_dataset: Path, out: Path) -> None:
    with pytest.raises(tokenmill.SchemaError, match="'doc_id' is missing"):
        tokenmill.sample(small_dataset, out, 0.5, id_column="doc_id", progress=False)
    assert not out.exists()


@pytest.mark.parametrize("stage", ["sample", "corrupt", "dedup", "pairs", "negatives"])
def test_every_stage_refuses_a_named_id_column_that_is_missing(
    stage: str, small_dataset: Path, small_tokenizer: Path, out: Path
) -> None:
    command = _stage_commands(small_tokenizer)[stage]
    line = _cli_error(*command, str(small_dataset), "-o", str(out), "--id-column", "doc_id")
    assert line.startswith(f"Error: SchemaError: {small_dataset / 'a.parquet'}: column 'doc_id'")
    assert "--id-column" in line
    assert not out.exists()


def _stage_commands(tokenizer: Path) -> dict[str, list[str]]:
    """Each stage's command with options that pass their own checks."""
    return {
        "tokenize": ["tokenize", "--tokenizer", str(tokenizer)],
        "sample": ["sample", "--fraction", "0.5"],
        "pack": ["pack", "--seq-len", "16"],
        "corrupt": ["corrupt", "--mode", "mlm", "--tokenizer", str(tokenizer)],
        "dedup": ["dedup"],
        "pairs": ["pairs", "--mode", "crop"],
        "negatives": ["negatives"],
    }


@pytest.mark.parametrize(
    "stage", ["tokenize", "sample", "pack", "corrupt", "dedup", "pairs", "negatives"]
)
@pytest.mark.parametrize(
    ("source", "output", "extra"),
    [
        # The audit's cases: a shard file, its own folder as -o (with and without --overwrite).
        ("small/a.parquet", "small", []),
        ("small/a.parquet", "small", ["--overwrite"]),
        ("small", "small", []),
        ("small", "small/out", []),  # inside the input's folder
        ("small", ".", []),  # contains the input's folder
        ("small/a.parquet", "small/../small/./", ["--overwrite"]),
    ],
)
def test_no_stage_writes_over_its_input(
    small_dataset: Path,
    small_tokenizer: Path,
    stage: str,
    source: str,
    output: str,
    extra: list[str],
) -> None:
    root = small_dataset.parent
    before = folder_bytes(small_dataset)
    command = _stage_commands(small_tokenizer)[stage]
    line = _cli_error(*command, str(root / source), "-o", str(root / output), *extra)
    assert "ConfigError" in line and "choose an -o outside the input's folder" in line
    assert folder_bytes(small_dataset) == before
    assert sorted(p.name for p in small_dataset.iterdir()) == ["a.parquet", "b.parquet"]


def test_corrupt_writes_beside_a_shard_file_by_default(
    small_dataset: Path, small_tokenizer: Path
) -> None:
    tokens = small_dataset.parent / "tokens"
    tokenmill.tokenize(small_dataset, tokens, small_tokenizer, progress=False)
    result = CliRunner().invoke(
        cli,
        [
            "corrupt",
            "--mode",
            "mlm",
            "--tokenizer",
            str(small_tokenizer),
            str(tokens / "a.parquet"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (small_dataset.parent / "a-mlm" / "a.parquet").is_file()
    assert sorted(p.name for p in tokens.iterdir() if p.is_file()) == [
        "a.parquet",
        "b.parquet",
        "manifest.json",
    ]


def test_a_thread_count_from_the_environment_is_capped() -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import tokenmill; print(tokenmill.num_threads())"],
        env={**os.environ, "TOKENMILL_NUM_THREADS": "100000"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert child.stdout.strip() == "1024"
    assert "TOKENMILL_NUM_THREADS=100000 is above 1024 worker threads; using 1024" in child.stderr


def test_thread_count_is_capped(tmp_path: Path) -> None:
    # Checked before the pool exists: a pool of 100,000 threads stalls the machine.
    threads = tokenmill.num_threads()
    try:
        with pytest.raises(tokenmill.ConfigError, match=r"100000 worker threads .* at most 1024"):
            tokenmill.set_num_threads(100_000)
        with pytest.raises(tokenmill.ConfigError, match=r"-1 worker threads"):
            tokenmill.set_num_threads(-1)
        assert tokenmill.num_threads() == threads
        # Refused before the command runs: its missing SOURCE is never looked at.
        line = _cli_error(
            "--threads",
            "100000",
            "sample",
            str(tmp_path / "missing"),
            "-o",
            str(tmp_path / "out"),
            "--fraction",
            "0.5",
        )
        assert line == (
            "Error: ConfigError: 100000 worker threads is outside [0, 1024]; pass --threads "
            "(or set_num_threads) of at most 1024, or 0 for one per core"
        )
    finally:
        tokenmill.set_num_threads(0)


def _craft_manifest(folder: Path, names: list[str]) -> Path:
    manifest = folder / "manifest.json"
    raw = json.loads(manifest.read_text())
    by_name = {output["name"]: output for output in raw["outputs"]}
    first = raw["outputs"][0]
    raw["outputs"] = [{**by_name.get(name, first), "name": name} for name in names]
    manifest.write_text(json.dumps(raw))
    return manifest


@pytest.mark.parametrize("entry", ["../elsewhere/a.parquet", "ABSOLUTE", "sub/a.parquet"])
def test_a_manifest_lists_only_shards_beside_it(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path, entry: str
) -> None:
    tokens = tmp_path / "tokens"
    tokenmill.tokenize(small_dataset, tokens, small_tokenizer, progress=False)
    # Real shards wherever the entry points, so only the check can stop the read.
    for folder in (tmp_path / "elsewhere", tokens / "sub"):
        folder.mkdir()
        shutil.copy(tokens / "a.parquet", folder / "a.parquet")
    entry = str(tmp_path / "elsewhere" / "a.parquet") if entry == "ABSOLUTE" else entry
    manifest = _craft_manifest(tokens, [entry, "b.parquet"])
    line = _cli_error("pack", str(tokens), "-o", str(tmp_path / "packed"), "--seq-len", "16")
    assert line == (
        f"Error: ShardError: {manifest}: output {entry!r} is not a file name in the manifest's "
        "folder, so reading it would leave the dataset; rerun the stage that made this folder, "
        "or delete manifest.json to read its shards"
    )
    assert not (tmp_path / "packed").exists()


def test_a_manifest_lists_each_shard_once(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokenmill.tokenize(small_dataset, tokens, small_tokenizer, progress=False)
    manifest = _craft_manifest(tokens, ["a.parquet", "a.parquet", "b.parquet"])
    with pytest.raises(tokenmill.ShardError) as caught:
        tokenmill.open_dataset(tokens)
    assert str(caught.value) == (
        f"{manifest}: output 'a.parquet' is listed twice, so its rows would be read twice; "
        "rerun the stage that made this folder, or delete manifest.json to read its shards"
    )


def test_dedup_refuses_a_shard_named_like_its_cluster_report(
    small_dataset: Path, tmp_path: Path, out: Path
) -> None:
    (small_dataset / "b.parquet").rename(small_dataset / "clusters.parquet")
    line = _cli_error("dedup", str(small_dataset), "-o", str(out))
    assert line == (
        f"Error: ConfigError: {small_dataset / 'clusters.parquet'}: the shard's output would "
        "overwrite dedup's cluster report clusters.parquet; rename the shard, or pass "
        "--format arrow"
    )
    assert not out.exists()
    report = tokenmill.dedup(small_dataset, out, fmt="arrow", progress=False)
    assert report.run.complete and (out / "clusters.arrow").is_file()
    assert pq.read_table(out / "clusters.parquet").column_names[:2] == ["shard", "row"]


def test_files_of_the_user_in_the_output_folder_are_kept(
    small_dataset: Path, small_tokenizer: Path, out: Path
) -> None:
    out.mkdir()
    (out / "a.parquet").write_bytes(b"the user's own a.parquet")
    (out / "notes.txt").write_text("kept\n")
    before = folder_bytes(out)
    tokenize = ["tokenize", str(small_dataset), "-o", str(out), "--tokenizer", str(small_tokenizer)]
    line = _cli_error(*tokenize)
    assert line == (
        f"Error: ConfigError: {out}: a.parquet would be replaced, but no tokenmill run wrote "
        "them (no record in .tokenmill/); move them away, choose another -o, or pass "
        "--overwrite to replace them"
    )
    assert folder_bytes(out) == before
    result = CliRunner().invoke(cli, [*tokenize, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "input_ids" in pq.read_table(out / "a.parquet").column_names
    assert (out / "notes.txt").read_text() == "kept\n"

    # dedup's report and a manifest that tokenmill did not write are the user's too.
    for name, text in (("clusters.parquet", "my clusters"), ("manifest.json", '{"mine": 1}')):
        elsewhere = out.parent / name.split(".")[0]
        elsewhere.mkdir()
        (elsewhere / name).write_text(text)
        line = _cli_error("dedup", str(small_dataset), "-o", str(elsewhere))
        assert line.startswith(f"Error: ConfigError: {elsewhere}: {name} would be replaced")
        assert folder_bytes(elsewhere) == {name: text.encode()}


@pytest.mark.parametrize(
    ("option", "value"), [("--seq-len", "99999999999"), ("--buffer", "99999999999999999999")]
)
def test_pack_bounds_integers_it_hands_to_rust(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path, option: str, value: str
) -> None:
    tokens = tmp_path / "tokens"
    tokenmill.tokenize(small_dataset, tokens, small_tokenizer, progress=False)
    out = tmp_path / "packed"
    args = ["pack", str(tokens), "-o", str(out), "--seq-len", "16", option, value]
    line = _cli_error(*args)
    assert line.startswith(f"Error: ConfigError: {option} {value} is not in [1, ")
    assert not out.exists()


def test_null_text_is_an_error_or_skipped(tmp_path: Path, small_tokenizer: Path, out: Path) -> None:
    table = pa.table({"id": ["a", "b", "c"], "text": ["some words", None, "more words"]})
    source = write_shards(tmp_path / "in", {"n.parquet": table})
    args = ["tokenize", str(source), "-o", str(out), "--tokenizer", str(small_tokenizer)]
    line = _cli_error(*args)
    assert line == (
        f"Error: DataError: {source / 'n.parquet'}: row 1: column 'text' is null here; "
        "drop or fill null rows, or pass --nulls skip"
    )
    assert not out.exists()
    result = CliRunner().invoke(cli, [*args, "--nulls", "skip"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["rows_null"] == 1 and manifest["params"]["nulls"] == "skip"
    assert pq.read_table(out / "n.parquet").column("id").to_pylist() == ["a", "c"]


def test_a_bad_row_after_skipped_nulls_is_named_as_read(
    tmp_path: Path, small_tokenizer: Path
) -> None:
    """tokenize and pairs see the batch without its null rows; an error
    after a dropped row names the shard's row, as the other stages do."""
    texts = pa.array([b"one two", None, b"three", b"\xff\xfe bad", b"x"], pa.binary())
    source = write_shards(tmp_path / "in", {"n.parquet": pa.table({"text": texts})})
    with pytest.raises(tokenmill.DataError, match="row 3: ") as err:
        tokenmill.tokenize(source, tmp_path / "t", small_tokenizer, nulls="skip", progress=False)
    assert err.value.row == 3
    documents = pa.array(["One. Two.", None, "One sentence only", "Three. Four."])
    source = write_shards(tmp_path / "docs", {"d.parquet": pa.table({"text": documents})})
    with pytest.raises(tokenmill.DataError, match="row 2: ") as err:
        tokenmill.pairs(source, tmp_path / "p", mode="ict", nulls="skip", progress=False)
    assert err.value.row == 2


def test_fixes_name_only_options_the_command_takes(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from tokenmill.objectives import build_corruptor

    vocab = {"[UNK]": 0, "[MASK]": 1, "hello": 2, "world": 3, ".": 4}
    reference = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    reference.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "words.json"
    reference.save(str(path))
    source = write_shards(tmp_path / "in", {"a.parquet": pa.table({"text": ["hello world ."]})})
    # No end-of-document token: corrupt tokenizes on the fly, and takes no --no-eos itself.
    line = _cli_error(
        "corrupt", "--mode", "mlm", "--tokenizer", str(path), str(source), "-o", str(tmp_path / "o")
    )
    assert "tokenize the text first with `tokenmill tokenize --eos-token TOKEN`" in line
    # UL2's mode tokens have no option naming them.
    sentinels = {f"<extra_id_{i}>": len(vocab) + 1 + i for i in range(100)}
    ul2 = Tokenizer(models.WordLevel({**vocab, "</s>": len(vocab), **sentinels}, unk_token="[UNK]"))
    ul2.save(str(tmp_path / "ul2.json"))
    with pytest.raises(tokenmill.TokenizerError) as caught:
        build_corruptor("ul2", tmp_path / "ul2.json")
    assert "--mode-token" not in str(caught.value)
    assert str(caught.value).endswith("use a tokenizer that has one")


def test_no_room_to_write_names_the_shard(small_dataset: Path, small_tokenizer: Path) -> None:
    """The kernel refuses writes past RLIMIT_FSIZE with EFBIG, as a full disk
    refuses them with ENOSPC: one line naming the shard, no partial file."""
    out = small_dataset.parent / "out"
    script = (
        "import resource, signal, sys\n"
        "from tokenmill_cli.main import cli\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))\n"
        "cli(sys.argv[1:])\n"
    )
    command = ["tokenize", str(small_dataset), "-o", str(out), "--tokenizer", str(small_tokenizer)]
    child = subprocess.run(
        [sys.executable, "-c", script, *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 1, child.stderr
    lines = [line for line in (child.stdout + child.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"Error: ShardError: {out / 'a.parquet'}: no room to write")
    assert not out.exists() or not list(out.rglob("*.tmp"))


_NULL_TEXTS = ["some words here", None, "more words in this one", "and the last words"]


@pytest.mark.parametrize("stage", ["pairs", "corrupt"])
@pytest.mark.parametrize("column", ["text", "input_ids"])
def test_null_documents_are_an_error_or_skipped(
    stage: str, column: str, tmp_path: Path, small_tokenizer: Path
) -> None:
    """As for tokenize: a null text or token row stops the stage naming the
    row, or with --nulls skip is dropped, counted, and moves no other row's
    draws (rows are keyed by `id`, so the output equals a run without it)."""
    if column == "text":
        documents: pa.Array = pa.array(_NULL_TEXTS)
    else:
        tokens = [None if t is None else [5 + len(w) for w in t.split()] for t in _NULL_TEXTS]
        documents = pa.array(tokens, pa.list_(pa.uint32()))
    table = pa.table({"id": ["a", "b", "c", "d"], column: documents})
    source = write_shards(tmp_path / "in", {"n.parquet": table})
    clean = write_shards(tmp_path / "clean", {"n.parquet": table.take([0, 2, 3])})
    command = _stage_commands(small_tokenizer)[stage]

    def args(src: Path, out: Path) -> list[str]:
        return [command[0], str(src), "-o", str(out), *command[1:]]

    out = tmp_path / "out"
    line = _cli_error(*args(source, out))
    assert line == (
        f"Error: DataError: {source / 'n.parquet'}: row 1: column '{column}' is null here; "
        "drop or fill null rows, or pass --nulls skip"
    )
    assert not out.exists()
    result = CliRunner().invoke(cli, [*args(source, out), "--nulls", "skip"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["rows_null"] == 1 and manifest["params"]["nulls"] == "skip"
    written = pq.read_table(out / "n.parquet")
    assert written.column("id").to_pylist() == ["a", "c", "d"]
    expected = tmp_path / "expected"
    result = CliRunner().invoke(cli, args(clean, expected))
    assert result.exit_code == 0, result.output
    assert written.equals(pq.read_table(expected / "n.parquet"))


@pytest.mark.parametrize(
    ("method", "column"), [("exact", "text"), ("exact", "input_ids"), ("minhash", "text")]
)
def test_dedup_null_documents_are_an_error_or_skipped(
    method: str, column: str, tmp_path: Path
) -> None:
    """As for tokenize: exact dedup no longer joins every null document into
    one cluster and keeps the first; a null is an error, or skipped and counted."""
    texts = ["some words here", None, "more words in this one", None, "some words here"]
    if column == "text":
        documents: pa.Array = pa.array(texts)
    else:
        tokens = [None if t is None else [5 + len(w) for w in t.split()] for t in texts]
        documents = pa.array(tokens, pa.list_(pa.uint32()))
    table = pa.table({"id": ["a", "b", "c", "d", "e"], column: documents})
    source = write_shards(tmp_path / "in", {"n.parquet": table})
    clean = write_shards(tmp_path / "clean", {"n.parquet": table.take([0, 2, 4])})

    def args(src: Path, out: Path) -> list[str]:
        return ["dedup", str(src), "-o", str(out), "--method", method, "--ngram", "2"]

    out = tmp_path / "out"
    line = _cli_error(*args(source, out))
    assert line == (
        f"Error: DataError: {source / 'n.parquet'}: row 1: column '{column}' is null here; "
        "drop or fill null rows, or pass --nulls skip"
    )
    assert not out.exists()
    result = CliRunner().invoke(cli, [*args(source, out), "--nulls", "skip"])
    assert result.exit_code == 0, result.output
    assert "5 documents in, 2 out (1 duplicates removed)" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["rows_null"] == 2 and manifest["params"]["nulls"] == "skip"
    written = pq.read_table(out / "n.parquet")
    assert written.column("id").to_pylist() == ["a", "c"]
    clusters = pq.read_table(out / "clusters.parquet")
    assert clusters.column("row").to_pylist() == [0, 4]
    expected = tmp_path / "expected"
    result = CliRunner().invoke(cli, args(clean, expected))
    assert result.exit_code == 0, result.output
    assert written.equals(pq.read_table(expected / "n.parquet"))


@pytest.mark.parametrize("strategy", ["random", "bm25"])
def test_negatives_null_rows_are_an_error_or_skipped(strategy: str, tmp_path: Path) -> None:
    """A null positive was handed out as other rows' negative (random); now
    a null query or positive stops the stage naming it, or is skipped and
    counted, and no negative is null."""
    table = pa.table(
        {
            "id": ["a", "b", "c", "d", "e"],
            "query": ["red fox", "lazy dog", "green owl", None, "blue bee"],
            "positive": ["a red fox runs", None, "a green owl hoots", "a cat", "a blue bee"],
        }
    )
    source = write_shards(tmp_path / "in", {"n.parquet": table})
    clean = write_shards(tmp_path / "clean", {"n.parquet": table.take([0, 2, 4])})

    def args(src: Path, out: Path) -> list[str]:
        return ["negatives", str(src), "-o", str(out), "--strategy", strategy]

    out = tmp_path / "out"
    line = _cli_error(*args(source, out), "--num-negatives", "2")
    assert line == (
        f"Error: DataError: {source / 'n.parquet'}: row 1: column 'positive' is null here; "
        "drop or fill null rows, or pass --nulls skip"
    )
    assert not out.exists()
    result = CliRunner().invoke(
        cli, [*args(source, out), "--num-negatives", "2", "--nulls", "skip"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["rows_null"] == 2 and manifest["params"]["nulls"] == "skip"
    written = pq.read_table(out / "n.parquet")
    assert written.column("id").to_pylist() == ["a", "c", "e"]
    assert all(None not in negatives for negatives in written.column("negatives").to_pylist())
    expected = tmp_path / "expected"
    result = CliRunner().invoke(cli, [*args(clean, expected), "--num-negatives", "2"])
    assert result.exit_code == 0, result.output
    assert written.equals(pq.read_table(expected / "n.parquet"))
    # Three rows left: three negatives per row is more than the corpus holds.
    line = _cli_error(*args(source, tmp_path / "o3"), "--num-negatives", "3", "--nulls", "skip")
    assert line.startswith("Error: ConfigError: ") and "the corpus has 3 positive(s)" in line


@pytest.mark.parametrize("batch_size", ["2048", "5"])
def test_corrupt_with_input_length_names_the_input_row(
    batch_size: str, tmp_path: Path, small_tokenizer: Path, out: Path
) -> None:
    """One line naming the input shard's row, whatever the batch size and
    however --input-length cut and joined the rows."""
    vocab = tokenmill.load_tokenizer(small_tokenizer).vocab_size
    rows = [[5 + i % 7] * 7 for i in range(40)]
    rows[23][3] = vocab
    source = write_shards(
        tmp_path / "in",
        {"s.parquet": pa.table({"input_ids": pa.array(rows, pa.list_(pa.uint32()))})},
    )
    args = ["corrupt", str(source), "-o", str(out), "--mode", "span"]
    args += [
        "--tokenizer",
        str(small_tokenizer),
        "--input-length",
        "16",
        "--batch-size",
        batch_size,
    ]
    line = _cli_error(*args)
    assert line == (
        f"Error: DataError: {source / 's.parquet'}: row 23: token id {vocab} is outside the "
        f"vocabulary of {vocab}; pass the tokenizer the data was tokenized with"
    )


def test_corrupt_seeds_past_u64_are_a_config_error(small_tokenizer: Path, tmp_path: Path) -> None:
    """Seeds and epochs of 2^64 reached the kernels as a bare OverflowError."""
    with pytest.raises(tokenmill.ConfigError, match="--seed 18446744073709551616 is not"):
        tokenmill.CorruptStage("mlm", small_tokenizer, seed=2**64)
    with pytest.raises(tokenmill.ConfigError, match="epoch -1 is not"):
        tokenmill.MLMCollator(small_tokenizer, epoch=-1)
    collator = tokenmill.MLMCollator(small_tokenizer)
    with pytest.raises(tokenmill.ConfigError, match="epoch 18446744073709551616 is not"):
        collator.set_epoch(2**64)
