from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import datasketch
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from datasketch.lsh import _optimal_param

import tokenmill
from tokenmill import minhash
from tokenmill.dataset import open_dataset
from tokenmill.stages.dedup import DedupOptions, dedup_report_lines
from tokenmill_cli.main import cli

from .conftest import folder_bytes, holding_locks, long_token_row, peak_memory_used, write_shards

THRESHOLD = 0.8


@pytest.fixture(scope="module")
def licenses(request: pytest.FixtureRequest) -> tuple[Path, list[str], list[np.ndarray]]:
    from .conftest import corpus

    path = corpus("licenses")
    texts = open_dataset(path).to_table().column("text").to_pylist()
    sets = [minhash.shingle_set(t) for t in texts]
    return path, texts, sets


def _brute_force_pairs(sets: list[np.ndarray], threshold: float) -> set[tuple[int, int]]:
    """Every pair at Jaccard >= threshold, by Python set arithmetic."""
    as_sets = [set(s.tolist()) for s in sets]
    order = sorted(range(len(sets)), key=lambda i: len(as_sets[i]))
    found = set()
    for position, i in enumerate(order):
        a = as_sets[i]
        for j in order[position + 1 :]:
            b = as_sets[j]
            if len(a) < threshold * len(b):
                break  # J <= |a| / |b| for every later, larger b
            both = len(a & b)
            union = len(a) + len(b) - both
            if (union and both / union >= threshold) or not (a or b):
                found.add((min(i, j), max(i, j)))
    return found


def test_precision_and_recall_against_brute_force_on_licenses(licenses) -> None:
    _, texts, sets = licenses
    truth = {p for p in _brute_force_pairs(sets, THRESHOLD) if len(sets[p[0]]) and len(sets[p[1]])}
    signatures, _ = minhash.signatures(pa.array(texts))
    bands, rows = minhash.optimal_bands(THRESHOLD, 128)
    pairs = minhash.candidate_pairs(minhash.band_keys(signatures, bands, rows))
    similar = pairs[minhash.estimated_jaccard(signatures, pairs) >= THRESHOLD]
    found = {(int(a), int(b)) for a, b in similar}
    true_positives = len(found & truth)
    precision = true_positives / len(found)
    recall = true_positives / len(truth)
    print(f"pairs at J>={THRESHOLD}: {len(truth)}; precision {precision:.4f} recall {recall:.4f}")
    assert len(truth) > 1000
    assert precision >= 0.95
    assert recall >= 0.95


def test_dedup_clusters_join_brute_force_pairs(licenses, tmp_path: Path) -> None:
    path, _, sets = licenses
    truth = _brute_force_pairs(sets, THRESHOLD)
    report = tokenmill.dedup(path, tmp_path / "out", progress=False)
    table = pq.read_table(tmp_path / "out" / "clusters.parquet")
    assert set(table.column("shard").to_pylist()) == {"part-00000.parquet"}  # rows are global
    cluster_of = dict(
        zip(table.column("row").to_pylist(), table.column("cluster").to_pylist(), strict=True)
    )
    joined = sum(1 for a, b in truth if cluster_of.get(a, a) == cluster_of.get(b, b))
    assert joined / len(truth) >= 0.95
    kept = open_dataset(tmp_path / "out").num_rows
    assert kept == report.summary.documents_out == 711 - report.summary.duplicates_removed
    # One document per cluster stays, the first one.
    by_cluster: dict[int, list[tuple[int, bool]]] = {}
    for row, cluster, was_kept in zip(
        table.column("row").to_pylist(),
        table.column("cluster").to_pylist(),
        table.column("kept").to_pylist(),
        strict=True,
    ):
        by_cluster.setdefault(cluster, []).append((row, was_kept))
    assert len(by_cluster) == report.summary.clusters
    for cluster, members in by_cluster.items():
        assert [row for row, k in members if k] == [cluster] == [min(r for r, _ in members)]


