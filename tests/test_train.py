"""`tokenmill train`: every objective trains from the stage that prepares it,
resumes exactly, and refuses bad input before any step."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import tokenmill
import tokenmill_cli
from tests.conftest import write_shards

torch = pytest.importorskip("torch")

from tokenmill.train import (  # noqa: E402
    CorruptedRowCollator,
    Stream,
    TrainConfig,
    accumulate,
    build_optimizer,
    contrastive_stream,
    loss_means,
    plan_data,
    train,
)
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


STEPS = 16


def run(prepared: Path, objective: str, tmp_path: Path, **options: object) -> TrainConfig:
    data = {"clm": "packed", "contrastive": "pairs"}.get(objective, objective)
    settings: dict[str, object] = {
        "objective": objective,
        "data": str(prepared / data),
        "output": str(tmp_path / objective),
        "steps": STEPS,
        "batch_size": 8,
        "lr": 5e-3,
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
    if objective == "contrastive":  # InfoNCE collapses to ln(batch) at the LM rate
        config.lr, config.warmup = 2e-3, 2
    result = train(config, echo=lambda _: None)
    losses = list(result.losses.values())
    first, last = loss_means(losses, 3)
    # InfoNCE on this tiny set halves within a few steps, then levels off.
    factor = 0.9 if objective == "contrastive" else 0.8
    assert last < factor * first, losses
    records = [json.loads(x) for x in (result.output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, STEPS + 1))
    final = records[-1]
    assert final["split"] == "eval" and final["loss"] == result.final["loss"]
    if objective == "contrastive":
        assert {"recall@10", "mrr@10", "bm25_recall@10", "bm25_mrr@10"} <= set(final)
        assert final["random_recall@10"] == min(10, final["pool"]) / final["pool"]
    else:
        assert 0 <= final["accuracy"] <= 1
        # Bits per byte only where the targets are the text itself.
        assert ("bits_per_byte" in final) == (objective in ("clm", "prefix"))
    assert "eval loss" in (result.output / "summary.txt").read_text()
    if objective == "clm":
        assert (result.output / "curves.png").stat().st_size > 1000


def _records(path: Path) -> list[dict[str, object]]:
    # Throughput is the one field that depends on the clock.
    lines = (path / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "tokens_per_s"} for x in lines]


def test_resume_reproduces_the_uninterrupted_run(
    prepared: Path, tmp_path: Path, tokenizer: str
) -> None:
    options = {"steps": 8, "log_every": 3, "eval_every": 4, "tokenizer": tokenizer}
    whole = train(run(prepared, "mlm", tmp_path / "a", **options), echo=print)
    part = run(prepared, "mlm", tmp_path / "b", stop_at=5, **options)
    first = train(part, echo=print)
    assert first.final == {} and "continue with --resume" in first.summary
    part.stop_at, part.resume = None, True
    rest = train(part, echo=print)
    assert list(first.losses) == [1, 2, 3, 4, 5] and list(rest.losses) == [6, 7, 8]
    assert {**first.losses, **rest.losses} == whole.losses  # exact, not approximate
    assert rest.final == whole.final
    # The same records, no extra eval at the stop nor train record at the restart.
    assert _records(tmp_path / "b" / "mlm") == _records(tmp_path / "a" / "mlm")


def _torchrun(
    prepared: Path, output: Path, tokenizer: str, processes: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`tokenmill train --objective clm` as `processes` Gloo ranks on the CPU."""
    # The ranks must import the tokenmill under test, not another install.
    here = [str(Path(m.__file__).resolve().parents[1]) for m in (tokenmill, tokenmill_cli)]
    path = os.pathsep.join(p for p in [*here, os.environ.get("PYTHONPATH")] if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, TOKENMILL_PROGRESS="0")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launch += ["--nproc_per_node", str(processes), "-m", "tokenmill_cli", "train"]
    args = ["--objective", "clm", str(prepared / "packed"), "-o", str(output)]
    args += ["--tokenizer", tokenizer, "--device", "cpu", "--torch-threads", "1", "--no-plots"]
    args += ["--steps", "8", "--batch-size", "8", "--lr", "5e-3", "--warmup", "2"]
    args += ["--log-every", "1", "--eval-every", "4", "--eval-batches", "2"]
    done = subprocess.run(
        [*launch, *args, *extra], env=env, capture_output=True, text=True, timeout=120
    )
    # torchrun exits 0 only when every rank did.
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.slow
def test_ddp_on_two_processes_trains_as_one_with_the_global_batch(
    prepared: Path, tmp_path: Path, tokenizer: str
) -> None:
    whole = _torchrun(prepared, tmp_path / "ddp", tokenizer, 2, "--checkpoint-every", "3")
    # Rank 0 alone reports, writes and checkpoints.
    assert whole.stdout.count("train clm:") == 1 and whole.stdout.count("eval perplexity") == 1
    assert "8x1x2 ranks" in whole.stdout
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "metrics.jsonl",
        "summary.txt",
    ]
    records = _records(tmp_path / "ddp")
    steps = [(r["step"], r["split"]) for r in records]
    train_steps = [(s, "train") for s in range(1, 9)]
    assert steps == [*train_steps[:4], (4, "eval"), *train_steps[4:], (8, "eval")]
    checkpoint = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 8
    assert checkpoint["trajectory"]["world_size"] == 2
    assert checkpoint["trajectory"]["global_batch"] == 16

    # One process with the global batch. Rank r of W reads rows r, r+W, ...
    # of the epoch's order, so step k's 2 x 8 rows are rows 16k..16k+15 of
    # the order, the very rows one process reads as a batch of 16, and the
    # epochs end at the same step (119 training rows: 7 steps, so step 8
    # starts the second epoch; the short tail is dropped either way). The
    # gradient is the sum over every target divided by the global target
    # count either way. What differs is only float summation order (two
    # half batches, then Gloo's sum), so the trajectories agree to float32
    # rounding, not bit for bit: seen up to 3e-6 relative on the losses and
    # 3e-5 on the grad norm (the root of a sum over every gradient, after
    # a clipped spike at step 6).
    single = train(
        run(
            prepared,
            "clm",
            tmp_path / "single",
            steps=8,
            batch_size=16,
            eval_every=4,
            tokenizer=tokenizer,
            device="cpu",
        ),
        echo=lambda _: None,
    )
    reference = _records(tmp_path / "single" / "clm")
    assert [(r["step"], r["split"]) for r in reference] == steps
    for got, want in zip(records, reference, strict=True):
        assert got.get("lr") == want.get("lr")
        for key, rel in (("loss", 1e-4), ("accuracy", 1e-4), ("grad_norm", 1e-3)):
            if key in want:
                assert got[key] == pytest.approx(want[key], rel=rel), (key, got, want)
    assert records[-1]["loss"] == pytest.approx(single.final["loss"], rel=1e-4)

    # Stopped at step 5 and resumed on two processes: the uninterrupted run exactly.
    _torchrun(prepared, tmp_path / "parts", tokenizer, 2, "--stop-at", "5")
    first = _records(tmp_path / "parts")
    assert first == records[: len(first)] and first[-1]["step"] == 5
    rest = _torchrun(prepared, tmp_path / "parts", tokenizer, 2, "--resume")
    assert "resumed at step 5" in rest.stdout
    assert _records(tmp_path / "parts") == records
    resumed = torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=True)
    for name, tensor in checkpoint["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


def _first_epoch(stream: Stream) -> list[list[list[int]]]:
    """The query ids of each batch the stream yields in its first epoch."""
    out = []
    while True:
        batch = next(stream)
        if stream.epoch:
            return out
        out.append(batch["query_input_ids"].tolist())


def test_ddp_ranks_take_as_many_contrastive_batches_each_epoch(
    prepared: Path, tmp_path: Path, tokenizer: str
) -> None:
    # Batch j of an epoch goes to rank j % 2: an odd last batch must be
    # dropped, or rank 0 would train a step longer on each epoch than rank 1.
    config = run(prepared, "contrastive", tmp_path, batch_size=9, tokenizer=tokenizer)
    plan = plan_data(config)
    single = _first_epoch(contrastive_stream(plan, config, 0, 1)[0])
    assert len(single) % 2 == 1  # the case this is about
    ranks = [_first_epoch(contrastive_stream(plan, config, rank, 2)[0]) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) // 2
    assert [b for pair in zip(*ranks, strict=True) for b in pair] == single[:-1]


def test_resume_checks_the_configuration(
    prepared: Path, tmp_path: Path, tokenizer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = run(prepared, "clm", tmp_path, steps=4, stop_at=2, tokenizer=tokenizer)
    train(config, echo=lambda _: None)
    config.stop_at, config.resume, config.lr = None, True, 1e-4
    with pytest.raises(tokenmill.ConfigError, match=r"another configuration.*lr=0\.005"):
        train(config, echo=lambda _: None)
    config.lr = 5e-3
    # Another process count changes the data order and the global batch.
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(tokenmill.ConfigError, match=r"world_size=1 \(now 2\).*global_batch=8"):
        train(config, echo=lambda _: None)
    monkeypatch.delenv("WORLD_SIZE")
    # Other data (same objective, other rows) is refused too.
    checkpoint_path = tmp_path / "clm" / "checkpoint.pt"
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    checkpoint["trajectory"]["data_rows"] += 1
    torch.save(checkpoint, checkpoint_path)
    with pytest.raises(tokenmill.ConfigError, match="data_rows="):
        train(config, echo=lambda _: None)
    config.resume = False
    with pytest.raises(tokenmill.ConfigError, match="already holds a checkpoint"):
        train(config, echo=lambda _: None)
    fresh = run(prepared, "clm", tmp_path / "fresh", resume=True)
    with pytest.raises(tokenmill.ConfigError, match="does not exist"):
        train(fresh, echo=lambda _: None)


def _mlm_rows(prepared: Path, count: int) -> list[dict[str, object]]:
    table = tokenmill.open_dataset(prepared / "mlm").to_table().slice(0, count)
    return [
        {k: np.asarray(v) for k, v in row.items() if k in ("input_ids", "labels", "seq_lens")}
        for row in table.to_pylist()
    ]


def test_grad_accumulation_weighs_targets_as_one_big_batch(prepared: Path) -> None:
    # mlm rows hold different numbers of targets: two half batches
    # accumulated must give the gradient of the full batch.
    from tokenmill.train.models import EncoderMLM, model_config

    rows = _mlm_rows(prepared, 6)
    vocab = 1 + max(int(np.max(r["input_ids"])) for r in rows)
    collate = CorruptedRowCollator("encoder", pad_id=0, decoder_start_id=0)
    halves = [collate(rows[:2]), collate(rows[2:])]
    counts = [int((h["labels"] != -100).sum()) for h in halves]
    assert counts[0] / 2 != counts[1] / 4  # the halves' targets per row differ

    def gradient(batches: list[dict[str, object]]) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = EncoderMLM(model_config("tiny", vocab, n_layer=1, max_seq_len=64))
        accumulate(model, model, batches, torch.device("cpu"), contextlib.nullcontext)
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for got, want in zip(gradient(halves), gradient([collate(rows)]), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_weight_decay_spares_embeddings_norms_and_biases(prepared: Path) -> None:
    from tokenmill.train.models import EncoderDecoder, model_config

    model = EncoderDecoder(model_config("tiny", 300, n_layer=1, max_seq_len=64))
    decay, keep = build_optimizer(model, run(prepared, "span", Path("unused"))).param_groups
    decayed = {id(p) for p in decay["params"]}
    assert decay["weight_decay"] > 0 and keep["weight_decay"] == 0
    names = {id(p): n for n, p in model.named_parameters()}  # a tied weight named once
    assert len(decay["params"]) + len(keep["params"]) == len(names)
    for param_id, name in names.items():
        spared = name.endswith("bias") or "norm" in name or "tokens" in name
        spared = spared or "positions" in name
        assert (param_id in decayed) != spared, name


def test_corrupted_rows_feed_the_decoder_its_labels_shifted_right() -> None:
    rows = [
        {"input_ids": np.array([5, 6, 7]), "labels": np.array([8, 9, 10, 11])},
        {"input_ids": np.array([5, 6]), "labels": np.array([12, -100, 13])},
    ]
    batch = CorruptedRowCollator("encoder-decoder", pad_id=0, decoder_start_id=2)(rows)
    labels = batch["labels"].numpy()
    assert labels.tolist() == [[8, 9, 10, 11], [12, -100, 13, -100]]
    expected = np.concatenate([np.full((2, 1), 2), np.where(labels == -100, 0, labels)[:, :-1]], 1)
    assert batch["decoder_input_ids"].numpy().tolist() == expected.tolist()
    assert batch["decoder_attention_mask"].numpy().tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_data_for_another_objective_is_refused(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(tokenmill.SchemaError, match="corrupt` --mode mlm, not for --objective clm"):
        train(run(prepared, "clm", tmp_path, data=str(prepared / "mlm")), echo=print)
    with pytest.raises(tokenmill.SchemaError, match="--mode span, not for --objective bart"):
        train(run(prepared, "bart", tmp_path, data=str(prepared / "span")), echo=print)
    with pytest.raises(tokenmill.SchemaError, match="run `tokenmill corrupt --mode mlm`"):
        train(run(prepared, "mlm", tmp_path, data=str(prepared / "packed")), echo=print)
    with pytest.raises(tokenmill.SchemaError, match="contrastive reads"):
        train(run(prepared, "contrastive", tmp_path, data=str(prepared / "packed")), echo=print)


def test_clm_needs_packed_rows(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(tokenmill.SchemaError, match=r"unpacked rows.*run `tokenmill pack"):
        train(run(prepared, "clm", tmp_path, data=str(prepared / "tokens")), echo=print)


def test_contrastive_token_ids_need_a_vocabulary(tmp_path: Path) -> None:
    ids = pa.array([[5, 6, 7], [8, 9], [10, 11, 12], [13, 14]], type=pa.list_(pa.int32()))
    write_shards(tmp_path / "pairs", {"a.parquet": pa.table({"query": ids, "positive": ids})})
    config = run(tmp_path, "contrastive", tmp_path / "out", data=str(tmp_path / "pairs"))
    with pytest.raises(tokenmill.ConfigError, match="pass --tokenizer or --vocab-size"):
        train(config, echo=print)


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


def _cli_error(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--clip", "nan"),
        ("--lr", "nan"),
        ("--lr", "inf"),
        ("--weight-decay", "nan"),
        ("--temperature", "inf"),
        ("--eval-fraction", "nan"),
        ("--eval-fraction", "1.5"),
    ],
)
def test_float_options_are_checked_before_the_run_folder_is_written(
    prepared: Path, tmp_path: Path, option: str, value: str
) -> None:
    out = tmp_path / "run"
    line = _cli_error(
        "train", "--objective", "clm", str(prepared / "packed"), "-o", str(out), option, value
    )
    assert line.startswith(f"Error: ConfigError: {option} {value}")
    assert not out.exists()  # no config.json left behind


def test_a_diverging_run_stops_at_the_step_and_keeps_metrics_json(
    prepared: Path, tmp_path: Path
) -> None:
    config = run(prepared, "clm", tmp_path, lr=1e30, clip=0.0, warmup=0)
    with pytest.raises(tokenmill.ConfigError, match=r"loss is nan at step \d+: the run diverged"):
        train(config, echo=print)

    def refuse(constant: str) -> None:
        raise AssertionError(f"metrics.jsonl holds bare {constant}")

    lines = (Path(config.output) / "metrics.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line, parse_constant=refuse) for line in lines)
    assert not (Path(config.output) / "checkpoint.pt").exists()


def test_a_garbage_checkpoint_is_one_error_naming_it(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    line = _cli_error(
        "train", "--objective", "clm", str(prepared / "packed"), "-o", str(out), "--resume"
    )
    assert line.startswith(f"Error: ShardError: {out / 'checkpoint.pt'}: cannot read")
    assert "--overwrite" in line
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]


def test_seq_lens_that_do_not_cover_their_row_are_refused_before_writing(
    tmp_path: Path,
) -> None:
    ids = pa.array([[1, 2, 3, 4]] * 7 + [[5, 6, 7, 8]], type=pa.list_(pa.uint32()))
    seq_lens = pa.array([[2, 2]] * 7 + [[1, 2]], type=pa.list_(pa.int32()))
    write_shards(
        tmp_path / "packed", {"a.parquet": pa.table({"input_ids": ids, "seq_lens": seq_lens})}
    )
    config = run(tmp_path, "clm", tmp_path / "out", data=str(tmp_path / "packed"), vocab_size=16)
    with pytest.raises(tokenmill.DataError, match=r"a\.parquet: row 7: seq_lens add up to 3"):
        train(config, echo=print)
    assert not (tmp_path / "out").exists()
