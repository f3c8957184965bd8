# Type stubs of the Rust extension. `python -m mypy.stubtest tokenmill._core`
# (part of `make test`) fails when these drift from the compiled module.
from os import PathLike
from pathlib import Path
from typing import Any, final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = [
    "Bm25Index",
    "BpeTrainer",
    "ConfigError",
    "Corruptor",
    "DataError",
    "InternalError",
    "NegativeMiner",
    "Packer",
    "SchemaError",
    "ShardError",
    "Tokenizer",
    "TokenizerError",
    "TokenmillError",
    "Vocab",
    "__version__",
    "band_keys",
    "best_fit_decreasing",
    "cluster_minhash_files",
    "connected_components",
    "content_hashes",
    "corruption_defaults",
    "file_checksum",
    "keep_mask",
    "lsh_candidate_pairs",
    "make_pairs",
    "mine_embedding_arrays",
    "minhash_signatures",
    "num_threads",
    "optimal_bands",
    "row_keys_from_ids",
    "row_keys_from_position",
    "set_num_threads",
    "shingle_set",
    "shingle_sets",
    "special_tokens",
    "t5_input_and_target_lengths",
    "text_hashes",
    "token_hashes",
    "token_lists_from_python",
    "uniform",
]

__version__: str

class TokenmillError(Exception):
    row: int | None
    problem: str
    fix: str

class SchemaError(TokenmillError): ...
class ShardError(TokenmillError): ...
class DataError(TokenmillError): ...
class ConfigError(TokenmillError): ...
class TokenizerError(ConfigError): ...
class InternalError(TokenmillError): ...

@final
class Tokenizer:
    @staticmethod
    def from_file(path: str | PathLike[str]) -> Tokenizer: ...
    @staticmethod
    def from_str(json: str) -> Tokenizer: ...
    def to_str(self, pretty: bool = True) -> str: ...
    @property
    def vocab_size(self) -> int: ...
    def token_to_id(self, token: str) -> int | None: ...
    def id_to_token(self, id: int) -> str | None: ...
    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str: ...
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...
    @property
    def encoder(self) -> str: ...
    def exact(self) -> Tokenizer: ...
    def tokenize(
        self,
        texts: Any,
        *,
        column: str = "text",
        add_special_tokens: bool = False,
        eos_id: int | None = None,
    ) -> pa.ListArray: ...
    def tokenize_words(
        self,
        texts: Any,
        *,
        column: str = "text",
        add_special_tokens: bool = False,
        eos_id: int | None = None,
    ) -> tuple[pa.ListArray, pa.ListArray]: ...

@final
class BpeTrainer:
    def __init__(self) -> None: ...
    def add(self, texts: Any, *, column: str = "text") -> None: ...
    @property
    def documents(self) -> int: ...
    @property
    def distinct_words(self) -> int: ...
    def train(self, vocab_size: int, *, min_frequency: int = 2) -> Tokenizer: ...