def test_estimates_match_exact_jaccard_and_datasketch(licenses) -> None:
    _, texts, sets = licenses
    rng = np.random.default_rng(0)
    signatures, _ = minhash.signatures(pa.array(texts))
    picks = [tuple(p) for p in rng.integers(0, len(texts), size=(300, 2)) if p[0] != p[1]]
    # Add near pairs too, where the estimate matters.
    picks += [(i, i + 1) for i in range(0, 600, 5)]
    ours, theirs, exact = [], [], []
    sketches: dict[int, datasketch.MinHash] = {}
    for i in {i for pair in picks for i in pair}:
        sketch = datasketch.MinHash(num_perm=128, seed=1)
        sketch.update_batch([int(h).to_bytes(8, "little") for h in sets[i]])
        sketches[i] = sketch
    for a, b in picks:
        if not len(sets[a]) or not len(sets[b]):
            continue
        exact.append(minhash.exact_jaccard(sets[a], sets[b]))
        ours.append(float((signatures[a] == signatures[b]).mean()))
        theirs.append(sketches[a].jaccard(sketches[b]))
    exact_a, ours_a, theirs_a = map(np.array, (exact, ours, theirs))
    sigma = np.sqrt(exact_a * (1 - exact_a) / 128) + 1e-9
    assert np.mean(np.abs(ours_a - exact_a) <= 3 * sigma + 1 / 128) >= 0.99
    assert abs(np.mean(ours_a - exact_a)) < 0.01  # unbiased
    assert np.mean(np.abs(ours_a - exact_a)) <= 1 / np.sqrt(128)
    # datasketch estimates the same quantity with the same error.
    assert np.mean(np.abs(ours_a - theirs_a) <= 3 * np.sqrt(2) * sigma + 2 / 128) >= 0.99
    assert abs(np.mean(np.abs(ours_a - exact_a)) - np.mean(np.abs(theirs_a - exact_a))) < 0.01


def test_band_choice_matches_datasketch() -> None:
    for num_perm, threshold in itertools.product((64, 128, 256), (0.5, 0.7, 0.8, 0.9)):
        assert minhash.optimal_bands(threshold, num_perm) == _optimal_param(
            threshold, num_perm, 0.5, 0.5
        ), (num_perm, threshold)


def test_exact_dedup_follows_normalization(tmp_path: Path) -> None:
    texts = ["Hello  World", "hello world", "Hello, world!", "other", "hello world"]
    source = write_shards(
        tmp_path / "in", {"a.parquet": pa.table({"id": list("abcde"), "text": texts})}
    )
    default = tokenmill.dedup(source, tmp_path / "d", DedupOptions(method="exact"), progress=False)
    assert open_dataset(tmp_path / "d").to_table().column("id").to_pylist() == ["a", "c", "d"]
    assert (default.summary.clusters, default.summary.largest_cluster) == (1, 3)
    strict = DedupOptions(method="exact", strip_punctuation=True)
    tokenmill.dedup(source, tmp_path / "s", strict, progress=False)
    assert open_dataset(tmp_path / "s").to_table().column("id").to_pylist() == ["a", "d"]
    verbatim = DedupOptions(method="exact", lowercase=False, collapse_whitespace=False)
    tokenmill.dedup(source, tmp_path / "v", verbatim, progress=False)
    assert open_dataset(tmp_path / "v").to_table().column("id").to_pylist() == list("abcd")


def test_exact_dedup_over_token_ids(tmp_path: Path) -> None:
    ids = pa.array([[1, 2, 3], [1, 2], [1, 2, 3], []], type=pa.list_(pa.uint32()))
    source = write_shards(tmp_path / "in", {"t.parquet": pa.table({"input_ids": ids})})
    report = tokenmill.dedup(source, tmp_path / "out", DedupOptions(method="exact"), progress=False)
    assert report.summary.duplicates_removed == 1
    kept = open_dataset(tmp_path / "out").to_table().column("input_ids").to_pylist()
    assert kept == [[1, 2, 3], [1, 2], []]


def test_keep_longest_and_short_documents(tmp_path: Path) -> None:
    base = "one two three four five six seven eight nine ten eleven twelve"
    texts = [base, base + " thirteen", "tiny", "too short", base]
    source = write_shards(tmp_path / "in", {"a.parquet": pa.table({"text": texts})})
    options = DedupOptions(threshold=0.7, keep="longest", ngram=3)
    report = tokenmill.dedup(source, tmp_path / "out", options, progress=False)
    assert open_dataset(tmp_path / "out").to_table().column("text").to_pylist() == [
        base + " thirteen",
        "tiny",
        "too short",
    ]
    assert report.summary.too_short == 2
    assert report.summary.largest_cluster == 3


def test_spilling_buckets_to_disk_changes_nothing(licenses, tmp_path: Path) -> None:
    path, _, _ = licenses
    tokenmill.dedup(path, tmp_path / "memory", progress=False)
    spilled = tokenmill.dedup(
        path, tmp_path / "disk", DedupOptions(memory_budget=8192), progress=False
    )
    assert spilled.summary.spilled_partitions > 1
    # Only the manifest differs: it records the memory budget's effect, the spill count.
    memory, disk = folder_bytes(tmp_path / "memory"), folder_bytes(tmp_path / "disk")
    for name in ("part-00000.parquet", "clusters.parquet"):
        assert memory[name] == disk[name]


