"""The model families: masks keep what they promise, and each family can learn."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tokenmill.models import (  # noqa: E402
    AttentionMask,
    DecoderLM,
    DualEncoder,
    EncoderDecoder,
    EncoderMLM,
    model_config,
)

VOCAB = 64


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)


def config(**overrides: int) -> object:
    return model_config("tiny", VOCAB, max_seq_len=32, **overrides)


def hidden(model: torch.nn.Module, ids: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(ids, **kwargs)[1]


def test_causal_output_ignores_later_tokens() -> None:
    model = DecoderLM(config())
    ids = torch.randint(0, VOCAB, (2, 16))
    changed = ids.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % VOCAB
    before, after = hidden(model, ids), hidden(model, changed)
    assert torch.equal(before[:, :9], after[:, :9])
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_prefix_is_bidirectional_inside_the_prefix_only() -> None:
    model = DecoderLM(config())
    ids = torch.randint(0, VOCAB, (1, 12))
    prefix = torch.zeros(1, 12, dtype=torch.bool)
    prefix[:, :6] = True
    documents = torch.zeros(1, 12, dtype=torch.long)
    run = lambda x: hidden(model, x, document_ids=documents, prefix_mask=prefix)  # noqa: E731
    base = run(ids)
    later_prefix = ids.clone()
    later_prefix[0, 5] = (later_prefix[0, 5] + 1) % VOCAB
    # Position 2 sees prefix position 5, which lies after it.
    assert not torch.allclose(base[0, 2], run(later_prefix)[0, 2])
    target = ids.clone()
    target[0, 8] = (target[0, 8] + 1) % VOCAB
    changed = run(target)
    assert torch.equal(base[0, :8], changed[0, :8])
    assert not torch.allclose(base[0, 8:], changed[0, 8:])


@pytest.mark.parametrize("family", [DecoderLM, EncoderMLM])
def test_document_mask_keeps_packed_documents_apart(family: type) -> None:
    model = family(config())
    ids = torch.randint(0, VOCAB, (1, 16))
    documents = torch.tensor([[0] * 7 + [1] * 6 + [-1] * 3])
    positions = torch.tensor([list(range(7)) + list(range(6)) + [0] * 3])
    changed = ids.clone()
    changed[0, 7:13] = (changed[0, 7:13] + 1) % VOCAB
    kwargs = {"document_ids": documents, "position_ids": positions}
    before, after = hidden(model, ids, **kwargs), hidden(model, changed, **kwargs)
    assert torch.equal(before[0, :7], after[0, :7])
    assert not torch.allclose(before[0, 7:13], after[0, 7:13])
    assert torch.isfinite(before).all()  # padding rows are never empty


def test_dense_mask_matches_the_rule() -> None:
    docs = torch.tensor([[0, 0, 0, 1, 1, -1]])
    prefix = torch.tensor([[True, True, False, True, False, False]])
    mask = AttentionMask(docs, causal=True, prefix=prefix).dense()[0, 0]
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def small() -> object:
    # One narrow block learns a 4-row batch by heart in a few dozen steps.
    return config(n_layer=1, d_model=32, n_head=2)


def overfit(model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int = 40) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss, _ = model(**batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses[0] / losses[-1]


def test_every_family_overfits_a_tiny_batch() -> None:
    ids = torch.randint(4, VOCAB, (4, 16))
    ones = torch.ones_like(ids)
    docs = torch.zeros_like(ids)
    masked = ids.clone()
    masked[:, ::3] = 1
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels[:, ::3] = ids[:, ::3]
    prefix = torch.zeros_like(ids, dtype=torch.bool)
    prefix[:, :6] = True
    prefix_labels = ids.masked_fill(prefix, -100)
    decoder_inputs = torch.cat([torch.zeros_like(ids[:, :1]), ids[:, :-1]], dim=1)
    cases = {
        "clm": (DecoderLM, {"input_ids": ids, "labels": ids}),
        "prefix": (
            DecoderLM,
            {
                "input_ids": ids,
                "labels": prefix_labels,
                "document_ids": docs,
                "prefix_mask": prefix,
            },
        ),
        "mlm": (EncoderMLM, {"input_ids": masked, "labels": mlm_labels, "document_ids": docs}),
        "encoder-decoder": (
            EncoderDecoder,
            {
                "input_ids": masked,
                "decoder_input_ids": decoder_inputs,
                "labels": ids,
                "attention_mask": ones,
                "decoder_attention_mask": ones,
            },
        ),
    }
    for name, (family, batch) in cases.items():
        ratio = overfit(family(small()), batch)
        assert ratio > 5, f"{name}: loss fell only {ratio:.1f}x"
    docs_ids = torch.randint(4, VOCAB, (8, 12))
    pairs = {
        "query_input_ids": docs_ids[:4, :6],
        "query_attention_mask": torch.ones(4, 6, dtype=torch.long),
        "doc_input_ids": docs_ids,
        "doc_attention_mask": torch.ones(8, 12, dtype=torch.long),
        "labels": torch.arange(4),
    }
    for symmetric in (False, True):
        ratio = overfit(DualEncoder(small(), symmetric=symmetric), pairs)
        assert ratio > 5, f"dual encoder (symmetric={symmetric}): loss fell only {ratio:.1f}x"


def test_base_is_gpt2_small() -> None:
    model = DecoderLM(model_config("base", 50257))
    assert 123e6 < model.num_parameters() < 125e6