def special_tokens() -> list[str]: ...
def file_checksum(path: str | PathLike[str]) -> str: ...
def set_num_threads(threads: int) -> None: ...
def num_threads() -> int: ...
def row_keys_from_ids(ids: Any, *, column: str = "id") -> npt.NDArray[np.uint64]: ...
def row_keys_from_position(shard: str, first_row: int, rows: int) -> npt.NDArray[np.uint64]: ...
def uniform(
    keys: npt.NDArray[np.uint64], *, seed: int, stage: str, epoch: int = 0, draws: int = 1
) -> npt.NDArray[np.float64]: ...
def keep_mask(
    keys: npt.NDArray[np.uint64],
    *,
    seed: int,
    fraction: float,
    invert: bool = False,
    stage: str = "sample",
    epoch: int = 0,
) -> npt.NDArray[np.bool_]: ...
def minhash_signatures(
    texts: Any,
    *,
    num_perm: int = 128,
    ngram: int = 5,
    shingle: str = "word",
    seed: int = 0,
    lowercase: bool = True,
    collapse_whitespace: bool = True,
    strip_punctuation: bool = False,
    column: str = "text",
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]: ...
def shingle_set(
    text: str,
    *,
    ngram: int = 5,
    shingle: str = "word",
    lowercase: bool = True,
    collapse_whitespace: bool = True,
    strip_punctuation: bool = False,
) -> npt.NDArray[np.uint64]: ...
def shingle_sets(
    texts: Any,
    *,
    ngram: int = 5,
    shingle: str = "word",
    lowercase: bool = True,
    collapse_whitespace: bool = True,
    strip_punctuation: bool = False,
    column: str = "text",
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]: ...
def band_keys(
    signatures: npt.NDArray[np.uint64], bands: int, rows: int
) -> npt.NDArray[np.uint64]: ...
def optimal_bands(
    threshold: float,
    num_perm: int = 128,
    false_positive_weight: float = 0.5,
    false_negative_weight: float = 0.5,
) -> tuple[int, int]: ...
def lsh_candidate_pairs(band_keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]: ...
def connected_components(n: int, pairs: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]: ...
def cluster_minhash_files(
    signature_files: list[Path],
    band_files: list[Path],
    *,
    num_perm: int,
    bands: int,
    threshold: float,
    scratch_dir: Path,
    memory_budget: int = ...,
    shingle_files: list[Path] | None = None,
    offset_files: list[Path] | None = None,
) -> tuple[npt.NDArray[np.uint64], dict[str, int]]: ...
def text_hashes(
    texts: Any,
    *,
    lowercase: bool = True,
    collapse_whitespace: bool = True,
    strip_punctuation: bool = False,
    column: str = "text",
) -> npt.NDArray[np.uint64]: ...
def token_hashes(tokens: Any, *, column: str = "input_ids") -> npt.NDArray[np.uint64]: ...

@final
class Packer:
    def __new__(
        cls,
        seq_len: int,
        *,
        strategy: str = "bfd",
        buffer: int = 10000,
        overlap: bool = False,
        positions: bool = True,
    ) -> Packer: ...
    # (input_ids, seq_lens, doc_index, doc_offset, position_ids); position_ids
    # is None for a packer made with positions=False.
    def push(
        self, tokens: Any, first_doc: int, *, column: str = "input_ids"
    ) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array, pa.Array | None]: ...
    def finish(self) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array, pa.Array | None]: ...
    @property
    def stats(self) -> dict[str, int]: ...

def best_fit_decreasing(
    lengths: npt.NDArray[np.uint32], capacity: int
) -> npt.NDArray[np.uint64]: ...

