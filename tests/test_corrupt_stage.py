"""The `corrupt` stage on real data: static shapes, statistics over a
million tokens, agreement with the collators, determinism across threads and
batch sizes, and one clear error per bad input. Exact small cases and the
T5/fairseq invariants live beside the kernels in `rust/core/src/corrupt`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tokenmill
from tests.conftest import (
    CORRUPTION_COLLATORS,
    folder_bytes,
    long_token_row,
    peak_memory_used,
    read_folder,
    write_shards,
)
from tokenmill import _core
from tokenmill.tokenizer import sentinel_ids

MODES = ("mlm", "span", "bart", "prefix", "ul2")


def uncorrupt_span(inputs: list[int], labels: list[int], sentinels: set[int]) -> list[int]:
    """Puts each sentinel's span back in place (dropping the final EOS)."""
    spans: dict[int, list[int]] = {}
    current = None
    for t in labels[:-1]:
        if t in sentinels:
            current = t
            spans[t] = []
        else:
            assert current is not None, "targets start with a sentinel"
            spans[current].append(t)
    out: list[int] = []
    for t in inputs[:-1]:
        out.extend(spans[t] if t in sentinels else [t])
    return out


def test_span_stage_has_static_shapes_and_uncorrupts(
    pydocs_tokens: Path, pydocs_tokenizer: Path, tokenizer: tokenmill.Tokenizer, tmp_path: Path
) -> None:
    out = tmp_path / "span"
    report = tokenmill.corrupt(
        pydocs_tokens, out, "span", pydocs_tokenizer, input_length=512, progress=False
    )
    table = read_folder(out)
    assert table.schema.names == ["input_ids", "labels"]
    assert report.rows == table.num_rows > 5000
    inputs, labels = table.column("input_ids").to_pylist(), table.column("labels").to_pylist()
    assert {len(r) for r in inputs} == {512} and {len(r) for r in labels} == {114}
    # Concatenated raw rows are 568 tokens; uncorrupting gives them back, in order.
    sentinels = set(sentinel_ids(tokenizer))
    stream = pa.concat_arrays(
        [c for c in read_folder(pydocs_tokens).column("input_ids").chunks]
    ).flatten()
    flat = stream.to_numpy()
    pairs = zip(inputs[:50], labels[:50], strict=True)
    restored = [uncorrupt_span(i, lab, sentinels) for i, lab in pairs]
    assert all(len(r) == 568 for r in restored)
    shard_start = np.concatenate(restored)
    assert np.array_equal(shard_start, flat[: len(shard_start)])


def test_span_statistics_over_a_million_tokens(
    pydocs_tokens: Path, pydocs_tokenizer: Path, tokenizer: tokenmill.Tokenizer, tmp_path: Path
) -> None:
    out = tmp_path / "span"
    tokenmill.corrupt(
        pydocs_tokens, out, "span", pydocs_tokenizer, input_length=512, progress=False
    )
    labels = read_folder(out).column("labels").combine_chunks()
    flat = labels.flatten().to_numpy()
    sentinels = np.array(sentinel_ids(tokenizer))
    eos = tokenizer.token_to_id("</s>")
    spans = int(np.isin(flat, sentinels).sum())
    noise = len(flat) - spans - len(labels)  # one EOS per row
    total = len(labels) * 568
    assert total > 1_000_000
    assert abs(noise / total - 0.15) < 0.005
    assert abs(noise / spans / 3.0 - 1.0) < 0.03
    assert (flat[np.cumsum(np.diff(labels.offsets.to_numpy())) - 1] == eos).all()


