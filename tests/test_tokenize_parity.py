"""The fast encoder gives exactly the ids of Python `tokenizers` (the same
Rust crate's reference), on every document of the shared corpora, with
every shared tokenizer file and a BPE tokenmill trained; files it cannot
prove identical go to the exact path and say why."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenmill
from tokenmill.dataset import open_dataset

from .conftest import corpus, shared_tokenizer

SHARED = ["gpt2", "cl100k_base", "o200k_base", "bert-base-uncased-wordpiece"]
CORPORA = ["pydocs", "licenses", "debref"]


def _reference(path: Path) -> tokenizers.Tokenizer:
    reference = tokenizers.Tokenizer.from_file(str(path))
    # tokenmill never truncates or pads a document; neither may the reference.
    reference.no_truncation()
    reference.no_padding()
    return reference


@pytest.fixture(scope="module")
def texts() -> dict[str, pa.Array]:
    return {
        name: open_dataset(corpus(name)).to_table(columns=["text"]).column("text").combine_chunks()
        for name in CORPORA
    }


def _first_difference(got: list[list[int]], expected: list[list[int]]) -> str:
    for row, (g, e) in enumerate(zip(got, expected, strict=True)):
        if g != e:
            at = next(
                (i for i, (a, b) in enumerate(zip(g, e, strict=False)) if a != b),
                min(len(g), len(e)),
            )
            return f"row {row}, token {at}: {g[at : at + 5]} != {e[at : at + 5]}"
    return "none"


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARED)
def test_every_document_matches_with_every_shared_tokenizer(
    name: str, texts: dict[str, pa.Array]
) -> None:
    path = shared_tokenizer(name)
    ours = tokenmill.load_tokenizer(path)
    assert ours.encoder.startswith("fast: "), ours.encoder
    reference = _reference(path)
    specials = [False, True] if "wordpiece" in name else [False]
    for corpus_name, column in texts.items():
        as_list = column.to_pylist()
        for add_special_tokens in specials:
            expected = [
                e.ids
                for e in reference.encode_batch_fast(as_list, add_special_tokens=add_special_tokens)
            ]
            got = ours.tokenize(column, add_special_tokens=add_special_tokens).to_pylist()
            assert got == expected, f"{name} on {corpus_name}: {_first_difference(got, expected)}"


@pytest.mark.slow
def test_every_document_matches_with_a_trained_bpe(
    pydocs_tokenizer: Path, texts: dict[str, pa.Array]
) -> None:
    ours = tokenmill.load_tokenizer(pydocs_tokenizer)
    assert ours.encoder.startswith("fast: byte-level BPE, gpt2 pre-tokenizer"), ours.encoder
    reference = _reference(pydocs_tokenizer)
    for corpus_name, column in texts.items():
        expected = [e.ids for e in reference.encode_batch_fast(column.to_pylist())]
        got = ours.tokenize(column).to_pylist()
        assert got == expected, f"{corpus_name}: {_first_difference(got, expected)}"


@pytest.mark.parametrize("name", SHARED)
def test_word_ids_match_on_debref(name: str, texts: dict[str, pa.Array]) -> None:
    path = shared_tokenizer(name)
    column = texts["debref"].slice(0, 400)
    ids, words = tokenmill.load_tokenizer(path).tokenize_words(column)
    expected = _reference(path).encode_batch(column.to_pylist(), add_special_tokens=False)
    assert ids.to_pylist() == [e.ids for e in expected]
    assert words.to_pylist() == [[-1 if w is None else w for w in e.word_ids] for e in expected]


def _edited(path: Path, tmp_path: Path, edit: dict[str, object]) -> Path:
    config = json.loads(path.read_text())
    config.update(edit)
    out = tmp_path / f"edited-{path.name}"
    out.write_text(json.dumps(config))
    return out


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"normalizer": {"type": "Lowercase"}}, "the normalizer Lowercase"),
        (
            {
                "pre_tokenizer": {
                    "type": "Split",
                    "pattern": {"Regex": r"\w+|\s+"},
                    "behavior": "Isolated",
                    "invert": False,
                }
            },
            "the pre-tokenizer",
        ),
    ],
)
def test_what_the_fast_path_cannot_prove_goes_to_the_exact_path(
    edit: dict[str, object], reason: str, tmp_path: Path, texts: dict[str, pa.Array]
) -> None:
    path = _edited(shared_tokenizer("gpt2"), tmp_path, edit)
    ours = tokenmill.load_tokenizer(path)
    assert ours.encoder.startswith("exact: the tokenizers crate"), ours.encoder
    assert reason in ours.encoder
    column = texts["debref"].slice(0, 50)
    expected = [e.ids for e in _reference(path).encode_batch_fast(column.to_pylist())]
    assert ours.tokenize(column).to_pylist() == expected


def test_an_added_token_with_strip_rules_goes_to_the_exact_path(tmp_path: Path) -> None:
    path = shared_tokenizer("gpt2")
    config = json.loads(path.read_text())
    config["added_tokens"][0]["lstrip"] = True
    edited = tmp_path / "lstrip.json"
    edited.write_text(json.dumps(config))
    ours = tokenmill.load_tokenizer(edited)
    assert "lstrip" in ours.encoder and ours.encoder.startswith("exact: ")
    text = "a   <|endoftext|> b"
    assert ours.encode(text) == _reference(edited).encode(text).ids


# Whitespace of every kind, contraction letters (and the long s, which
# `(?i)` folds to s), symbols, digits of several scripts, letters of
# several cases and scripts, combining marks, joiners, emoji and added tokens.
TRICKY = st.sampled_from(
    [
        *" \n\r\t\u00a0\u3000\u0085\x0b'sStlLdrevm\u017f/.,!<|>[]-_07\u0663\u00b2\u216b",
        *" aZ\u00e9\u01c5\u02b0\u00df\u4e2d\u30a2\ud55c\u0627",
        *["\u0301", "\u0308", "\u094d", "\u200d", "\ufe0f", "\U0001f44d", "\U0001f3fd"],
        "<|endoftext|>",
        "[MASK]",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(TRICKY, st.characters(codec="utf-8")),
        max_size=40,
    ).map("".join)
)
def test_random_text_matches(text: str) -> None:
    for name in SHARED:
        path = shared_tokenizer(name)
        ours, reference = _loaded(path)
        for add_special_tokens in (False, True):
            assert (
                ours.encode(text, add_special_tokens)
                == reference.encode(text, add_special_tokens=add_special_tokens).ids
            ), (name, text)


_LOADED: dict[Path, tuple[tokenmill.Tokenizer, tokenizers.Tokenizer]] = {}


def _loaded(path: Path) -> tuple[tokenmill.Tokenizer, tokenizers.Tokenizer]:
    if path not in _LOADED:
        _LOADED[path] = (tokenmill.load_tokenizer(path), _reference(path))
    return _LOADED[path]
