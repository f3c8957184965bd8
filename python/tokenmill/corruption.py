"""The corruption engine's Python face: one call builds a mode's corruptor
from a tokenizer, resolving the special tokens each mode needs.

The same corruptor runs in the `corrupt` stage (over Arrow shards) and in the
collators of :mod:`tokenmill.collate` (over padded batches), so for the same
seed, epoch and row keys both produce the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenmill._core import ConfigError, Corruptor, Tokenizer, TokenizerError, Vocab
from tokenmill.tokenizer import load_tokenizer

MODES = ("mlm", "span", "bart", "prefix", "ul2")

MASK_CANDIDATES = ("<mask>", "[MASK]", "<MASK>")
EOS_CANDIDATES = ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>")
SENTENCE_END_CANDIDATES = (".", "!", "?", "Ġ.", "▁.")
UL2_MODE_TOKENS = ("[NLU]", "[NLG]", "[S2S]")

#: The options each mode takes, with their defaults (None: resolved from the
#: tokenizer, or off).
MODE_OPTIONS: dict[str, dict[str, Any]] = {
    "mlm": {
        "probability": 0.15,
        "mask_rate": 0.8,
        "random_rate": 0.1,
        "whole_word": False,
        "span": False,
        "span_p": 0.2,
        "span_max": 10,
        "mask_token": None,
    },
    "span": {
        "noise_density": 0.15,
        "mean_span": 3.0,
        "sentinels_from_top": None,
        "eos": True,
        "eos_token": None,
    },
    "bart": {
        "mask_ratio": 0.3,
        "random_ratio": 0.1,
        "insert_ratio": 0.0,
        "rotate_ratio": 0.0,
        "permute_sentence_ratio": 1.0,
        "delete_ratio": 0.0,
        "poisson_lambda": 3.5,
        "mask_length": "span-poisson",
        "replace_length": 1,
        "sentence_ends": None,
        "mask_token": None,
    },
    "prefix": {"ratio": None, "layout": "decoder", "eos": True, "eos_token": None},
    "ul2": {"sentinels_from_top": None, "eos": True, "eos_token": None},
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _find(tokenizer: Tokenizer, candidates: Sequence[str]) -> int | None:
    for token in candidates:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return None


def _require(
    tokenizer: Tokenizer,
    name: str | None,
    candidates: Sequence[str],
    what: str,
    flag: str | None,
) -> int:
    """The id of `name` (or of the first of `candidates` the vocabulary has).

    `flag` is the option that names the token, None where there is none, so
    the fix never points at an option that does not exist.
    """
    wanted = (name,) if name else tuple(candidates)
    token_id = _find(tokenizer, wanted)
    if token_id is None:
        fix = "use a tokenizer that has one"
        if flag is not None:
            fix += f", or name it with {flag}"
        raise TokenizerError(f"the tokenizer has no {what} token ({' or '.join(wanted)}); {fix}")
    return token_id


def _sentinel_room_at_top(tokenizer: Tokenizer) -> int:
    """How many ids count down from the vocabulary's top before the first special token.

    A special token taken as a sentinel would make the engine write <pad> or
    </s> in place of a span, and read them back as span boundaries.
    """
    vocab = Vocab.from_tokenizer(tokenizer)
    room = 0
    while room < tokenizer.vocab_size and not vocab.is_special(tokenizer.vocab_size - 1 - room):
        room += 1
    return room


def sentinel_ids(tokenizer: Tokenizer, from_top: int | None = None) -> list[int]:
    """`<extra_id_0>`, `<extra_id_1>`, ... in order, as the tokenizer has them;
    or, with `from_top=N`, the N ids counting down from the top of the
    vocabulary, as T5's vocabulary places them."""
    if from_top is not None:
        usable = _sentinel_room_at_top(tokenizer)
        if not 0 < from_top <= usable:
            raise ConfigError(
                f"--sentinels-from-top {from_top} is not between 1 and {usable}: below the "
                f"top {usable} ids of the {tokenizer.vocab_size}-token vocabulary lie special "
                f"tokens (<pad>, <s>, </s>...), never sentinels; pass --sentinels-from-top "
                f"{usable} or less"
            )
        return [tokenizer.vocab_size - 1 - i for i in range(from_top)]
    ids: list[int] = []
    while (token_id := tokenizer.token_to_id(f"<extra_id_{len(ids)}>")) is not None:
        ids.append(token_id)
    if not ids:
        raise TokenizerError(
            "the tokenizer has no sentinel tokens (<extra_id_0>, <extra_id_1>, ...); "
            "train one with `tokenmill tokenizer train`, or pass --sentinels-from-top N "
            "to count them down from the top of the vocabulary as T5 does"
        )
    return ids


