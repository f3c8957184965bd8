"""`tokenmill train`: every objective trains from the stage that prepares it,
resumes exactly, and refuses bad input before any step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

import tokenmill
from tests.conftest import write_shards

torch = pytest.importorskip("torch")

from tokenmill.train import TrainConfig, train  # noqa: E402
from tokenmill_cli.main import cli  # noqa: E402

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "pack",
    "my",
    "box",
    "with",
    "five",
    "dozen",
    "liquor",
    "jugs",
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, small_tokenizer: Path) -> Path:
    """Token shards packed to 48 tokens, corrupted for every mode, and pairs."""
    root = tmp_path_factory.mktemp("train")
    texts = [
        " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(4 + i % 9)) + "."
        for i in range(240)
    ]
    table = pa.table({"id": [f"d{i}" for i in range(240)], "text": texts})
    write_shards(root / "text", {"a.parquet": table.slice(0, 120), "b.parquet": table.slice(120)})
    tokenmill.tokenize(root / "text", root / "tokens", small_tokenizer, progress=False)
    tokenmill.pack(root / "tokens", root / "packed", 48, progress=False)
    for mode in ("mlm", "span", "bart", "prefix", "ul2"):
        tokenmill.corrupt(root / "packed", root / mode, mode, small_tokenizer, progress=False)
    tokenmill.pairs(root / "text", root / "pairs", "crop", progress=False)
    return root


def run(prepared: Path, objective: str, tmp_path: Path, **options: object) -> TrainConfig:
    data = {"clm": "packed", "contrastive": "pairs"}.get(objective, objective)
    settings: dict[str, object] = {
        "objective": objective,
        "data": str(prepared / data),
        "output": str(tmp_path / objective),
        "steps": 30,
        "batch_size": 8,
        "lr": 3e-3,
        "warmup": 2,
        "log_every": 1,
        "eval_batches": 2,
        "threads": 2,
        "plots": False,
        "tokenizer": None,
    }
    settings.update(options)
    return TrainConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture
def tokenizer(small_tokenizer: Path) -> str:
    return str(small_tokenizer)


@pytest.mark.parametrize(
    "objective", ["clm", "mlm", "span", "bart", "prefix", "ul2", "contrastive"]
)
def test_every_objective_trains_and_writes_its_metrics(
    prepared: Path, tmp_path: Path, tokenizer: str, objective: str
) -> None:
    config = run(prepared, objective, tmp_path, tokenizer=tokenizer, plots=objective == "clm")
    result = train(config, echo=lambda _: None)
    losses = list(result.losses.values())
    assert losses[-1] < 0.8 * losses[0], losses
    records = [json.loads(x) for x in (result.output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 31))
    final = records[-1]
    assert final["split"] == "eval" and final["loss"] == result.final["loss"]
    if objective == "contrastive":
        assert {"recall@10", "mrr@10", "bm25_recall@10", "bm25_mrr@10"} <= set(final)
    else:
        assert 0 <= final["accuracy"] <= 1 and final["bits_per_byte"] > 0
    assert "eval loss" in (result.output / "summary.txt").read_text()
    if objective == "clm":
        assert (result.output / "curves.png").stat().st_size > 1000


def test_resume_reproduces_the_uninterrupted_run(
    prepared: Path, tmp_path: Path, tokenizer: str
) -> None:
    whole = train(run(prepared, "mlm", tmp_path / "a", steps=12, tokenizer=tokenizer), echo=print)
    part = run(prepared, "mlm", tmp_path / "b", steps=12, stop_at=5, tokenizer=tokenizer)
    first = train(part, echo=print)
    part.stop_at, part.resume = None, True
    rest = train(part, echo=print)
    assert list(first.losses) == [1, 2, 3, 4, 5] and list(rest.losses) == list(range(6, 13))
    assert {**first.losses, **rest.losses} == whole.losses  # exact, not approximate
    assert rest.final == whole.final


def test_resume_checks_the_configuration(prepared: Path, tmp_path: Path, tokenizer: str) -> None:
    config = run(prepared, "clm", tmp_path, steps=4, stop_at=2, tokenizer=tokenizer)
    train(config, echo=lambda _: None)
    config.stop_at, config.resume, config.lr = None, True, 1e-4
    with pytest.raises(tokenmill.ConfigError, match=r"another configuration: lr=0\.003"):
        train(config, echo=lambda _: None)
    config.resume = False
    with pytest.raises(tokenmill.ConfigError, match="already holds a checkpoint"):
        train(config, echo=lambda _: None)
    fresh = run(prepared, "clm", tmp_path / "fresh", resume=True)
    with pytest.raises(tokenmill.ConfigError, match="does not exist"):
        train(fresh, echo=lambda _: None)


def test_data_for_another_objective_is_refused(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(tokenmill.SchemaError, match="corrupt` --mode mlm, not for --objective clm"):
        train(run(prepared, "clm", tmp_path, data=str(prepared / "mlm")), echo=print)
    with pytest.raises(tokenmill.SchemaError, match="--mode span, not for --objective bart"):
        train(run(prepared, "bart", tmp_path, data=str(prepared / "span")), echo=print)
    with pytest.raises(tokenmill.SchemaError, match="run `tokenmill corrupt --mode mlm`"):
        train(run(prepared, "mlm", tmp_path, data=str(prepared / "packed")), echo=print)
    with pytest.raises(tokenmill.SchemaError, match="contrastive reads"):
        train(run(prepared, "contrastive", tmp_path, data=str(prepared / "packed")), echo=print)


def test_token_ids_beyond_the_vocabulary_are_refused(prepared: Path, tmp_path: Path) -> None:
    config = run(prepared, "clm", tmp_path, tokenizer=None, vocab_size=50)
    with pytest.raises(tokenmill.DataError, match="outside the model's vocabulary of 50"):
        train(config, echo=print)
    assert not (tmp_path / "clm").exists()  # refused before anything was written


def test_cli_trains_and_reports_bad_input_in_one_line(
    prepared: Path, tmp_path: Path, tokenizer: str
) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train", "--objective", "prefix", str(prepared / "prefix"), "-o", str(out)]
    result = runner.invoke(cli, [*args, "--steps", "3", "--torch-threads", "2", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "train loss" in result.output and (out / "checkpoint.pt").exists()
    other = str(tmp_path / "other")
    bad = runner.invoke(cli, ["train", "--objective", "clm", str(prepared / "ul2"), "-o", other])
    assert bad.exit_code == 1
    assert bad.output.count("\n") == 1 and bad.output.startswith("Error: SchemaError:")


def test_gpu_bench_runs_in_cpu_smoke_mode(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "benches" / "bench_train_gpu.py"
    smoke = ["--device", "cpu", "--size", "tiny", "--steps", "1", "--warmup", "1"]
    smoke += ["--seq-len", "32", "--batch-size", "2", "--vocab", "128", "--no-compile"]
    subprocess.run(
        [sys.executable, str(script), *smoke, "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=script.parent,
    )
    results = json.loads((tmp_path / "train_gpu.json").read_text())
    assert [r["variant"] for r in results] == ["document-masked", "plain causal"]
    assert all(r["tokens_per_s"] > 0 and r["mfu"] is None for r in results)
