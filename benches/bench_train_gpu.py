"""Decoder training throughput and MFU: document-masked packed rows against
plain causal attention, on the model `tokenmill train --objective clm` trains.

On a CUDA machine (the figures that matter) it trains the decoder at `base`
size (GPT-2 small, 124M) on rows of 1024 tokens, bf16 autocast, with
torch.compile, for `--steps` steps per variant, and reports tokens/s, MFU
and the share of wall time spent collating batches (CausalLMCollator on
packed rows). The rows are synthetic packed rows (random tokens, log-normal
document lengths), so the script needs no data.

Each step is `tokenmill.train.train_step`, the step `train()` runs: the
same model class, AdamW param groups (fused on CUDA), bf16 autocast,
token-weighted accumulation, clipping; with `--compile`, torch.compile as
`train --compile`. What differs from `train()`: the batches are synthetic
rows collated in the loop (no DataLoader, no held-out evaluation, logging
or checkpoints), so the collate share is the collator's cost alone.

MFU = (6 * N * tokens/s + attention FLOPs) / peak, with N the parameters
without position embeddings. `mfu` counts attention as nanoGPT does (12 *
layers * d_model * seq_len per token, as if every token attended the whole
row). For the document-masked variant that counts FLOPs the kernel skips,
so its `mfu` is an overestimate, not a lower bound; `mfu_documents`
counts each token's attention over its own document only (sum of squared
document lengths), the work a block-sparse kernel can at best do. The peak
is the card's dense bf16: H100 SXM 989, H100 PCIe 756, H100 NVL 835, H200
989 TFLOPs; `--peak-tflops` for others.

    python benches/bench_train_gpu.py                      # CUDA, base, seq 1024
    python benches/bench_train_gpu.py --device cpu --size tiny --steps 2 --seq-len 64 --no-compile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from _harness import REPO

#: Dense bf16 TFLOPs by device-name substring, most specific first
#: (torch names the SXM H100 "NVIDIA H100 80GB HBM3").
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
)


def synthetic_rows(count: int, seq_len: int, vocab: int, seed: int) -> list[dict[str, Any]]:
    """Packed rows as `pack` writes them: full rows of several documents."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        lengths: list[int] = []
        while sum(lengths) < seq_len:
            lengths.append(int(np.clip(rng.lognormal(np.log(300), 1.0), 8, seq_len)))
        lengths[-1] -= sum(lengths) - seq_len
        rows.append(
            {
                "input_ids": rng.integers(0, vocab, seq_len, dtype=np.int64),
                "seq_lens": np.array([x for x in lengths if x > 0], dtype=np.int64),
            }
        )
    return rows


def peak_flops(device: Any, override: float | None) -> float | None:
    import torch

    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((t * 1e12 for key, t in PEAK_BF16_TFLOPS if key in name), None)


def run_variant(args: argparse.Namespace, document_mask: bool, device: Any) -> dict[str, Any]:
    import torch

    from tokenmill.train import ClmBatch, TrainConfig, build_optimizer, train_step
    from tokenmill.train.models import DecoderLM, model_config

    torch.manual_seed(0)
    config = model_config(args.size, args.vocab, max_seq_len=args.seq_len)
    model = DecoderLM(config, use_flex=document_mask and device.type == "cuda").to(device)
    settings = TrainConfig(objective="clm", data="", output="", size=args.size)
    optimizer = build_optimizer(model, settings, fused=device.type == "cuda")
    trained: Any = torch.compile(model) if args.compile else model
    collate = ClmBatch(pad_id=0, document_mask=document_mask)
    rows = synthetic_rows(args.batch_size * (args.steps + args.warmup), args.seq_len, args.vocab, 0)
    cuda = device.type == "cuda"

    def autocast() -> Any:
        return torch.autocast("cuda", torch.bfloat16) if cuda else contextlib.nullcontext()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    collate_seconds = 0.0
    tokens = 0
    attended = 0  # sum over tokens of the length of the row / document they attend
    started = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:  # compile and autotune happen in the warm-up steps
            sync()
            started, collate_seconds, tokens, attended = time.perf_counter(), 0.0, 0, 0
        tick = time.perf_counter()
        chunk = rows[step * args.batch_size : (step + 1) * args.batch_size]
        batch = collate(chunk)
        tokens += batch["num_tokens"]
        attended += sum(int((r["seq_lens"] ** 2).sum()) for r in chunk)
        collate_seconds += time.perf_counter() - tick
        loss, _ = train_step(trained, model, optimizer, [batch], device, autocast, clip=1.0)
    sync()
    seconds = time.perf_counter() - started
    rate = tokens / seconds
    parameters = model.num_parameters()
    flops_per_token = 6 * parameters + 12 * config.n_layer * config.d_model * args.seq_len
    mean_attended = attended / max(tokens, 1) if document_mask else args.seq_len
    flops_documents = 6 * parameters + 12 * config.n_layer * config.d_model * mean_attended
    peak = peak_flops(device, args.peak_tflops)
    return {
        "variant": "document-masked" if document_mask else "plain causal",
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "size": args.size,
        "parameters": parameters,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "compile": args.compile,
        "tokens_per_s": rate,
        "mfu": flops_per_token * rate / peak if peak else None,
        "mfu_documents": flops_documents * rate / peak if peak else None,
        "collate_share": collate_seconds / seconds,
        "final_loss": float(loss.detach()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="base", choices=["tiny", "small", "base"])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5, help="Untimed steps first.")
    parser.add_argument("--vocab", type=int, default=50304, help="GPT-2's, padded to 64.")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--peak-tflops", type=float, help="Dense bf16 peak of the card.")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    args = parser.parse_args()

    import torch

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    results = [run_variant(args, mask, device) for mask in (True, False)]
    device_name = results[0]["device"]
    header = f"{'variant':<16} {'tokens/s':>12} {'MFU':>7} {'MFU doc':>8} {'collate':>8}"
    print(f"{header}  ({device_name})")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        doc = f"{r['mfu_documents']:.1%}" if r["mfu_documents"] is not None else "n/a"
        share = r["collate_share"]
        print(f"{r['variant']:<16} {r['tokens_per_s']:>12,.0f} {mfu:>7} {doc:>8} {share:>8.1%}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "train_gpu.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