def test_exact_verification_agrees_with_brute_force(licenses, tmp_path: Path) -> None:
    path, _, sets = licenses
    truth = _brute_force_pairs(sets, THRESHOLD)
    report = tokenmill.dedup(path, tmp_path / "out", DedupOptions(verify="exact"), progress=False)
    table = pq.read_table(tmp_path / "out" / "clusters.parquet")
    cluster_of = dict(
        zip(table.column("row").to_pylist(), table.column("cluster").to_pylist(), strict=True)
    )
    assert sum(cluster_of.get(a, a) == cluster_of.get(b, b) for a, b in truth) / len(truth) >= 0.95
    assert report.summary.pairs_joined > 0


def _dedup_cli(threads: int, source: Path, out: Path, *extra: str) -> None:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENMILL_PROGRESS="0")
    subprocess.run(
        [sys.executable, "-m", "tokenmill_cli", "dedup", str(source), "-o", str(out), *extra],
        check=True,
        env=env,
        capture_output=True,
    )


@pytest.mark.slow
def test_identical_bytes_with_1_and_2_threads(licenses, pydocs: Path, tmp_path: Path) -> None:
    path, _, _ = licenses
    licence_table = open_dataset(path).to_table()
    docs = open_dataset(pydocs).to_table().select(["id", "text"])
    mixed = pa.concat_tables([licence_table, docs])
    shards = {f"s{i}.parquet": mixed.slice(i * 300, 300) for i in range(4)}
    source = write_shards(tmp_path / "in", shards)
    _dedup_cli(1, source, tmp_path / "one", "--batch-size", "17")
    _dedup_cli(2, source, tmp_path / "two", "--batch-size", "500")
    one, two = folder_bytes(tmp_path / "one"), folder_bytes(tmp_path / "two")
    outputs = [k for k in one if not k.startswith(".tokenmill")]
    assert sorted(outputs) == ["clusters.parquet", "manifest.json", *sorted(shards)]
    for name in outputs:
        assert one[name] == two[name], name


def test_a_killed_run_resumes(licenses, tmp_path: Path) -> None:
    path, _, _ = licenses
    docs = open_dataset(path).to_table()
    source = write_shards(
        tmp_path / "in", {f"s{i}.parquet": docs.slice(i * 240, 240) for i in range(3)}
    )
    out = tmp_path / "out"
    tokenmill.dedup(source, out, progress=False)
    reference = folder_bytes(out)
    # As if killed while filtering, after signing two of three shards:
    (out / "manifest.json").unlink()
    (out / "s2.parquet").unlink()
    (out / ".tokenmill" / "dedup" / "s2.json").unlink()
    (out / ".s1.parquet.999.tmp").write_bytes(b"half a shard")
    resumed = tokenmill.dedup(source, out, progress=False)
    assert resumed.skipped == ["s0.parquet", "s1.parquet"] and resumed.signed == ["s2.parquet"]
    assert resumed.run.written == ["s2.parquet"]
    assert folder_bytes(out) == reference


def test_bad_input(tmp_path: Path, small_dataset: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["dedup", str(small_dataset), "-o", str(tmp_path / "o"), "--threshold", "1.2"]
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: ConfigError: threshold 1.2 is outside (0, 1); "
        "pass --threshold between 0 and 1, e.g. 0.8"
    )
    result = runner.invoke(
        cli, ["dedup", str(small_dataset), "-o", str(tmp_path / "o"), "--text-column", "body"]
    )
    assert (
        result.exit_code == 1
        and "SchemaError" in result.output
        and "'body' is missing" in result.output
    )
    assert not (tmp_path / "o").exists()
    no_text = write_shards(tmp_path / "n", {"n.parquet": pa.table({"x": [1]})})
    with pytest.raises(tokenmill.SchemaError, match="neither a text column"):
        tokenmill.dedup(no_text, tmp_path / "o", DedupOptions(method="exact"), progress=False)


