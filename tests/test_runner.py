from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tokenmill
from tokenmill.dataset import ReadAhead, open_dataset
from tokenmill.manifest import Manifest
from tokenmill.writer import ShardWriter

from .conftest import folder_bytes, holding_locks, write_shards


def test_manifest_records_stage_params_inputs_and_outputs(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    report = tokenmill.tokenize(small_dataset, tmp_path / "out", small_tokenizer, progress=False)
    manifest = Manifest.load(tmp_path / "out" / "manifest.json")
    assert manifest.stage == "tokenize"
    assert manifest.tool_version == tokenmill.__version__
    assert manifest.params["tokenizer"] == str(small_tokenizer.resolve())
    assert manifest.params["eos_id"] == 2
    assert [s.name for s in manifest.inputs] == ["a.parquet", "b.parquet"]
    for shard in manifest.inputs:
        assert shard.bytes == (small_dataset / shard.name).stat().st_size
        assert shard.checksum == tokenmill._core.file_checksum(small_dataset / shard.name)
    table = open_dataset(tmp_path / "out").to_table()
    assert sum(o.rows for o in manifest.outputs) == table.num_rows == 20
    assert (
        manifest.totals["tokens"]
        == report.tokens
        == sum(len(r) for r in table.column("input_ids").to_pylist())
    )
    assert [o.input for o in manifest.outputs] == ["a.parquet", "b.parquet"]


def test_rerun_skips_finished_shards_and_overwrite_redoes_them(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = tokenmill.tokenize(small_dataset, out, small_tokenizer, progress=False)
    assert first.written == ["a.parquet", "b.parquet"] and first.skipped == []
    before = folder_bytes(out)
    again = tokenmill.tokenize(small_dataset, out, small_tokenizer, progress=False)
    assert again.written == [] and again.skipped == ["a.parquet", "b.parquet"]
    assert again.complete
    redo = tokenmill.tokenize(small_dataset, out, small_tokenizer, overwrite=True, progress=False)
    assert redo.written == ["a.parquet", "b.parquet"]
    assert folder_bytes(out) == before


def test_a_changed_input_shard_is_redone(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    tokenmill.tokenize(small_dataset, out, small_tokenizer, progress=False)
    pq.write_table(
        pa.table({"id": ["x"], "text": ["changed"], "lang": ["en"]}), small_dataset / "b.parquet"
    )
    report = tokenmill.tokenize(small_dataset, out, small_tokenizer, progress=False)
    assert report.written == ["b.parquet"] and report.skipped == ["a.parquet"]
    assert pq.read_table(out / "b.parquet").num_rows == 1


def test_different_parameters_refuse_to_mix(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    tokenmill.tokenize(small_dataset, out, small_tokenizer, progress=False)
    with pytest.raises(tokenmill.ConfigError, match="--overwrite"):
        tokenmill.tokenize(small_dataset, out, small_tokenizer, eos=False, progress=False)
    report = tokenmill.tokenize(
        small_dataset, out, small_tokenizer, eos=False, overwrite=True, progress=False
    )
    assert report.complete
    assert Manifest.load(out / "manifest.json").params["eos_id"] is None


def test_shard_subsets_write_the_manifest_when_the_last_one_is_done(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    part = tokenmill.tokenize(
        small_dataset, out, small_tokenizer, shards=["b.parquet"], progress=False
    )
    assert not part.complete and not (out / "manifest.json").exists()
    rest = tokenmill.tokenize(
        small_dataset, out, small_tokenizer, shards=["a.parquet"], progress=False
    )
    assert rest.complete and (out / "manifest.json").exists()
    with pytest.raises(tokenmill.ConfigError, match="no shard named"):
        tokenmill.tokenize(
            small_dataset, out, small_tokenizer, shards=["c.parquet"], progress=False
        )


def test_a_failing_shard_leaves_no_partial_file(small_tokenizer: Path, tmp_path: Path) -> None:
    good = pa.table({"text": pa.array([b"fine"] * 10, type=pa.binary())})
    bad = pa.table(
        {"text": pa.array([b"fine"] * 5 + [b"\xff bad"] + [b"fine"] * 4, type=pa.binary())}
    )
    source = write_shards(tmp_path / "in", {"a.parquet": good, "b.parquet": bad})
    out = tmp_path / "out"
    with pytest.raises(tokenmill.DataError) as caught:
        tokenmill.tokenize(source, out, small_tokenizer, batch_size=3, progress=False)
    assert caught.value.row == 5
    assert f"{source / 'b.parquet'}: row 5:" in str(caught.value)
    # The finished shard stays for a resume; the failed one left nothing behind.
    assert sorted(p.name for p in out.iterdir()) == [".tokenmill", "a.parquet"]
    assert sorted(p.name for p in (out / ".tokenmill").iterdir()) == ["a.parquet.json"]


def _tokenize_cli(source: Path, out: Path, tokenizer: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tokenmill_cli",
        "tokenize",
        str(source),
        "-o",
        str(out),
        "--tokenizer",
        str(tokenizer),
        "--no-progress",
        *extra,
    ]


def _finished_records(out: Path) -> list[Path]:
    """The shards' records written after their file (the one before holds no output)."""
    records = (out / ".tokenmill").glob("*.json")
    return [r for r in records if "output" in json.loads(r.read_text())]


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_output(
    pydocs: Path, pydocs_tokenizer: Path, tmp_path: Path
) -> None:
    docs = open_dataset(pydocs).to_table()
    half = docs.num_rows // 2
    shards = {}
    for i in range(8):
        piece = docs.slice(0, half) if i % 2 == 0 else docs.slice(half)
        ids = pa.array([f"{i}/{x}" for x in piece.column("id").to_pylist()])
        shards[f"part-{i}.parquet"] = piece.set_column(0, "id", ids)
    source = write_shards(tmp_path / "in", shards)

    reference = tmp_path / "reference"
    subprocess.run(_tokenize_cli(source, reference, pydocs_tokenizer), check=True)

    out = tmp_path / "out"
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    victim = subprocess.Popen(_tokenize_cli(source, out, pydocs_tokenizer), env=env)
    deadline = time.monotonic() + 120
    while len(_finished_records(out)) < 2:
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it was killed"

    resumed = subprocess.run(
        _tokenize_cli(source, out, pydocs_tokenizer), check=True, capture_output=True, text=True
    )
    skipped = int(resumed.stderr.split(" skipped")[0].rsplit(" ", 1)[-1])
    assert skipped >= 2
    assert folder_bytes(out) == folder_bytes(reference)
    assert not list(out.glob(".*.tmp"))
    assert json.loads((out / "manifest.json").read_text())["totals"]["shards"] == 8


def test_overwriting_one_shard_keeps_the_others(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    tokenmill.tokenize(small_dataset, out, small_tokenizer, progress=False)
    before = folder_bytes(out)
    redo = tokenmill.tokenize(
        small_dataset, out, small_tokenizer, shards=["b.parquet"], overwrite=True, progress=False
    )
    assert redo.written == ["b.parquet"] and redo.complete
    assert folder_bytes(out) == before


def test_an_output_made_but_not_yet_recorded_is_its_runs_own(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    tokenmill.tokenize(small_dataset, out, small_tokenizer, progress=False)
    reference = folder_bytes(out)
    # As a run killed after renaming a.parquet into place leaves it: the
    # record written before the file, not yet the one after it.
    record = out / ".tokenmill" / "a.parquet.json"
    done = json.loads(record.read_text())
    record.write_text(json.dumps({k: done[k] for k in ("fingerprint", "input_checksum")}))
    (out / "manifest.json").unlink()
    resumed = tokenmill.tokenize(small_dataset, out, small_tokenizer, progress=False)
    assert resumed.written == ["a.parquet"] and resumed.skipped == ["b.parquet"]
    assert folder_bytes(out) == reference


def _lock_message(out: Path, pid: int, name: str) -> str:
    return (
        f"{out}: another tokenmill run (PID {pid}) is writing {name} in this folder; wait for "
        "it to finish, or choose another -o (runs over disjoint --shard sets may share one)"
    )


def test_runs_that_would_write_one_shard_exclude_each_other(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with holding_locks(out, "a.parquet") as holder:
        with pytest.raises(tokenmill.ConfigError) as caught:
            tokenmill.tokenize(small_dataset, out, small_tokenizer, progress=False)
        assert str(caught.value) == _lock_message(out, holder.pid, "a.parquet")
        # Disjoint shards share the folder on purpose.
        part = tokenmill.tokenize(
            small_dataset, out, small_tokenizer, shards=["b.parquet"], progress=False
        )
        assert part.written == ["b.parquet"]
    assert holder.returncode == 0
    # A holder killed outright leaves its lock file, which blocks nobody.
    with holding_locks(out, "a.parquet") as killed:
        killed.kill()
    assert (out / ".tokenmill" / "a.parquet.lock").exists()
    rest = tokenmill.tokenize(small_dataset, out, small_tokenizer, progress=False)
    assert rest.written == ["a.parquet"] and rest.skipped == ["b.parquet"] and rest.complete
    assert not list((out / ".tokenmill").glob("*.lock"))


@pytest.mark.slow
def test_two_identical_runs_at_once(pydocs: Path, small_tokenizer: Path, tmp_path: Path) -> None:
    docs = open_dataset(pydocs).to_table()
    source = write_shards(tmp_path / "in", {"docs.parquet": pa.concat_tables([docs, docs])})
    out = tmp_path / "out"
    command = _tokenize_cli(source, out, small_tokenizer)
    env = dict(os.environ, RAYON_NUM_THREADS="1")  # seconds per shard, time for the second
    first = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob(".docs.parquet.*.tmp")):
        assert first.poll() is None, "the first run ended before the second could start"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    _, first_errors = first.communicate(timeout=120)
    assert first.returncode == 0, first_errors
    assert second.returncode == 1, second.stderr
    assert second.stderr == (
        f"Error: ConfigError: {_lock_message(out, first.pid, 'docs.parquet')}\n"
    )
    assert json.loads((out / "manifest.json").read_text())["totals"]["rows"] == 2 * len(docs)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.lock"))


def test_read_ahead_gives_each_shard_its_batches_and_drops_what_is_skipped(
    tmp_path: Path,
) -> None:
    tables = {
        f"{name}.parquet": pa.table({"text": [f"{name}{i}" for i in range(rows)]})
        for name, rows in (("a", 5), ("b", 1), ("c", 7), ("d", 3))
    }
    dataset = open_dataset(write_shards(tmp_path / "in", tables))
    read_ahead = ReadAhead(dataset.shards, batch_size=2)
    try:
        a, b, c, d = dataset.shards
        for shard in (a, c, d):  # b is never asked for, as a resume skips a finished shard
            got = [batch.column("text").to_pylist() for batch in read_ahead.batches(shard)]
            expected = tables[shard.name].column("text").to_pylist()
            assert got == [expected[i : i + 2] for i in range(0, len(expected), 2)]
        # Asking for a shard behind the ones already read is an out-of-order run: allowed.
        assert [t.num_rows for t in read_ahead.batches(b)] == [1]
    finally:
        read_ahead.close()
    with pytest.raises(RuntimeError, match="after close"):
        read_ahead.batches(dataset.shards[0])


def test_a_read_error_ahead_is_raised_for_its_own_shard(
    small_tokenizer: Path, tmp_path: Path
) -> None:
    good = pa.table({"text": [f"fine text number {i}" for i in range(2000)]})
    source = write_shards(tmp_path / "in", {name: good for name in ("a.parquet", "b.parquet")})
    # Its footer and schema are whole, so the run starts; its data pages are not,
    # so reading it fails while a.parquet, read before it, is being tokenized.
    damaged = bytearray((source / "b.parquet").read_bytes())
    damaged[64:1024] = bytes(960)
    (source / "b.parquet").write_bytes(bytes(damaged))
    out = tmp_path / "out"
    with pytest.raises(tokenmill.ShardError, match=r"b\.parquet: cannot read shard"):
        tokenmill.tokenize(source, out, small_tokenizer, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".tokenmill", "a.parquet"]


def test_the_writer_thread_raises_its_error_and_writes_groups_in_order(tmp_path: Path) -> None:
    schema = pa.schema([("x", pa.int64())])
    path = tmp_path / "out.parquet"
    writer = ShardWriter(path, schema, "parquet", row_group_rows=3)
    for start in range(0, 10, 2):
        writer.write(pa.record_batch([pa.array(range(start, start + 2))], schema=schema))
    writer.close()
    parquet = pq.ParquetFile(path)
    assert [parquet.metadata.row_group(i).num_rows for i in range(4)] == [3, 3, 3, 1]
    assert parquet.read().column("x").to_pylist() == list(range(10))

    # A write that fails on the thread (the disk filled up) surfaces in the
    # caller at its next write, not silently.
    broken = ShardWriter(tmp_path / "broken.parquet", schema, "parquet", row_group_rows=1)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    broken._writer.write_table = full_disk
    broken.write(pa.record_batch([pa.array([1])], schema=schema))
    with pytest.raises(OSError, match="No space left"):
        broken.write(pa.record_batch([pa.array([2])], schema=schema))
    broken.close()
