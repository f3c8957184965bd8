"""tokenmill: pretraining data for every objective, over Arrow shards, in Rust.

The heavy lifting happens in :mod:`tokenmill._core` (Rust, GIL released);
this package adds datasets of shards, the stage runner that every
preprocessing stage shares, and the Python API the CLI is built on.
"""

from tokenmill import minhash
from tokenmill._core import (
    BpeTrainer,
    ConfigError,
    DataError,
    InternalError,
    SchemaError,
    ShardError,
    Tokenizer,
    TokenizerError,
    TokenmillError,
    __version__,
    num_threads,
    special_tokens,
)
from tokenmill._threads import set_num_threads
from tokenmill.collate import (
    CausalLMCollator,
    DenoisingCollator,
    MLMCollator,
    PrefixLMCollator,
    SpanCorruptionCollator,
    UL2Collator,
)
from tokenmill.contrastive import ContrastiveBatchSampler, ContrastiveCollator
from tokenmill.dataset import Dataset, open_dataset
from tokenmill.manifest import Manifest
from tokenmill.runner import RunReport, run_stage
from tokenmill.stages.corrupt import CorruptStage, corrupt
from tokenmill.stages.dedup import DedupOptions, DedupReport, dedup
from tokenmill.stages.negatives import NegativeOptions, NegativesStage, negatives
from tokenmill.stages.pack import PackStage, pack
from tokenmill.stages.pairs import PairsStage, pairs
from tokenmill.stages.sample import SampleStage, sample
from tokenmill.stages.tokenize import TokenizeStage, tokenize
from tokenmill.tokenizer import load_tokenizer, train_tokenizer

__all__ = [
    "BpeTrainer",
    "CausalLMCollator",
    "ConfigError",
    "ContrastiveBatchSampler",
    "ContrastiveCollator",
    "CorruptStage",
    "DataError",
    "Dataset",
    "DedupOptions",
    "DedupReport",
    "DenoisingCollator",
    "InternalError",
    "MLMCollator",
    "Manifest",
    "NegativeOptions",
    "NegativesStage",
    "PackStage",
    "PairsStage",
    "PrefixLMCollator",
    "RunReport",
    "SampleStage",
    "SchemaError",
    "ShardError",
    "SpanCorruptionCollator",
    "TokenizeStage",
    "Tokenizer",
    "TokenizerError",
    "TokenmillError",
    "UL2Collator",
    "__version__",
    "corrupt",
    "dedup",
    "load_tokenizer",
    "minhash",
    "negatives",
    "num_threads",
    "open_dataset",
    "pack",
    "pairs",
    "run_stage",
    "sample",
    "set_num_threads",
    "special_tokens",
    "tokenize",
    "train_tokenizer",
]