@final
class Bm25Index:
    def __new__(
        cls, documents: Any, *, k1: float = 1.5, b: float = 0.75, column: str = "text"
    ) -> Bm25Index: ...
    @property
    def documents(self) -> int: ...
    def search(
        self, queries: Any, k: int, *, column: str = "text"
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...
    def score(self, queries: Any, documents: list[int], *, column: str = "text") -> list[float]: ...

@final
class Vocab:
    def __new__(
        cls, size: int, special_ids: list[int], *, word_starts: list[bool] | None = None
    ) -> Vocab: ...
    @staticmethod
    def from_tokenizer(tokenizer: Tokenizer) -> Vocab: ...
    @property
    def size(self) -> int: ...
    @property
    def has_word_marks(self) -> bool: ...
    def is_special(self, id: int) -> bool: ...

@final
# The corruption options (each constructor's keywords after its ids) default
# to the Rust options structs' `Default`: `corruption_defaults(mode)` lists them.
class Corruptor:
    @staticmethod
    def mlm(
        vocab: Vocab,
        mask_id: int,
        *,
        probability: float = ...,
        mask_rate: float = ...,
        random_rate: float = ...,
        whole_word: bool = ...,
        span: bool = ...,
        span_p: float = ...,
        span_max: int = ...,
        max_predictions: int | None = ...,
    ) -> Corruptor: ...
    @staticmethod
    def span(
        vocab: Vocab,
        sentinels: list[int],
        *,
        eos_id: int | None = None,
        noise_density: float = ...,
        mean_span: float = ...,
    ) -> Corruptor: ...
    @staticmethod
    def bart(
        vocab: Vocab,
        mask_id: int,
        *,
        sentence_ends: list[int] = ...,
        mask_ratio: float = ...,
        random_ratio: float = ...,
        insert_ratio: float = ...,
        rotate_ratio: float = ...,
        permute_sentence_ratio: float = ...,
        delete_ratio: float = ...,
        poisson_lambda: float = ...,
        mask_length: str = ...,
        replace_length: int = ...,
    ) -> Corruptor: ...
    @staticmethod
    def prefix(
        vocab: Vocab,
        *,
        eos_id: int | None = None,
        ratio: float | None = ...,
        layout: str = ...,
    ) -> Corruptor: ...
    @staticmethod
    def ul2(
        vocab: Vocab,
        sentinels: list[int],
        *,
        mode_ids: tuple[int, int, int] | None = None,
        denoisers: list[tuple[str, float, float, int, float]] | None = None,
        eos_id: int | None = None,
    ) -> Corruptor: ...
    @property
    def mode(self) -> str: ...
    @property
    def vocab(self) -> Vocab: ...
    def corrupt(
        self,
        tokens: Any,
        keys: npt.NDArray[np.uint64] | None = None,
        *,
        seed: int,
        epoch: int = 0,
        lengths: list[int] | None = None,
        seq_lens: Any = None,
        word_ids: Any = None,
        column: str = "input_ids",
    ) -> dict[str, pa.Array]: ...
    def corrupt_padded(
        self,
        tokens: Any,
        keys: npt.NDArray[np.uint64] | None = None,
        *,
        seed: int,
        epoch: int = 0,
        lengths: list[int] | None = None,
        seq_lens: Any = None,
        word_ids: Any = None,
        column: str = "input_ids",
        pad_id: int = 0,
        pad_to_multiple_of: int = 1,
        decoder_start_id: int | None = None,
        attention_mask: bool = True,
    ) -> dict[str, npt.NDArray[np.int64]]: ...

def token_lists_from_python(rows: list[list[int]]) -> pa.ListArray: ...
def t5_input_and_target_lengths(
    inputs_length: int, *, noise_density: float | None = None, mean_span: float | None = None
) -> tuple[int, int]: ...
def corruption_defaults(mode: str) -> dict[str, Any]: ...
def make_pairs(
    documents: Any,
    keys: npt.NDArray[np.uint64],
    *,
    mode: str,
    seed: int = 0,
    epoch: int = 0,
    column: str = "text",
    min_ratio: float = 0.1,
    max_ratio: float = 0.5,
    keep_probability: float = 0.1,
    sentence_end_ids: list[int] = ...,
) -> tuple[pa.Array, pa.Array]: ...
def content_hashes(values: Any, *, column: str = "text") -> npt.NDArray[np.uint64]: ...

@final
class NegativeMiner:
    def __new__(
        cls,
        positives: Any,
        *,
        strategy: str,
        num_negatives: int,
        range_min: int = 0,
        range_max: int = 99,
        margin: float = 0.95,
        k1: float = 1.5,
        b: float = 0.75,
        seed: int = 0,
        epoch: int = 0,
        column: str = "positive",
        vectors: Any | None = None,
    ) -> NegativeMiner: ...
    @property
    def documents(self) -> int: ...
    def mine(
        self,
        queries: Any,
        rows: npt.NDArray[np.uint64],
        keys: npt.NDArray[np.uint64],
        *,
        column: str = "query",
    ) -> tuple[
        npt.NDArray[np.int64],
        npt.NDArray[np.float32],
        npt.NDArray[np.float32],
        npt.NDArray[np.uint32],
        npt.NDArray[np.uint32],
    ]: ...

def mine_embedding_arrays(
    documents: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    *,
    num_negatives: int,
    range_min: int = 0,
    range_max: int = 99,
    margin: float = 0.95,
    seed: int = 0,
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.float32],
    npt.NDArray[np.uint32],
    npt.NDArray[np.uint32],
]: ...