def _eos(tokenizer: Tokenizer, options: dict[str, Any]) -> int | None:
    if not options["eos"]:
        return None
    return _require(tokenizer, options["eos_token"], EOS_CANDIDATES, "eos", "--eos-token")


def build_corruptor(
    mode: str, tokenizer: Tokenizer | str | Path, **options: Any
) -> tuple[Corruptor, dict[str, Any]]:
    """The corruptor of `mode` and the resolved options (ids included), which
    the stage records in its manifest.

    Options are those of :data:`MODE_OPTIONS` for the mode; an unknown one is
    a ConfigError, so a misspelt option never silently keeps its default.
    """
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r} is not one of {', '.join(MODES)}")
    unknown = sorted(set(options) - set(MODE_OPTIONS[mode]))
    if unknown:
        raise ConfigError(
            f"--mode {mode} takes no option {', '.join(_flag(n) for n in unknown)}; "
            f"its options are {', '.join(_flag(n) for n in MODE_OPTIONS[mode])}"
        )
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    resolved = {**MODE_OPTIONS[mode], **options}
    vocab = Vocab.from_tokenizer(tok)
    if mode == "mlm":
        mask_id = _require(tok, resolved["mask_token"], MASK_CANDIDATES, "mask", "--mask-token")
        resolved["mask_id"] = mask_id
        corruptor = Corruptor.mlm(
            vocab,
            mask_id,
            probability=resolved["probability"],
            mask_rate=resolved["mask_rate"],
            random_rate=resolved["random_rate"],
            whole_word=resolved["whole_word"],
            span_p=resolved["span_p"] if resolved["span"] else None,
            span_max=resolved["span_max"],
        )
    elif mode == "span":
        sentinels = sentinel_ids(tok, resolved["sentinels_from_top"])
        resolved["eos_id"] = eos_id = _eos(tok, resolved)
        resolved["sentinels"] = len(sentinels)
        corruptor = Corruptor.span(
            vocab,
            sentinels,
            noise_density=resolved["noise_density"],
            mean_span=resolved["mean_span"],
            eos_id=eos_id,
        )
    elif mode == "bart":
        mask_id = _require(tok, resolved["mask_token"], MASK_CANDIDATES, "mask", "--mask-token")
        ends = resolved["sentence_ends"]
        if ends is None:
            end_ids = [i for t in SENTENCE_END_CANDIDATES if (i := tok.token_to_id(t)) is not None]
            if not end_ids and resolved["permute_sentence_ratio"] > 0:
                raise TokenizerError(
                    "the tokenizer has none of the sentence ends "
                    f"{' '.join(SENTENCE_END_CANDIDATES)} that sentence permutation needs; "
                    "name them with --sentence-end, or pass --permute-sentence-ratio 0"
                )
        else:
            end_ids = [_require(tok, t, (t,), "sentence end", "--sentence-end") for t in ends]
        resolved.update(mask_id=mask_id, sentence_end_ids=end_ids)
        corruptor = Corruptor.bart(
            vocab,
            mask_id,
            sentence_ends=end_ids,
            mask_ratio=resolved["mask_ratio"],
            random_ratio=resolved["random_ratio"],
            insert_ratio=resolved["insert_ratio"],
            rotate_ratio=resolved["rotate_ratio"],
            permute_sentence_ratio=resolved["permute_sentence_ratio"],
            delete_ratio=resolved["delete_ratio"],
            poisson_lambda=resolved["poisson_lambda"],
            mask_length=resolved["mask_length"],
            replace_length=resolved["replace_length"],
        )
    elif mode == "prefix":
        resolved["eos_id"] = eos_id = (
            _eos(tok, resolved) if resolved["layout"] == "encoder-decoder" else None
        )
        corruptor = Corruptor.prefix(
            vocab, ratio=resolved["ratio"], layout=resolved["layout"], eos_id=eos_id
        )
    else:
        sentinels = sentinel_ids(tok, resolved["sentinels_from_top"])
        mode_ids = tuple(_require(tok, t, (t,), "mode", None) for t in UL2_MODE_TOKENS)
        resolved["eos_id"] = eos_id = _eos(tok, resolved)
        resolved.update(sentinels=len(sentinels), mode_ids=list(mode_ids))
        corruptor = Corruptor.ul2(
            vocab,
            sentinels,
            mode_ids=(mode_ids[0], mode_ids[1], mode_ids[2]),
            eos_id=eos_id,
        )
    return corruptor, resolved