def test_candidate_pairs_and_components_api() -> None:
    texts = pa.array(
        ["a b c d e f g h i j", "a b c d e f g h i j", "a b c d e f g h i k", "z y x w v u t s r q"]
    )
    signatures, too_short = minhash.signatures(texts, ngram=2)
    assert signatures.shape == (4, 128) and signatures.dtype == np.uint64 and not too_short.any()
    pairs = minhash.candidate_pairs(minhash.band_keys(signatures, 32, 4))
    assert [tuple(p) for p in pairs.tolist()][:1] == [(0, 1)]
    assert 3 not in pairs
    clusters = minhash.connected_components(4, pairs)
    assert clusters.tolist() == [0, 0, 0, 3]


def test_other_parameters_do_not_touch_an_earlier_output(licenses, tmp_path: Path) -> None:
    path, _, _ = licenses
    out = tmp_path / "out"
    tokenmill.dedup(path, out, progress=False)
    before = folder_bytes(out)
    with pytest.raises(tokenmill.ConfigError, match="--overwrite"):
        tokenmill.dedup(path, out, DedupOptions(threshold=0.5), progress=False)
    after = folder_bytes(out)
    assert {k: v for k, v in after.items() if not k.startswith(".tokenmill")} == {
        k: v for k, v in before.items() if not k.startswith(".tokenmill")
    }
    report = tokenmill.dedup(path, out, DedupOptions(threshold=0.5), overwrite=True, progress=False)
    assert report.summary.documents_out < open_dataset(path).num_rows


