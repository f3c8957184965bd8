from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tokenmill import _core
from tokenmill.bench import CORRUPT_COLLATORS, python_best_fit_decreasing, run_bench
from tokenmill_cli.main import cli


def test_python_reference_packs_like_the_kernel() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 300, size=2000).astype(np.uint32)
    ours = _core.best_fit_decreasing(lengths, 512)
    theirs = np.array(python_best_fit_decreasing(lengths.tolist(), 512))
    # Same algorithm, same tie-breaking: the same rows.
    assert np.array_equal(ours, theirs)


def test_bench_writes_table_json_and_chart(small_dataset: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["bench", "--corpus", str(small_dataset), "--repeat", "1", "-o", str(tmp_path / "b")],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())
    suites = {"tokenize", "dedup", "pack", "bm25", "negatives", "corrupt"}
    assert {r["suite"] for r in rows} == suites
    assert all(r["throughput"] > 0 for r in rows)
    compared = [r for r in rows if r["baseline"] is not None]
    assert compared and all(r["speedup"] > 0 for r in compared)
    assert (tmp_path / "b" / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "| pack | tokenmill best-fit decreasing | 1 |" in result.output
    timed = {r["implementation"] for r in rows if r["suite"] == "corrupt"}
    assert {f"tokenmill {name} (2-D array)" for name in CORRUPT_COLLATORS.values()} <= timed


def test_unknown_suite_is_refused() -> None:
    result = CliRunner().invoke(cli, ["bench", "--suite", "nope"])
    assert result.exit_code == 2


def test_run_bench_without_output_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    results = run_bench(suites=["pack"], repeat=1)
    assert [m.implementation for m in results][-1] == "tokenmill best-fit decreasing"
    assert list(tmp_path.iterdir()) == []


def test_corrupt_suite_skips_the_hf_baseline_without_transformers(
    small_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    results = run_bench(small_dataset, suites=["corrupt"], repeat=1)
    assert {m.suite for m in results} == {"corrupt"}
    assert all("tokenmill" in m.implementation and m.throughput > 0 for m in results)
    assert all(m.baseline is None and m.speedup is None for m in results)
