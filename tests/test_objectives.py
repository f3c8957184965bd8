"""The objective spec (`tokenmill.objectives`) is the one place each objective
and option is declared: the CLI, the collators, the stage, training and the
Rust binding all read or agree with it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import tokenizers
from click.testing import CliRunner
from tokenizers import models, pre_tokenizers

import tokenmill
from tests.conftest import write_shards
from tokenmill import _core
from tokenmill.objectives import (
    CORRUPT_MODES,
    FAMILIES,
    OBJECTIVES,
    build_corruptor,
    corrupt_options,
    flag_of,
    objective,
    options_table,
)
from tokenmill.train import TrainConfig, plan_data
from tokenmill_cli.main import cli


def test_every_objective_is_complete() -> None:
    for name, spec in OBJECTIVES.items():
        assert spec.name == name
        for layout in spec.layouts.values():
            assert layout.family in FAMILIES, name
            assert (layout.decoder_start is None) == (layout.family != "encoder-decoder"), name
        if spec.corrupts:
            assert spec.build is not None and dataclasses.is_dataclass(spec.options), name
            for f in dataclasses.fields(spec.options):  # type: ignore[arg-type]
                assert f.metadata["help"], (name, f.name)
        if spec.layout_option is not None:
            choices = {
                f.name: f.metadata["choices"]
                for f in dataclasses.fields(spec.options)  # type: ignore[arg-type]
            }
            assert set(spec.layouts) == set(choices[spec.layout_option]), name


def test_the_training_layer_knows_every_stage_an_objective_reads() -> None:
    from tokenmill.train.batches import ROW_COLLATORS
    from tokenmill.train.plan import STAGE_CHECKS

    for name, spec in OBJECTIVES.items():
        assert spec.reads[0] in STAGE_CHECKS, name
        # Token rows go through a row collator; pairs through the contrastive one.
        assert (spec.reads[0] in ROW_COLLATORS) != (spec.layout().family == "dual-encoder"), name
        assert spec.corrupts == (spec.reads == ("corrupt",)), name


def test_unknown_names_are_an_error_everywhere(pydocs_tokenizer: Path, tmp_path: Path) -> None:
    with pytest.raises(tokenmill.ConfigError, match="--mode 'clm' is not one of mlm, span"):
        build_corruptor("clm", pydocs_tokenizer)
    with pytest.raises(tokenmill.ConfigError, match="--objective 'gpt' is not one of clm"):
        objective("gpt")
    with pytest.raises(tokenmill.ConfigError, match="--mode 'nope'"):
        tokenmill.CorruptStage("nope", pydocs_tokenizer)
    source = write_shards(tmp_path / "in", {"a.parquet": pa.table({"input_ids": [[1, 2]]})})
    with pytest.raises(tokenmill.ConfigError, match="--objective 'gpt'"):
        plan_data(TrainConfig(data=str(source), output=str(tmp_path / "run"), objective="gpt"))
    with pytest.raises(tokenmill.ConfigError, match="--mode mlm takes no option --noise-density"):
        tokenmill.MLMCollator(pydocs_tokenizer, noise_density=0.5)


def test_the_cli_offers_every_option_of_the_spec_with_its_default() -> None:
    result = CliRunner().invoke(cli, ["corrupt", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name, (spec, modes) in corrupt_options().items():
        flag = spec.metadata["flag"] or flag_of(name)
        assert flag in text, flag
        assert f"{', '.join(modes)}: {spec.metadata['help']}" in text, flag
    offered = set(re.findall(r"--([a-z-]+)", result.output))
    common = {
        "mode", "tokenizer", "seed", "epoch", "token-column", "text-column", "id-column",
        "input-length", "nulls", "output", "overwrite", "format", "batch-size", "shard",
        "progress", "no-progress", "no-eos", "help",
    }  # fmt: skip
    generated = {(s.metadata["flag"] or flag_of(n))[2:] for n, (s, _) in corrupt_options().items()}
    assert offered == common | generated


#: Spec options the binding never sees: token names the Python layer looks
#: up in the tokenizer and hands over as ids (or leaves out).
PYTHON_ONLY_OPTIONS = {"mask_token", "eos", "eos_token", "sentinels_from_top", "sentence_ends"}


def test_binding_defaults_agree_with_the_spec() -> None:
    """Each option's Rust default (the options struct's `Default`, as the
    binding exports it) is the spec's; every Rust option has a spec field,
    and every spec field reaches Rust unless it is resolved in Python."""
    for name in CORRUPT_MODES:
        spec = OBJECTIVES[name].defaults()
        rust = _core.corruption_defaults(name)
        assert set(rust) <= set(spec), (name, sorted(set(rust) - set(spec)))
        assert set(spec) - set(rust) <= PYTHON_ONLY_OPTIONS, (name, sorted(set(spec) - set(rust)))
        for option, default in rust.items():
            assert type(default) is type(spec[option]), (name, option, default, spec[option])
            assert default == spec[option], (name, option, default, spec[option])
        # Not vacuous: every mode but UL2 (whose options are its denoisers,
        # given whole or as the paper's) has Rust options to compare.
        assert rust or name == "ul2", name
    with pytest.raises(tokenmill.ConfigError, match="corruption mode 'clm' is not mlm"):
        _core.corruption_defaults("clm")


def test_corruptor_constructors_refuse_unknown_options() -> None:
    vocab = _core.Vocab(100, [0, 1])
    with pytest.raises(tokenmill.ConfigError, match="mlm has no option 'noise_density'"):
        _core.Corruptor.mlm(vocab, 2, noise_density=0.5)
    with pytest.raises(tokenmill.ConfigError, match="mask length 'poisson' is not subword, word"):
        _core.Corruptor.bart(vocab, 2, mask_length="poisson")
    with pytest.raises(tokenmill.ConfigError, match="layout 'both' is not decoder or encoder-"):
        _core.Corruptor.prefix(vocab, layout="both")
    with pytest.raises(tokenmill.ConfigError, match="denoiser kind 'x' is not span or prefix"):
        _core.Corruptor.ul2(vocab, [99], denoisers=[("x", 0.15, 3.0, 2, 1.0)])
    # Left out, an option takes its Rust default; span_p shapes spans only with span.
    assert _core.Corruptor.mlm(vocab, 2, span_p=-1.0).mode == "mlm"
    with pytest.raises(tokenmill.ConfigError, match="span length p=-1"):
        _core.Corruptor.mlm(vocab, 2, span=True, span_p=-1.0)


def endoftext_vocabulary(path: Path) -> Path:
    """A GPT-2 style vocabulary: `<|endoftext|>` and no `</s>`."""
    words = ["the", "cat", "sat", "on", "mat", ".", "a", "dog", "ran"]
    vocab = {"<pad>": 0, "<|endoftext|>": 1, "<mask>": 2}
    for word in words:
        vocab[word] = len(vocab)
    hf = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf.add_special_tokens(["<pad>", "<|endoftext|>", "<mask>"])
    hf.save(str(path))
    return path


def test_bart_decoder_start_is_one_lookup_for_collator_and_trainer(tmp_path: Path) -> None:
    """The collator took any EOS spelling and `train` only `</s>`, so with an
    `<|endoftext|>` vocabulary they fed BART's decoder different tokens."""
    path = endoftext_vocabulary(tmp_path / "tokenizer.json")
    tok = tokenmill.load_tokenizer(path)
    eos = tok.token_to_id("<|endoftext|>")
    rows = [[3, 4, 5, 6, 7, 8], [9, 10, 11, 8]]
    out = tokenmill.DenoisingCollator(tok, return_tensors="np")(rows)
    assert (out["decoder_input_ids"][:, 0] == eos).all()

    source = write_shards(
        tmp_path / "tokens",
        {
            "a.parquet": pa.table(
                {"id": ["a", "b"], "input_ids": pa.array(rows, pa.list_(pa.uint32()))}
            )
        },
    )
    corrupted = tmp_path / "bart"
    tokenmill.corrupt(source, corrupted, "bart", path, progress=False)
    plan = plan_data(
        TrainConfig(data=str(corrupted), output=str(tmp_path / "run"), objective="bart")
    )
    assert plan.decoder_start_id == eos
    assert plan.family == "encoder-decoder"


