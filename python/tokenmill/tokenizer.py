"""Loading tokenizers, training tokenmill's byte-level BPE on a dataset, and
the one home of special-token lookup (EOS, pad, mask, sentinels, mode
tokens), which stages, collators and training all use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenmill._core import (
    BpeTrainer,
    ConfigError,
    Tokenizer,
    TokenizerError,
    TokenmillError,
    Vocab,
)
from tokenmill._fs import write_atomic
from tokenmill.checks import locate_error, require_text
from tokenmill.dataset import Dataset, open_dataset, prefetch
from tokenmill.progress import StageProgress, progress_enabled

#: Spellings tried in order when a special token is not named.
PAD_CANDIDATES = ("<pad>", "[PAD]")
EOS_CANDIDATES = ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>")
MASK_CANDIDATES = ("<mask>", "[MASK]", "<MASK>")
SENTENCE_END_CANDIDATES = (".", "!", "?", "Ġ.", "▁.")
UL2_MODE_TOKENS = ("[NLU]", "[NLG]", "[S2S]")


def find_token(tokenizer: Tokenizer, candidates: Sequence[str]) -> int | None:
    """The id of the first of `candidates` the vocabulary has."""
    for token in candidates:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return None


def require_token(
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
    token_id = find_token(tokenizer, wanted)
    if token_id is None:
        fix = "use a tokenizer that has one"
        if flag is not None:
            fix += f", or name it with {flag}"
        raise TokenizerError(f"the tokenizer has no {what} token ({' or '.join(wanted)}); {fix}")
    return token_id


def pad_id(tokenizer: Tokenizer) -> int:
    """The padding id: `<pad>` or `[PAD]`, else 0 (padding is masked, never read)."""
    found = find_token(tokenizer, PAD_CANDIDATES)
    return 0 if found is None else found


def eos_id(tokenizer: Tokenizer) -> int | None:
    """The end-of-document id: the first EOS spelling the vocabulary has."""
    return find_token(tokenizer, EOS_CANDIDATES)


def decoder_start_id(tokenizer: Tokenizer, start: str) -> int:
    """The first decoder input of an encoder-decoder: the pad id (T5) or
    EOS (BART), falling back to the pad id when the vocabulary has no EOS."""
    if start == "eos":
        found = eos_id(tokenizer)
        return pad_id(tokenizer) if found is None else found
    if start != "pad":
        raise ConfigError(f"decoder start {start!r} is not 'pad' or 'eos'")
    return pad_id(tokenizer)


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


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A Hugging Face `tokenizer.json`; raises TokenizerError naming the file and the fix."""
    return Tokenizer.from_file(Path(path))


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> Path:
    """Writes `tokenizer.json` atomically."""
    target = Path(path)
    if target.is_dir():
        raise TokenizerError(f"{target}: is a folder; pass a file name such as tokenizer.json")
    write_atomic(target, tokenizer.to_str(pretty=True).encode())
    return target


def train_tokenizer(
    source: str | Path | Dataset,
    vocab_size: int,
    *,
    text_column: str = "text",
    min_frequency: int = 2,
    batch_size: int = 4096,
    progress: bool | None = None,
) -> Tokenizer:
    """Trains a byte-level BPE with tokenmill's special tokens on a text dataset.

    The special tokens (see :func:`tokenmill.special_tokens`) take ids
    0, 1, 2, ... in order, the 100 sentinels among them with consecutive ids.
    Text streams through in batches; memory holds the word counts only.
    """
    dataset = source if isinstance(source, Dataset) else open_dataset(source)
    for shard in dataset.shards:
        try:
            require_text(shard.schema, text_column)
        except TokenmillError as err:
            raise locate_error(err, shard) from None
    trainer = BpeTrainer()
    with StageProgress(
        "count words", dataset.num_rows, len(dataset.shards), progress_enabled(progress)
    ) as bar:
        for shard in dataset.shards:
            first_row = 0
            for batch in prefetch(shard.iter_batches(batch_size, columns=[text_column])):
                try:
                    trainer.add(batch.column(text_column), column=text_column)
                except TokenmillError as err:
                    raise locate_error(err, shard, first_row) from None
                first_row += batch.num_rows
                bar.advance(batch.num_rows, 0)
            bar.shard_done()
    return trainer.train(vocab_size, min_frequency=min_frequency)