def test_mlm_rates_and_specials(
    pydocs_tokens: Path, pydocs_tokenizer: Path, tokenizer: tokenmill.Tokenizer, tmp_path: Path
) -> None:
    out = tmp_path / "mlm"
    tokenmill.corrupt(pydocs_tokens, out, "mlm", pydocs_tokenizer, progress=False)
    table = read_folder(out)
    original = read_folder(pydocs_tokens).column("input_ids").combine_chunks().flatten().to_numpy()
    inputs = table.column("input_ids").combine_chunks().flatten().to_numpy()
    labels = table.column("labels").combine_chunks().flatten().to_numpy()
    assert len(original) > 1_000_000
    vocab = _core.Vocab.from_tokenizer(tokenizer)
    special = np.array([vocab.is_special(i) for i in range(vocab.size)])
    chosen = labels != -100
    assert not chosen[special[original]].any(), "a special token was chosen"
    assert np.array_equal(labels[chosen], original[chosen])
    assert np.array_equal(inputs[~chosen], original[~chosen])
    ordinary = (~special[original]).sum()
    assert abs(chosen.sum() / ordinary - 0.15) < 0.005
    mask = tokenizer.token_to_id("<mask>")
    masked = inputs[chosen] == mask
    kept = inputs[chosen] == original[chosen]
    assert abs(masked.mean() - 0.8) < 0.005
    assert abs(kept.mean() - 0.1) < 0.005  # a random draw equal to the original counts too
    assert not special[inputs[chosen & (inputs != mask)]].any(), "a random token was special"


def test_whole_word_masking_takes_whole_words(
    pydocs_tokens: Path, pydocs_tokenizer: Path, tokenizer: tokenmill.Tokenizer, tmp_path: Path
) -> None:
    out = tmp_path / "wwm"
    tokenmill.corrupt(
        pydocs_tokens, out, "mlm", pydocs_tokenizer, options={"whole_word": True}, progress=False
    )
    column = read_folder(pydocs_tokens).column("input_ids").combine_chunks()
    original = column.flatten().to_numpy()
    labels = read_folder(out).column("labels").combine_chunks().flatten().to_numpy()
    chosen = labels != -100
    row_start = np.zeros(len(original), dtype=bool)
    row_start[column.offsets.to_numpy()[:-1]] = True
    starts = np.array(
        [
            t is None or t.startswith(("Ġ", "Ċ", "▁"))
            for t in map(tokenizer.id_to_token, range(tokenizer.vocab_size))
        ]
    )
    vocab = _core.Vocab.from_tokenizer(tokenizer)
    special = np.array([vocab.is_special(i) for i in range(vocab.size)])
    # A continuation token (not a word start, previous token not special) is
    # chosen exactly when the token before it is.
    cont = ~starts[original[1:]] & ~special[original[1:]] & ~special[original[:-1]] & ~row_start[1:]
    assert np.array_equal(chosen[1:][cont], chosen[:-1][cont])
    ordinary = ~special[original]
    assert abs(chosen.sum() / ordinary.sum() - 0.15) < 0.01