def test_layouts_decide_family_columns_and_lengths(pydocs_tokenizer: Path) -> None:
    prefix = objective("prefix")
    assert prefix.layout({"layout": "decoder"}).family == "decoder"
    assert prefix.layout({"layout": "decoder"}).columns == ("prefix_lens",)
    assert prefix.layout({"layout": "encoder-decoder"}).decoder_start == "pad"
    assert prefix.layout(None) == prefix.layout({"layout": "decoder"})
    collate = tokenmill.PrefixLMCollator(
        pydocs_tokenizer, layout="encoder-decoder", return_tensors="np"
    )
    out = collate([[300, 301, 302, 303]])
    assert "prefix_lens" not in out and "decoder_input_ids" in out
    assert np.all(out["decoder_input_ids"][:, 0] == collate.pad_id)


def test_the_readme_options_table_is_the_spec() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    begin = "<!-- corrupt-options: written by tokenmill.objectives.options_table() -->\n"
    table = readme.split(begin, 1)[1].split("<!-- /corrupt-options -->", 1)[0]
    assert table == options_table()


def test_train_options_are_the_config_fields_and_need_no_torch() -> None:
    """`tokenmill train`'s options are made from TrainConfig, one per field,
    and building them imports no PyTorch (every command would pay for it)."""
    from tokenmill.train.config import TrainConfig

    result = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for f in dataclasses.fields(TrainConfig):
        if f.name == "data":
            continue
        flag = (f.metadata["flag"] or flag_of(f.name)).split("/")[-1]
        assert flag in result.output, flag
        if f.default not in (dataclasses.MISSING, None, False):
            shown = flag[2:] if f.default is True else f.default
            assert f"[default: {shown}" in " ".join(result.output.split()), flag
    import subprocess
    import sys

    probe = "import sys, tokenmill_cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
