"""The model families: masks keep what they promise, and each family can learn."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tokenmill.train.models import (  # noqa: E402
    HAVE_FLEX,
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
    with torch.device("meta"):  # counts parameters without allocating them
        model = DecoderLM(model_config("base", 50257))
    assert 123e6 < model.num_parameters() < 125e6


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("with_prefix", [True, False])
def test_flex_mask_mod_matches_the_dense_mask(causal: bool, with_prefix: bool) -> None:
    # The FlexAttention rule, evaluated densely on the CPU, is the dense
    # boolean mask SDPA gets, including over the padding to FLEX_BLOCK.
    docs = torch.tensor([[0, 0, 0, 1, 1, 1, 1, -1, -1], [2, 2, 2, 2, 3, 3, 4, -1, -1]])
    prefix = torch.tensor([[1, 1, 0, 1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 1, 0, 1, 0, 0]]).bool()
    mask = AttentionMask(docs, causal=causal, prefix=prefix if with_prefix else None)
    dense = mask.dense()[:, 0]
    width = 16
    mask_mod = mask.mask_mod(width)
    b = torch.arange(2)[:, None, None]
    q = torch.arange(width)[None, :, None]
    k = torch.arange(width)[None, None, :]
    grid = mask_mod(b, torch.zeros_like(b), q, k)
    assert torch.equal(grid[:, :9, :9], dense)
    assert not grid[:, :7, 7:].any()  # real tokens never reach the padding
    assert torch.equal(grid[:, 9:, 9:].diagonal(dim1=1, dim2=2), torch.ones(2, 7, dtype=torch.bool))
    if HAVE_FLEX:
        from torch.nn.attention.flex_attention import create_mask

        created = create_mask(mask.mask_mod(), 2, 1, 9, 9, device="cpu")
        assert torch.equal(created[:, 0], dense)


def test_padding_masks_use_sdpa_and_match_the_dense_rule() -> None:
    real = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    q, k, v = (torch.randn(2, 2, 6, 8) for _ in range(3))
    for causal in (True, False):
        padding = AttentionMask.padding(real, causal=causal)
        assert padding.document_ids is None and not padding.flex(q)
        reference = AttentionMask(torch.where(real.bool(), 0, -1), causal=causal)
        got, want = padding.attend(q, k, v, 0.0), reference.attend(q, k, v, 0.0)
        assert torch.allclose(got[0, :, :4], want[0, :, :4], atol=1e-6)
        assert torch.allclose(got[1], want[1], atol=1e-6)


def test_decoder_loss_is_next_token_cross_entropy() -> None:
    model = DecoderLM(config())
    ids = torch.randint(0, VOCAB, (2, 10))
    loss, logits = model(ids, ids)
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1)
    )
    assert torch.allclose(loss, expected)


def test_encoder_decoder_logits_never_see_their_own_target() -> None:
    # decoder_input_ids[t + 1] is labels[t]: changing it must leave the
    # logits at positions <= t alone, and change the later ones.
    model = EncoderDecoder(config())
    model.eval()
    inputs = torch.randint(4, VOCAB, (1, 8))
    labels = torch.randint(4, VOCAB, (1, 6))
    ones8, ones6 = torch.ones(1, 8, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)

    def logits(targets: torch.Tensor) -> torch.Tensor:
        decoder_inputs = torch.cat([torch.zeros(1, 1, dtype=torch.long), targets[:, :-1]], 1)
        with torch.no_grad():
            return model(
                inputs,
                decoder_inputs,
                targets,
                attention_mask=ones8,
                decoder_attention_mask=ones6,
            )[1]

    base = logits(labels)
    t = 2
    changed = labels.clone()
    changed[0, t] = (changed[0, t] + 1) % VOCAB
    after = logits(changed)
    assert torch.equal(base[:, : t + 1], after[:, : t + 1])
    assert not torch.allclose(base[:, t + 1 :], after[:, t + 1 :])


def test_mlm_projects_only_the_masked_positions() -> None:
    model = EncoderMLM(config())
    ids = torch.randint(0, VOCAB, (2, 12))
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 5], labels[1, 7] = 1, 2, 3
    docs = torch.zeros_like(ids)
    loss, logits = model(ids, labels, document_ids=docs)
    assert logits.shape == (3, VOCAB)
    _, full = model(ids, document_ids=docs)
    assert torch.allclose(logits, full[labels != -100], atol=1e-5)
    expected = torch.nn.functional.cross_entropy(full[labels != -100], labels[labels != -100])
    assert torch.allclose(loss, expected, atol=1e-5)


def test_every_family_an_objective_names_has_a_model() -> None:
    from tokenmill.objectives import FAMILIES as NAMES
    from tokenmill.train.models import FAMILIES

    assert tuple(FAMILIES) == NAMES