def test_max_predictions_caps_every_row_in_the_stage_and_the_collator(
    pydocs_tokens: Path, pydocs_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "capped"
    options = {"max_predictions": 20, "whole_word": True}
    tokenmill.corrupt(pydocs_tokens, out, "mlm", pydocs_tokenizer, options=options, progress=False)
    labels = read_folder(out).column("labels").to_pylist()
    chosen = np.array([sum(label != -100 for label in row) for row in labels])
    assert chosen.max() <= 20
    # pydocs rows are long: 15% of them is far above 20, so nearly every row is at or near the cap.
    assert np.median(chosen) >= 15
    collate = tokenmill.MLMCollator(pydocs_tokenizer, return_tensors="np", **options)
    rows = read_folder(pydocs_tokens).column("input_ids").to_pylist()[:8]
    batch = collate(rows)
    assert ((batch["labels"] != -100).sum(axis=1) <= 20).all()
    with pytest.raises(tokenmill.ConfigError, match="max predictions 0"):
        tokenmill.MLMCollator(pydocs_tokenizer, max_predictions=0)


@pytest.mark.parametrize("mode", MODES)
def test_stage_and_collator_make_the_same_rows(
    mode: str, short_docs: Path, pydocs_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / mode
    tokenmill.corrupt(short_docs, out, mode, pydocs_tokenizer, seed=7, progress=False)
    stage_rows = read_folder(out)
    source = read_folder(short_docs).slice(0, 40)
    collator = CORRUPTION_COLLATORS[mode](pydocs_tokenizer, seed=7, return_tensors="np")
    dicts = [
        {"id": i, "input_ids": t}
        for i, t in zip(*(source.column(c).to_pylist() for c in ("id", "input_ids")), strict=True)
    ]
    batch = collator(dicts)
    for row in range(40):
        expected_inputs = stage_rows.column("input_ids")[row].as_py()
        expected_labels = stage_rows.column("labels")[row].as_py()
        n = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, :n].tolist() == expected_inputs
        labels = batch["labels"][row]
        if mode in ("mlm", "prefix"):
            assert labels[:n].tolist() == expected_labels
        else:
            assert labels[: len(expected_labels)].tolist() == expected_labels
            assert (labels[len(expected_labels) :] == -100).all()
            start = batch["decoder_input_ids"][row]
            assert start[1 : len(expected_labels)].tolist() == expected_labels[:-1]


@pytest.mark.parametrize("mode", MODES)
def test_output_identical_across_threads_and_batch_sizes(
    mode: str, short_docs: Path, pydocs_tokenizer: Path, tmp_path: Path
) -> None:
    runs = []
    for threads, batch_size in ((1, 7), (2, 1000)):
        _core.set_num_threads(threads)
        try:
            out = tmp_path / f"{threads}"
            tokenmill.corrupt(
                short_docs, out, mode, pydocs_tokenizer, batch_size=batch_size, progress=False
            )
        finally:
            _core.set_num_threads(0)
        runs.append({k: v for k, v in folder_bytes(out).items() if not k.startswith(".tokenmill")})
    assert runs[0] == runs[1]


def test_prefix_and_ul2_outputs(
    pydocs_tokens: Path, pydocs_tokenizer: Path, tokenizer: tokenmill.Tokenizer, tmp_path: Path
) -> None:
    out = tmp_path / "prefix"
    tokenmill.corrupt(
        pydocs_tokens, out, "prefix", pydocs_tokenizer, options={"ratio": 0.25}, progress=False
    )
    table = read_folder(out)
    assert table.schema.names[:3] == ["input_ids", "labels", "prefix_lens"]
    for inputs, labels, (prefix,) in zip(
        *(table.column(c).to_pylist()[:50] for c in ("input_ids", "labels", "prefix_lens")),
        strict=True,
    ):
        assert prefix == min(max(round(len(inputs) * 0.25), 1), len(inputs) - 1)
        assert labels == [-100] * prefix + inputs[prefix:]

    out = tmp_path / "ul2"
    tokenmill.corrupt(pydocs_tokens, out, "ul2", pydocs_tokenizer, input_length=568, progress=False)
    table = read_folder(out)
    modes = [tokenizer.token_to_id(t) for t in ("[NLU]", "[NLG]", "[S2S]")]
    denoiser = table.column("denoiser").to_numpy()
    first = [r[0] for r in table.column("input_ids").to_pylist()]
    expected = [modes[0]] * 2 + [modes[1]] * 4 + [modes[2]]
    assert all(f == expected[d] for f, d in zip(first, denoiser, strict=True))
    counts = np.bincount(denoiser, minlength=7)
    assert counts.min() > 0.6 * len(denoiser) / 7


def test_text_shards_are_tokenized_on_the_fly(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    direct = tmp_path / "direct"
    tokenmill.corrupt(small_dataset, direct, "mlm", small_tokenizer, progress=False)
    tokens = tmp_path / "tokens"
    tokenmill.tokenize(small_dataset, tokens, small_tokenizer, progress=False)
    staged = tmp_path / "staged"
    tokenmill.corrupt(tokens, staged, "mlm", small_tokenizer, progress=False)
    assert read_folder(direct).equals(read_folder(staged))
    assert read_folder(direct).schema.names == ["input_ids", "labels", "id", "lang"]


def test_bad_input_gets_one_clear_error_and_no_output(
    pydocs_tokenizer: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    def shards(rows: list[list[int]]) -> Path:
        folder = tmp_path / f"in{len(list(tmp_path.iterdir()))}"
        return write_shards(
            folder,
            {"a.parquet": pa.table({"input_ids": pa.array(rows, type=pa.list_(pa.uint32()))})},
        )

    cases = [
        (
            shards([[300, 301], [5]]),
            "span",
            {},
            tokenmill.DataError,
            "row 1: the row holds 1 token(s); span corruption needs at least 2",
        ),
        (
            shards([[300, 999_999]]),
            "mlm",
            {},
            tokenmill.DataError,
            "row 0: token id 999999 is outside the vocabulary of 4096",
        ),
        (
            shards([[300, 301]]),
            "mlm",
            {"probability": 1.5},
            tokenmill.ConfigError,
            "the masking probability is 1.5, outside [0, 1]",
        ),
        (
            shards([[300, 301]]),
            "mlm",
            {"mask_token": "<nope>"},
            tokenmill.TokenizerError,
            "the tokenizer has no mask token (<nope>)",
        ),
        (
            shards([[300, 301]]),
            "prefix",
            {"layout": "sideways"},
            tokenmill.ConfigError,
            "layout 'sideways'",
        ),
    ]
    for source, mode, options, error, message in cases:
        out = tmp_path / "out"
        with pytest.raises(error) as caught:
            tokenmill.corrupt(source, out, mode, pydocs_tokenizer, options=options, progress=False)
        assert message in str(caught.value)
        assert not out.exists() or not any(out.glob("*.parquet"))
    # Static rows too long for the sentinels are refused before any output.
    with pytest.raises(tokenmill.ConfigError, match=r"need up to 2\d\d sentinels"):
        tokenmill.corrupt(
            shards([[300, 301]]), tmp_path / "o", "span", pydocs_tokenizer, input_length=4000
        )
    # A tokenizer without sentinels cannot do span corruption.
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(WORD_LEVEL))
    with pytest.raises(tokenmill.TokenizerError, match="no sentinel tokens"):
        tokenmill.SpanCorruptionCollator(plain)
    with pytest.raises(tokenmill.TokenizerError, match="no mask token"):
        tokenmill.MLMCollator(plain)


WORD_LEVEL = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [],
    "normalizer": None,
    "pre_tokenizer": {"type": "Whitespace"},
    "post_processor": None,
    "decoder": None,
    "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "a": 1, "b": 2}, "unk_token": "<unk>"},
}


def test_saved_word_ids_drive_whole_word_masking(
    small_dataset: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokenmill.tokenize(small_dataset, tokens, small_tokenizer, word_ids=True, progress=False)
    table = read_folder(tokens)
    assert table.schema.field("word_ids").type == pa.list_(pa.field("item", pa.int32(), False))
    ids, words = table.column("input_ids").to_pylist(), table.column("word_ids").to_pylist()
    assert all(len(i) == len(w) for i, w in zip(ids, words, strict=True))
    assert all(w[-1] == -1 for w in words if w), "the EOS belongs to no word"
    out = tmp_path / "wwm"
    tokenmill.corrupt(
        tokens,
        out,
        "mlm",
        small_tokenizer,
        options={"whole_word": True, "probability": 0.5},
        progress=False,
    )
    labels = read_folder(out).column("labels").to_pylist()
    for word_ids, row_labels in zip(words, labels, strict=True):
        chosen: dict[int, set[bool]] = {}
        for w, label in zip(word_ids, row_labels, strict=True):
            if w >= 0:
                chosen.setdefault(w, set()).add(label != -100)
        assert all(len(v) == 1 for v in chosen.values()), "a word was split"
    # The collator reads them from dict rows too.
    collator = tokenmill.MLMCollator(small_tokenizer, whole_word=True, return_tensors="np")
    batch = collator([{"id": "x", "input_ids": ids[0], "word_ids": words[0]}])
    assert batch["labels"].shape == (1, len(ids[0]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_size", [2048, 5])
@pytest.mark.parametrize("length", [16, None])
def test_a_bad_row_is_named_by_its_input_row_with_input_length(
    mode: str, batch_size: int, length: int | None, small_tokenizer: Path, tmp_path: Path
) -> None:
    """Rows cut and joined to --input-length hold pieces of several input
    rows: an id outside the vocabulary was reported at the output row's
    number (plus the batch's first row), never the input row holding it;
    and, with or without it, null rows skipped before it moved it up."""
    vocab = tokenmill.load_tokenizer(small_tokenizer).vocab_size
    rows: list[list[int] | None] = [[5 + i % 7] * 7 for i in range(40)]
    rows[23][3] = vocab + 5  # type: ignore[index]
    rows[2] = rows[20] = None  # skipped: they move no other row's number
    table = pa.table({"input_ids": pa.array(rows, pa.list_(pa.uint32()))})
    source = write_shards(tmp_path / "in", {"s.parquet": table})
    with pytest.raises(tokenmill.DataError) as err:
        tokenmill.corrupt(
            source,
            tmp_path / "out",
            mode,
            small_tokenizer,
            input_length=length,
            nulls="skip",
            batch_size=batch_size,
            progress=False,
        )
    assert err.value.row == 23
    assert str(err.value) == (
        f"{source / 's.parquet'}: row 23: token id {vocab + 5} is outside the vocabulary "
        f"of {vocab}; pass the tokenizer the data was tokenized with"
    )


@pytest.mark.parametrize("length", [16, None])
def test_a_negative_id_after_skipped_rows_names_its_row(
    length: int | None, small_tokenizer: Path, tmp_path: Path
) -> None:
    rows: list[list[int] | None] = [[5] * 7 for _ in range(10)]
    rows[1], rows[6] = None, [5, 5, -3, 5]
    table = pa.table({"input_ids": pa.array(rows, pa.list_(pa.int32()))})
    source = write_shards(tmp_path / "in", {"s.parquet": table})
    with pytest.raises(tokenmill.DataError, match="row 6: column 'input_ids' holds the negative"):
        tokenmill.corrupt(
            source,
            tmp_path / "out",
            "mlm",
            small_tokenizer,
            input_length=length,
            nulls="skip",
            progress=False,
        )


def test_a_problem_of_a_joined_row_names_the_input_rows_it_is_made_of(
    small_tokenizer: Path, tmp_path: Path
) -> None:
    """An error about a whole --input-length row (its documents are too
    short to hold T5's spans) names its first input row and the rest."""
    documents = [[5]] * 3 + [[5] * 40] + [[6]] * 40
    table = pa.table({"input_ids": pa.array(documents, pa.list_(pa.uint32()))})
    source = write_shards(tmp_path / "in", {"s.parquet": table})
    with pytest.raises(tokenmill.DataError) as err:
        tokenmill.corrupt(
            source, tmp_path / "out", "span", small_tokenizer, input_length=16, progress=False
        )
    assert err.value.row == 12
    assert str(err.value).startswith(f"{source / 's.parquet'}: row 12: its 17 documents are")
    assert "(in a row of --input-length tokens made of input rows 12 to 28)" in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "input_length"), [("mlm", None), ("span", 512)])
def test_one_long_document_corrupts_in_memory_a_small_multiple_of_it(
    mode: str, input_length: int | None, pydocs_tokenizer: Path, tmp_path: Path
) -> None:
    """Rows cut at --input-length (span) once took up to 8.4 times a
    50M-token document's 200 MB: the packer copied the document and built
    position ids no one read, and freed buffers stayed with pyarrow's
    allocator. The row corrupted whole (mlm) stays at about 8 times: its
    inputs and labels are twice the row, and Parquet needs some 5 times a
    row more to write one (README, Performance)."""
    tokens = 20_000_000
    source = long_token_row(tmp_path / "long", tokens)
    call = (
        f"tokenmill.corrupt(source, out, {mode!r}, {str(pydocs_tokenizer)!r}, "
        f"input_length={input_length}, progress=False)"
    )
    used = peak_memory_used(call, source.with_suffix(".small"), source, tmp_path)
    bound = 9 if input_length is None else 5
    assert used < bound * 4 * tokens + (160 << 20), f"{used / 2**20:.0f} MiB for one document"
    rows = pq.read_metadata(tmp_path / "out" / "long.parquet").num_rows
    assert rows == (1 if input_length is None else tokens // 568)  # 568 raw tokens make 512