def test_a_resumed_run_clears_what_a_killed_one_left(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    tokenmill.dedup(small_dataset, out, progress=False)
    reference = folder_bytes(out)
    work = out / ".tokenmill" / "dedup"
    leftovers = [
        work / ".a.sig.4242.tmp",  # killed while signing
        work / ".b.json.4242.tmp",
        work / "buckets" / "buckets-00003.bin",  # killed while clustering, spilled
        out / ".clusters.parquet.4242.tmp",
        out / ".a.parquet.4242.tmp",  # killed while filtering
        out / ".tokenmill" / ".a.parquet.json.4242.tmp",
        out / ".manifest.json.4242.tmp",
    ]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half written")
    resumed = tokenmill.dedup(small_dataset, out, progress=False)
    assert resumed.skipped == ["a.parquet", "b.parquet"]
    assert folder_bytes(out) == reference


def test_two_dedups_into_one_folder_exclude_each_other(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with holding_locks(out, "clusters.parquet") as holder:
        result = CliRunner().invoke(cli, ["dedup", str(small_dataset), "-o", str(out)])
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: ConfigError: {out}: another tokenmill run (PID {holder.pid}) is writing "
        "clusters.parquet in this folder"
    )
    assert not (out / ".tokenmill" / "dedup").exists()


@pytest.mark.parametrize("method", ["exact", "minhash"])
def test_string_view_text(tmp_path: Path, method: str) -> None:
    texts = ["one two three four five six", "one two three four five six", "other words"]
    table = pa.table({"id": ["a", "b", "c"], "text": pa.array(texts, type=pa.string_view())})
    source = write_shards(tmp_path / "in", {"a.parquet": table})
    options = DedupOptions(method=method, ngram=2)
    report = tokenmill.dedup(source, tmp_path / "out", options, progress=False)
    assert report.summary.duplicates_removed == 1
    kept = pq.read_table(tmp_path / "out" / "a.parquet")
    assert kept.column("id").to_pylist() == ["a", "c"]
    assert kept.schema.field("text").type == pa.string_view()


@pytest.mark.parametrize("method", ["exact", "minhash"])
def test_null_documents_are_an_error_or_skipped_never_one_cluster(
    tmp_path: Path, method: str
) -> None:
    """A null text is no document: by default a DataError naming its shard
    and row; with nulls="skip" it is dropped before signing, so nulls form no
    cluster (exact dedup once joined them all), none is kept, and the report
    names input rows and clusters by their first row in the dataset."""
    a = pa.table({"id": ["a0", "a1", "a2", "a3", "a4"], "text": ["x", "y z", None, "x", None]})
    b = pa.table({"id": ["b0", "b1", "b2", "b3"], "text": [None, "q", "x", "q"]})
    source = write_shards(tmp_path / "in", {"a.parquet": a, "b.parquet": b})
    with pytest.raises(tokenmill.DataError) as err:
        tokenmill.dedup(source, tmp_path / "e", DedupOptions(method=method), batch_size=2)
    assert err.value.row == 2
    assert str(err.value) == (
        f"{source / 'a.parquet'}: row 2: column 'text' is null here; "
        "drop or fill null rows, or pass --nulls skip"
    )

    out = tmp_path / "out"
    options = DedupOptions(method=method, ngram=1, nulls="skip")
    report = tokenmill.dedup(source, out, options, batch_size=2, progress=False)
    s = report.summary
    assert (s.documents_in, s.documents_out, s.duplicates_removed, s.rows_null) == (9, 3, 3, 3)
    assert (s.clusters, s.largest_cluster) == (2, 3)
    assert pq.read_table(out / "a.parquet").column("id").to_pylist() == ["a0", "a1"]
    assert pq.read_table(out / "b.parquet").column("id").to_pylist() == ["b1"]
    clusters = pq.read_table(out / "clusters.parquet").to_pydict()
    assert clusters == {
        "shard": ["a.parquet", "a.parquet", "b.parquet", "b.parquet", "b.parquet"],
        "row": [0, 3, 1, 2, 3],
        "id": ["a0", "a3", "b1", "b2", "b3"],
        "cluster": [0, 0, 6, 0, 6],  # b1 is the dataset's row 5 + 1
        "cluster_size": [3, 3, 2, 3, 2],
        "kept": [True, False, True, False, False],
    }
    manifest = report.run.manifest
    assert manifest is not None and manifest.params["nulls"] == "skip"
    assert manifest.totals["rows_null"] == 3 and manifest.totals["rows_in"] == 9
    assert [o.stats["rows_null"] for o in manifest.outputs] == [2, 1]
    assert "3 null (skipped)" in dedup_report_lines(report)[0]

    # The same rows as a run on the shards without the nulls.
    clean = write_shards(
        tmp_path / "clean", {"a.parquet": a.take([0, 1, 3]), "b.parquet": b.take([1, 2, 3])}
    )
    tokenmill.dedup(clean, tmp_path / "c", options, progress=False)
    for name in ("a.parquet", "b.parquet"):
        assert pq.read_table(out / name).equals(pq.read_table(tmp_path / "c" / name))

    # A killed run resumes to the same bytes, from the skipped rows it recorded.
    reference = folder_bytes(out)
    (out / "manifest.json").unlink()
    (out / "b.parquet").unlink()
    (out / ".tokenmill" / "dedup" / "b.json").unlink()
    resumed = tokenmill.dedup(source, out, options, batch_size=2, progress=False)
    assert resumed.skipped == ["a.parquet"] and resumed.signed == ["b.parquet"]
    assert folder_bytes(out) == reference


@pytest.mark.parametrize("method", ["exact", "minhash"])
def test_a_bad_row_after_skipped_nulls_is_named_as_read(tmp_path: Path, method: str) -> None:
    """Signing sees the batch without its null rows; an error names the shard's row."""
    texts = pa.array([b"one two", None, b"three", b"\xff\xfe bad", b"x"], pa.binary())
    source = write_shards(tmp_path / "in", {"n.parquet": pa.table({"text": texts})})
    options = DedupOptions(method=method, nulls="skip")
    with pytest.raises(tokenmill.DataError, match="row 3: text is not valid UTF-8") as err:
        tokenmill.dedup(source, tmp_path / "out", options, progress=False)
    assert err.value.row == 3


@pytest.mark.slow
@pytest.mark.parametrize("method", ["minhash", "exact"])
def test_one_long_document_dedups_in_memory_a_small_multiple_of_it(
    method: str, pydocs: Path, tmp_path: Path
) -> None:
    """Text (minhash): an 88 MB document once took 8 times itself, mostly to
    write it back, Parquet copying the value into its min/max statistics.
    Tokens (exact): a 20M-token row, whose writing costs Parquet some 5
    times the row (README, Performance)."""
    if method == "minhash":
        texts = open_dataset(pydocs).to_table(columns=["text"]).column("text").to_pylist()
        document = ("\n".join(texts) + "\n") * 8
        size = len(document.encode())
        source = write_shards(
            tmp_path / "long", {"long.parquet": pa.table({"id": ["long"], "text": [document]})}
        )
        short = pa.table({"id": ["a", "b", "c"], "text": texts[:3]})
        small = write_shards(tmp_path / "long.small", {"short.parquet": short})
        bound = 5
    else:
        tokens = 20_000_000
        source, size = long_token_row(tmp_path / "long", tokens), 4 * tokens
        small = source.with_suffix(".small")
        bound = 8
    call = f"dedup(source, out, DedupOptions(method={method!r}), progress=False)"
    used = peak_memory_used(call, small, source, tmp_path)
    assert used < bound * size + (160 << 20), f"{used / 2**20:.0f} MiB for one document"
    assert pq.read_metadata(tmp_path / "out" / "long.parquet").num_rows == 1
