"""Fuzzing every collator: random rows, in random batch forms, padded on a
random side, with random bad values and option values.

A collator either refuses the batch with a tokenmill error or returns one it
got right: each row's outputs undo to exactly its tokens (span corruption
un-corrupts, BART's labels are the row, MLM changes only labelled positions,
a prefix plus its target is the row), every output has one row per input
row, and padding is never labelled. A batch holding a bad id, a null row or
a mask that is not padding is always refused. Budget: TOKENMILL_FUZZ_EXAMPLES
examples per test (default 60)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenmill
from tests.conftest import CORRUPTION_COLLATORS
from tokenmill.collate import CausalLMCollator
from tokenmill.tokenizer import sentinel_ids

EXAMPLES = int(os.environ.get("TOKENMILL_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Ids drawn for rows: past the special tokens, inside the 4096 vocabulary.
FIRST_ID, VOCAB = 300, 4096
BAD_IDS = (-1, -(2**31), VOCAB, 2**32 - 1, 2**32 + 7, 2**40)
FORMS = (
    "lists",
    "numpy rows",
    "tensor rows",
    "dict rows",
    "dict rows with mask",
    "arrow list",
    "record batch",
    "padded left",
    "padded right",
    "matrix",
)


@pytest.fixture(scope="module")
def tokenizer(pydocs_tokenizer: Path) -> tokenmill.Tokenizer:
    return tokenmill.load_tokenizer(pydocs_tokenizer)


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    """Rows, the form they come in, and what is wrong with them (if anything)."""
    count = draw(st.integers(1, 6))
    lengths = draw(st.lists(st.integers(0, 40), min_size=count, max_size=count))
    form = draw(st.sampled_from(FORMS))
    if form == "matrix":
        lengths = [lengths[0]] * count
    rows = [
        draw(st.lists(st.integers(FIRST_ID, VOCAB - 1), min_size=n, max_size=n)) for n in lengths
    ]
    fault = draw(st.sampled_from(["none", "none", "none", "bad id", "null row", "bad mask"]))
    if fault == "bad id" and any(rows):
        r = draw(st.sampled_from([i for i, row in enumerate(rows) if row]))
        rows[r][draw(st.integers(0, len(rows[r]) - 1))] = draw(st.sampled_from(BAD_IDS))
    elif fault == "null row" and form in ("arrow list", "record batch"):
        pass
    elif fault == "bad mask" and form in ("padded left", "padded right", "dict rows with mask"):
        fault = fault if any(rows) else "none"
    else:
        fault = "none"
    return {
        "rows": rows,
        "form": form,
        "fault": fault,
        "null_row": draw(st.integers(0, count - 1)),
        "int_type": draw(st.sampled_from([pa.int64(), pa.int32(), pa.uint32()])),
        "pad_value": draw(st.sampled_from([0, 1, 7])),
    }


def make_form(case: dict[str, Any]) -> Any:
    rows, form = case["rows"], case["form"]
    bad_values = any(not (0 <= t < 2**32) for row in rows for t in row)
    if form == "lists":
        return rows
    if form in ("numpy rows", "tensor rows"):
        arrays = [np.array(r, dtype=np.int64 if bad_values else np.uint32) for r in rows]
        if any(abs(t) >= 2**63 for row in rows for t in row):
            return rows
        if form == "tensor rows":
            return [torch.from_numpy(a.astype(np.int64)) for a in arrays]
        return arrays
    if form == "dict rows":
        return [{"input_ids": r} for r in rows]
    if form in ("arrow list", "record batch"):
        fits = {pa.int64(): 2**63, pa.int32(): 2**31, pa.uint32(): 2**32}[case["int_type"]]
        low = 0 if case["int_type"] == pa.uint32() else -fits
        in_type = all(low <= t < fits for row in rows for t in row)
        value_type = case["int_type"] if in_type else pa.int64()
        items: list[Any] = [list(r) for r in rows]
        if case["fault"] == "null row":
            items[case["null_row"]] = None
        if bad_values and any(not (-(2**63) <= t < 2**63) for row in rows for t in row):
            return rows
        array = pa.array(items, type=pa.list_(value_type))
        return array if form == "arrow list" else pa.record_batch({"input_ids": array})
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), case["pad_value"], dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        start = width - len(row) if form == "padded left" else 0
        ids[r, start : start + len(row)] = row
        mask[r, start : start + len(row)] = 1
    if case["fault"] == "bad mask":
        r = case["null_row"]
        if mask[r].sum() >= 3:
            first = int(np.argmax(mask[r]))
            mask[r, first + 1] = 0  # a hole: no longer padding
        else:
            mask[r, 0] = 2
    if form == "matrix":
        return ids
    if form == "dict rows with mask":
        return [
            {"input_ids": i.tolist(), "attention_mask": m.tolist()}
            for i, m in zip(ids, mask, strict=True)
        ]
    return {"input_ids": ids, "attention_mask": mask}


def real(values: np.ndarray, mask: np.ndarray | None, pad: int) -> list[int]:
    """The unpadded part of one output row (padding is always on the right)."""
    if mask is not None:
        ones = mask.astype(bool)
        count = int(ones.sum())
        assert ones[:count].all(), "outputs are right-padded"
        return values[:count].tolist()
    values = values.tolist()
    while values and values[-1] == pad:
        values.pop()
    return values


def untargeted(labels: np.ndarray) -> list[int]:
    return labels[labels != -100].tolist()


def uncorrupt(inputs: list[int], labels: list[int], sentinels: set[int], eos: int) -> list[int]:
    assert inputs[-1] == eos and labels[-1] == eos
    spans: dict[int, list[int]] = {}
    current = None
    for t in labels[:-1]:
        if t in sentinels:
            assert t not in spans, "each sentinel opens one span"
            current, spans[t] = t, []
        else:
            assert current is not None, "targets start with a sentinel"
            spans[current].append(t)
    out: list[int] = []
    for t in inputs[:-1]:
        out.extend(spans.pop(t) if t in sentinels else [t])
    assert not spans, "every target span has its sentinel in the input"
    return out


def options_for(mode: str) -> st.SearchStrategy[dict[str, Any]]:
    rate = st.one_of(st.floats(0, 1), st.sampled_from([-0.1, 1.5, math.nan, math.inf]))
    if mode == "mlm":
        return st.fixed_dictionaries(
            {},
            optional={
                "probability": rate,
                "mask_rate": st.floats(0, 1),
                "random_rate": st.floats(0, 0.2),
                "whole_word": st.booleans(),
                "span": st.booleans(),
            },
        )
    if mode == "span":
        return st.fixed_dictionaries(
            {},
            optional={
                "noise_density": st.one_of(st.floats(0.01, 0.9), st.sampled_from([0.0, 1.0, -1.0])),
                "mean_span": st.one_of(st.floats(1, 8), st.sampled_from([0.0, math.nan])),
            },
        )
    if mode == "bart":
        return st.fixed_dictionaries(
            {},
            optional={
                "mask_ratio": rate,
                "random_ratio": st.floats(0, 1),
                "insert_ratio": st.floats(0, 1),
                "rotate_ratio": st.floats(0, 1),
                "permute_sentence_ratio": st.floats(0, 1),
                "poisson_lambda": st.one_of(st.floats(0.5, 6), st.sampled_from([0.0, -1.0])),
            },
        )
    if mode == "prefix":
        return st.fixed_dictionaries(
            {},
            optional={
                "ratio": st.one_of(st.none(), st.floats(0, 1), st.sampled_from([1.5, math.nan])),
                "layout": st.sampled_from(["decoder", "encoder-decoder", "sideways"]),
            },
        )
    return st.just({})


def out_of_domain(mode: str, options: dict[str, Any]) -> bool:
    """Whether a collator must refuse these options (the domain each documents)."""

    def outside(name: str, low: float, high: float) -> bool:
        value = options.get(name)
        return value is not None and not low <= value <= high

    if any(isinstance(v, float) and not math.isfinite(v) for v in options.values()):
        return True
    if mode == "mlm":
        rates = options.get("mask_rate", 0.8) + options.get("random_rate", 0.1)
        return outside("probability", 0, 1) or rates > 1
    if mode == "span":
        return outside("noise_density", 0, 1) or outside("mean_span", 1, math.inf)
    if mode == "bart":
        lam = options.get("poisson_lambda", 3.5)
        return outside("mask_ratio", 0, 1) or not 0 < lam <= 100
    if mode == "prefix":
        return outside("ratio", 0, 1) or options.get("layout", "decoder") == "sideways"
    return False


def call(collate: Callable[[Any], dict[str, Any]], batch: Any) -> dict[str, Any] | None:
    """The batch, or None where a tokenmill error refused it; any other
    exception (a Rust panic is a BaseException) fails the test."""
    try:
        return collate(batch)
    except tokenmill.TokenmillError:
        return None


def check_refused(case: dict[str, Any], out: dict[str, Any] | None) -> bool:
    """Bad batches must be refused; True when the batch was good and collated."""
    if case["fault"] != "none":
        assert out is None, f"a batch with a {case['fault']} was collated"
        return False
    return out is not None


@FUZZ
@given(case=batches(), data=st.data())
def test_causal_lm_collator(case: dict[str, Any], data: st.DataObject) -> None:
    documents = data.draw(st.booleans())
    vocab_size = data.draw(st.sampled_from([None, VOCAB]))
    collate = CausalLMCollator(
        pad_id=data.draw(st.sampled_from([0, 1])),
        mask_document_starts=documents,
        vocab_size=vocab_size,
        return_tensors="np",
    )
    if vocab_size is None and all(0 <= t < 2**32 for row in case["rows"] for t in row):
        case = {**case, "fault": "none" if case["fault"] == "bad id" else case["fault"]}
    out = call(collate, make_form(case))
    if not check_refused(case, out):
        return
    assert out is not None
    rows = case["rows"]
    assert out["input_ids"].shape[0] == len(rows)
    for r, row in enumerate(rows):
        mask = out["attention_mask"][r]
        assert real(out["input_ids"][r], mask, -1) == row
        labels = out["labels"][r]
        expected = row[1:] if documents and row else row
        assert untargeted(labels) == expected
        assert (labels[mask == 0] == -100).all()
        assert out["position_ids"][r][: len(row)].tolist() == list(range(len(row)))


@FUZZ
@given(case=batches(), mode=st.sampled_from(sorted(CORRUPTION_COLLATORS)), data=st.data())
def test_corruption_collators(
    tokenizer: tokenmill.Tokenizer, case: dict[str, Any], mode: str, data: st.DataObject
) -> None:
    options = data.draw(options_for(mode))
    try:
        collate = CORRUPTION_COLLATORS[mode](
            tokenizer,
            seed=data.draw(st.integers(0, 2**32)),
            pad_to_multiple_of=data.draw(st.integers(1, 8)),
            return_tensors="np",
            **options,
        )
    except tokenmill.ConfigError:
        assert out_of_domain(mode, options), options
        return
    assert not out_of_domain(mode, options), f"{options} accepted"
    out = call(collate, make_form(case))
    rows = case["rows"]
    if case["fault"] == "none" and out is None:
        # The one refusal a good batch may get: a row too short for the mode.
        assert mode != "mlm" and mode != "bart" and min(len(r) for r in rows) < 2, (mode, options)
        return
    if not check_refused(case, out):
        return
    assert out is not None
    for name, value in out.items():
        assert len(value) == len(rows), name
        if value.ndim == 2 and name != "prefix_lens":
            assert value.shape[1] % collate.pad_to_multiple_of == 0, name
    pad = collate.pad_id
    eos = tokenizer.token_to_id("</s>")
    sentinels = set(sentinel_ids(tokenizer))
    for r, row in enumerate(rows):
        inputs = real(out["input_ids"][r], out["attention_mask"][r], pad)
        labels = out["labels"][r]
        if mode == "mlm":
            assert len(inputs) == len(row)
            targeted = labels[: len(row)] != -100
            assert (labels[len(row) :] == -100).all()
            assert labels[: len(row)][targeted].tolist() == np.array(row)[targeted].tolist()
            kept = np.array(inputs)[~targeted] if row else np.array([])
            assert kept.tolist() == np.array(row)[~targeted].tolist()
        elif mode == "span":
            assert uncorrupt(inputs, untargeted(labels), sentinels, eos) == row
        elif mode == "bart":
            assert untargeted(labels) == row
        elif mode == "prefix" and collate.options["layout"] == "decoder":
            assert inputs == row
            prefix = int(out["prefix_len"][r])
            assert 1 <= prefix < len(row)
            assert labels[:prefix].tolist() == [-100] * prefix
            assert untargeted(labels) == row[prefix:]
        elif mode == "prefix":
            target = untargeted(labels)
            assert target[-1] == eos
            assert (
                inputs[:-1] + target[:-1] == row
                if inputs[-1] == eos
                else inputs + target[:-1] == row
            )
        else:
            modes = [tokenizer.token_to_id(t) for t in ("[NLU]", "[NLG]", "[S2S]")]
            denoiser = int(out["denoiser"][r])
            # UL2's seven denoisers: two R, four X (span corruption), one S (prefix LM).
            assert inputs[0] == modes[0 if denoiser < 2 else 1 if denoiser < 6 else 2]
            if denoiser == 6:
                assert inputs[1:] + untargeted(labels)[:-1] == row
            else:
                assert uncorrupt(inputs[1:], untargeted(labels), sentinels, eos) == row
        if "decoder_input_ids" in out:
            decoder = out["decoder_input_ids"][r]
            target = labels.copy()
            target[target == -100] = pad
            assert decoder[1:].tolist() == target[:-1].tolist()


@st.composite
def pair_rows(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 5))
    negatives = draw(st.integers(0, 3))
    token_row = st.lists(st.integers(FIRST_ID, VOCAB - 1), max_size=12)
    rows = [
        {
            "query": draw(token_row),
            "positive": draw(token_row),
            **(
                {"negatives": draw(st.lists(token_row, min_size=negatives, max_size=negatives))}
                if negatives
                else {}
            ),
        }
        for _ in range(count)
    ]
    fault = draw(st.sampled_from(["none", "none", "bad id", "null"]))
    r = draw(st.integers(0, count - 1))
    column = draw(st.sampled_from(["query", "positive"]))
    if fault == "bad id":
        # No vocabulary here: only ids outside [0, 2^32) are bad.
        bad = draw(st.sampled_from([b for b in BAD_IDS if not 0 <= b < 2**32]))
        rows[r][column] = [*rows[r][column], bad]
    elif fault == "null":
        rows[r][column] = None
    return {"rows": rows, "fault": fault, "arrow": draw(st.booleans())}


@FUZZ
@given(case=pair_rows(), data=st.data())
def test_contrastive_collator(case: dict[str, Any], data: st.DataObject) -> None:
    rows = case["rows"]
    query_max = data.draw(st.sampled_from([None, 1, 4]))
    doc_max = data.draw(st.sampled_from([None, 2, 8]))
    collate = tokenmill.ContrastiveCollator(
        pad_id=0, query_max_length=query_max, doc_max_length=doc_max, return_tensors="np"
    )
    batch: Any = rows
    if case["arrow"]:
        fits = all(
            v is None or all(-(2**63) <= t < 2**63 for t in v)
            for row in rows
            for v in (row["query"], row["positive"])
        )
        if fits:
            batch = pa.Table.from_pylist(rows)
    out = call(collate, batch)
    if not check_refused(case, out):
        return
    assert out is not None
    count = len(rows)
    negatives = [n for row in rows for n in row.get("negatives", [])]
    assert out["labels"].tolist() == list(range(count))
    assert len(out["query_input_ids"]) == count
    assert len(out["doc_input_ids"]) == count + len(negatives)
    documents = [row["positive"] for row in rows] + negatives
    for prefix, texts, limit in (
        ("query", [row["query"] for row in rows], query_max),
        ("doc", documents, doc_max),
    ):
        ids, mask = out[f"{prefix}_input_ids"], out[f"{prefix}_attention_mask"]
        for r, tokens in enumerate(texts):
            assert real(ids[r], mask[r], -1) == tokens[:limit]
