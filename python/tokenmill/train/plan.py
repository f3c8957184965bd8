"""The data plan: open the data, check it was made for the objective, and
size the model for it. Every bad input is a typed error here, before the run
folder is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill import _core
from tokenmill._core import ConfigError, DataError, SchemaError
from tokenmill.dataset import Dataset, open_dataset
from tokenmill.objectives import OBJECTIVES, Layout, Objective, objective
from tokenmill.tokenizer import decoder_start_id, load_tokenizer
from tokenmill.tokenizer import pad_id as pad_id_of

from .config import TrainConfig


@dataclass
class DataPlan:
    """What the data is and how the model must be shaped for it."""

    family: str
    dataset: Dataset
    eval_dataset: Dataset | None
    columns: tuple[str, ...]
    pad_id: int
    decoder_start_id: int
    vocab_size: int
    max_len: int
    tokenizer: _core.Tokenizer | None
    #: The objective, as `tokenmill.objectives` declares it.
    spec: Objective
    #: The targets are the text itself, so bits per byte means something.
    text_targets: bool = False

    @property
    def kind(self) -> str:
        """The stage whose kind of output trains: `pack`, `corrupt` or `pairs`."""
        return self.spec.reads[0]


# --- What made the data ---------------------------------------------------

#: Checks `dataset` (made by `stage`, called `made_for` in messages) was made
#: for the objective; by the first stage the objective reads.
StageCheck = Callable[[Objective, Dataset, str | None, dict[str, Any], str], None]


def _check_packed(
    spec: Objective, dataset: Dataset, stage: str | None, params: dict[str, Any], made_for: str
) -> None:
    names = dataset.schema.names
    others = {s for o in OBJECTIVES.values() for s in o.reads} - set(spec.reads)
    if stage in others or "labels" in names:
        raise SchemaError(
            f"{dataset.root} was made by {made_for}, not for --objective {spec.name}: "
            f"{spec.name} trains on packed token rows; run `tokenmill pack` on token shards"
        )
    if "input_ids" not in names:
        raise SchemaError(f"{dataset.root} has no input_ids; run `tokenmill pack` first")
    if stage != "pack" and "seq_lens" not in names:
        # Unpacked rows would train on padding-ragged batches and, with
        # rows longer than the model, fail later: ask for pack output.
        raise SchemaError(
            f"{dataset.root} was made by {made_for if stage else 'no tokenmill stage'} and "
            f"holds unpacked rows: --objective {spec.name} trains on `tokenmill pack` output; "
            f"run `tokenmill pack {dataset.root} -o PACKED --seq-len N` and train on PACKED"
        )


def _check_corrupted(
    spec: Objective, dataset: Dataset, stage: str | None, params: dict[str, Any], made_for: str
) -> None:
    if stage != "corrupt":
        raise SchemaError(
            f"{dataset.root} was made by {made_for if stage else 'no tokenmill stage'}, not "
            f"for --objective {spec.name}: run `tokenmill corrupt --mode {spec.name}` and "
            "train on its output"
        )
    if params.get("mode") != spec.name:
        raise SchemaError(
            f"{dataset.root} was corrupted with --mode {params.get('mode')}, not for "
            f"--objective {spec.name}; run `tokenmill corrupt --mode {spec.name}`"
        )


def _check_pairs(
    spec: Objective, dataset: Dataset, stage: str | None, params: dict[str, Any], made_for: str
) -> None:
    if stage not in spec.reads and not {"query", "positive"} <= set(dataset.schema.names):
        raise SchemaError(
            f"{dataset.root} was made by {made_for if stage else 'no tokenmill stage'}; "
            f"--objective {spec.name} reads `tokenmill {'` or `'.join(spec.reads)}` output"
        )


STAGE_CHECKS: dict[str, StageCheck] = {
    "pack": _check_packed,
    "corrupt": _check_corrupted,
    "pairs": _check_pairs,
}


def check_stage(spec: Objective, dataset: Dataset) -> dict[str, Any]:
    """The manifest's params after checking the data was made for `spec`."""
    manifest = dataset.manifest
    stage = manifest.stage if manifest is not None else None
    params = manifest.params if manifest is not None else {}
    made_for = f"`{stage}`" + (f" --mode {params['mode']}" if stage == "corrupt" else "")
    STAGE_CHECKS[spec.reads[0]](spec, dataset, stage, params, made_for)
    return params


# --- What the data holds --------------------------------------------------


def scan_tokens(dataset: Dataset, columns: tuple[str, ...]) -> tuple[int, int]:
    """The largest token id and the longest row over the token columns (one
    streaming pass, before training, so a bad id fails now and not at step 10k)."""
    largest, longest = -1, 0
    for batch in dataset.iter_batches(8192, columns=list(columns)):
        for name in columns:
            column = batch.column(name)
            values = pc.list_flatten(column)
            if len(values):
                largest = max(largest, int(pc.max(values).as_py()))
            lengths = pc.list_value_length(column)
            if len(lengths):
                longest = max(longest, int(pc.max(lengths).as_py()))
    return largest, longest


