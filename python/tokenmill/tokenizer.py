"""Loading tokenizers, and training tokenmill's byte-level BPE on a dataset."""

from __future__ import annotations

from pathlib import Path

from tokenmill._core import BpeTrainer, Tokenizer, TokenizerError, TokenmillError
from tokenmill._fs import write_atomic
from tokenmill.dataset import Dataset, open_dataset, prefetch
from tokenmill.progress import StageProgress, progress_enabled
from tokenmill.runner import locate_error
from tokenmill.stages._common import require_text


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