def check_seq_lens(dataset: Dataset) -> None:
    """Packed rows whose seq_lens do not cover them would fail at the first
    batch that holds one, after the run folder is written: find them now."""
    for shard in dataset.shards:
        first = 0
        for batch in shard.iter_batches(8192, columns=["input_ids", "seq_lens"]):
            seq_lens = batch.column("seq_lens")
            covered = np.bincount(
                pc.list_parent_indices(seq_lens).to_numpy(),
                weights=pc.list_flatten(seq_lens).to_numpy(zero_copy_only=False),
                minlength=batch.num_rows,
            ).astype(np.int64)
            lengths = pc.list_value_length(batch.column("input_ids")).fill_null(0).to_numpy()
            bad = np.flatnonzero(covered != lengths)
            if bad.size:
                row = first + int(bad[0])
                problem = (
                    f"seq_lens add up to {covered[bad[0]]} tokens, but the row holds "
                    f"{lengths[bad[0]]}"
                )
                fix = "train on `tokenmill pack` output, unedited"
                err = DataError(f"{shard.path}: row {row}: {problem}; {fix}")
                err.row, err.problem, err.fix = row, problem, fix
                raise err
            first += batch.num_rows


def _check_pairs_tokenizer(config: TrainConfig, dataset: Dataset) -> None:
    """Pairs without a tokenizer must hold token ids, and say their vocabulary."""
    query_type = dataset.schema.field("query").type
    if pa.types.is_string(query_type) or pa.types.is_large_string(query_type):
        raise ConfigError("the pairs hold text: pass --tokenizer tokenizer.json")
    if config.vocab_size is None:
        raise ConfigError(
            f"{dataset.root} holds token ids and names no tokenizer, so the model's "
            "vocabulary is unknown: pass --tokenizer or --vocab-size"
        )


def _extent(
    config: TrainConfig,
    kind: str,
    shape: Layout,
    dataset: Dataset,
    eval_dataset: Dataset | None,
    tokenized: bool,
) -> tuple[int, int]:
    """The largest token id (-1: none to check) and the positions the model needs."""
    names = dataset.schema.names
    if kind == "pairs":
        largest, longest = -1, config.contrastive_max_len
        if not tokenized:  # token-id pairs: check their ids against --vocab-size
            id_columns = tuple(
                c
                for c in ("query", "positive")
                if c in names and pa.types.is_list(dataset.schema.field(c).type)
            )
            largest = scan_tokens(dataset, id_columns)[0]
        return largest, longest
    token_columns = tuple(c for c in ("input_ids", "labels") if c in names)
    largest, longest = scan_tokens(dataset, token_columns)
    if eval_dataset is not None:
        eval_largest, eval_longest = scan_tokens(eval_dataset, token_columns)
        largest, longest = max(largest, eval_largest), max(longest, eval_longest)
    if kind == "pack" and "seq_lens" in names:
        for checked in (dataset, eval_dataset):
            if checked is not None:
                check_seq_lens(checked)
    return largest, longest + shape.extra_positions


def plan_data(config: TrainConfig) -> DataPlan:
    """Opens and checks the data; every bad input is a typed error here."""
    spec = objective(config.objective)
    dataset = open_dataset(config.data)
    params = check_stage(spec, dataset)
    eval_dataset = open_dataset(config.eval_data) if config.eval_data else None
    if eval_dataset is not None:
        eval_params = check_stage(spec, eval_dataset)
        if spec.corrupts and eval_params.get("options") != params.get("options"):
            raise ConfigError(
                f"{eval_dataset.root} was corrupted with other options than {dataset.root}"
            )
    tokenizer_path = config.tokenizer or params.get("tokenizer")
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
    if spec.reads[0] == "pairs" and tokenizer is None:
        _check_pairs_tokenizer(config, dataset)
    shape = spec.layout(params.get("options"))

    names = dataset.schema.names
    columns = tuple(c for c in ("input_ids", "labels", "seq_lens", "prefix_lens") if c in names)
    largest, longest = _extent(
        config, spec.reads[0], shape, dataset, eval_dataset, tokenizer is not None
    )
    vocab_size = config.vocab_size or (tokenizer.vocab_size if tokenizer else largest + 1)
    if tokenizer is not None and vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f"--vocab-size {vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}"
        )
    if largest >= vocab_size:
        raise DataError(
            f"{dataset.root} holds token id {largest}, outside the model's vocabulary of "
            f"{vocab_size}: it was tokenized with another tokenizer; pass the right "
            "--tokenizer or a larger --vocab-size"
        )
    max_len = config.max_seq_len or max(longest, 1)
    if longest > max_len:
        raise DataError(
            f"{dataset.root} has rows of {longest} tokens, more than --max-seq-len {max_len}; "
            "pack or corrupt with a shorter --seq-len / --input-length"
        )
    pad = pad_id_of(tokenizer) if tokenizer is not None else 0
    start = shape.decoder_start
    # The collators' decoder start: one lookup for both (BART's is EOS).
    start_id = decoder_start_id(tokenizer, start) if tokenizer is not None and start else pad
    return DataPlan(
        family=shape.family,
        dataset=dataset,
        eval_dataset=eval_dataset,
        columns=columns,
        pad_id=pad,
        decoder_start_id=start_id,
        vocab_size=vocab_size,
        max_len=max_len,
        tokenizer=tokenizer,
        spec=spec,
        text_targets=shape.text_targets,
    )
