"""Each stage's options are declared once, in its options dataclass: the
stage function takes one keyword per field, the CLI command one flag per
field with the field's default, and both hand every value to the stage."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import tokenmill
from tokenmill.objectives import corrupt_options
from tokenmill.options import Options, flag_of, options_table
from tokenmill.stages.corrupt import CorruptOptions
from tokenmill.stages.dedup import DedupOptions
from tokenmill.stages.negatives import NegativeOptions
from tokenmill.stages.pack import PackOptions
from tokenmill.stages.pairs import PairsOptions
from tokenmill.stages.sample import SampleOptions
from tokenmill.stages.tokenize import TokenizeOptions
from tokenmill_cli.main import cli
from tokenmill_cli.options import RUN_OPTION_NAMES


class Captured(Exception):
    """Raised by a patched `check()`: the options a call built, before any file is read."""

    def __init__(self, options: Options) -> None:
        self.options = options


@dataclasses.dataclass
class Case:
    command: str
    options: type[Options]
    function: Callable[..., Any]
    #: The fields the function takes by position, with a value for each.
    positional: dict[str, Any]
    #: The keywords the function takes beside the fields.
    run: frozenset[str]
    #: What the command needs besides the flag under test.
    cli_args: tuple[str, ...]


def _run_stage_keywords() -> frozenset[str]:
    parameters = inspect.signature(tokenmill.run_stage).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)


GLOBAL_RUN = frozenset({"options", "overwrite", "fmt", "batch_size", "progress"})
OUT = ("-o", "out")
CASES = [
    Case(
        "tokenize",
        TokenizeOptions,
        tokenmill.tokenize,
        {"tokenizer": "tok.json"},
        _run_stage_keywords(),
        ("--tokenizer", "tok.json", *OUT),
    ),
    Case(
        "sample",
        SampleOptions,
        tokenmill.sample,
        {"fraction": 0.5},
        _run_stage_keywords(),
        ("--fraction", "0.5", *OUT),
    ),
    Case(
        "pack",
        PackOptions,
        tokenmill.pack,
        {"seq_len": 64},
        _run_stage_keywords(),
        ("--seq-len", "64", *OUT),
    ),
    Case("pairs", PairsOptions, tokenmill.pairs, {}, _run_stage_keywords(), OUT),
    Case(
        "corrupt",
        CorruptOptions,
        tokenmill.corrupt,
        {"mode": "mlm", "tokenizer": "tok.json"},
        _run_stage_keywords() | {"options"},
        ("--mode", "mlm", "--tokenizer", "tok.json"),
    ),
    Case("dedup", DedupOptions, tokenmill.dedup, {}, GLOBAL_RUN, OUT),
    Case("negatives", NegativeOptions, tokenmill.negatives, {}, GLOBAL_RUN | {"embed"}, OUT),
]
IDS = [case.command for case in CASES]


def _other(f: dataclasses.Field[Any], hint: Any) -> Any:
    """A valid value of the field other than its default."""
    default = f.default
    if f.metadata["choices"]:
        return next(c for c in f.metadata["choices"] if c != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + f.metadata["unit"]
    if isinstance(default, float):
        return default / 2
    if isinstance(default, str):
        return default + "_x"
    if isinstance(default, tuple):
        return (7, 8)
    assert default is None, f.name
    return 512 if int in typing.get_args(hint) else "x"


def _optional_fields(case: Case) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(case.options)
    fields = [f for f in dataclasses.fields(case.options) if f.name not in case.positional]
    for f in dataclasses.fields(case.options):
        if f.default is dataclasses.MISSING:
            assert f.name in case.positional, f"{case.command}: {f.name}"
    return [(f, hints[f.name]) for f in fields]


def _capture(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    def check(self: Options) -> None:
        raise Captured(self)

    monkeypatch.setattr(case.options, "check", check)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_function_takes_one_keyword_per_field_and_the_run_options(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = {f.name for f in dataclasses.fields(case.options)} - set(case.positional)
    with pytest.raises(tokenmill.ConfigError, match="takes no keyword bogus") as err:
        case.function("in", "out", *case.positional.values(), bogus=1)
    accepted = str(err.value).split("; it takes ", 1)[1].split(", ")
    assert set(accepted) == fields | set(case.positional) | case.run
    _capture(case, monkeypatch)
    for f, hint in _optional_fields(case):
        value = _other(f, hint)
        with pytest.raises(Captured) as got:
            case.function("in", "out", *case.positional.values(), **{f.name: value})
        assert getattr(got.value.options, f.name) == value, f.name
        for name, given in case.positional.items():
            assert getattr(got.value.options, name) == given, name


def _cli_default(f: dataclasses.Field[Any]) -> Any:
    """The field's default as the CLI reads it (in its unit)."""
    unit = f.metadata["unit"]
    return f.default // unit if unit != 1 else f.default


def _cli_value(f: dataclasses.Field[Any], value: Any) -> list[str]:
    flag = f.metadata["flag"] or flag_of(f.name)
    if isinstance(value, bool):
        on, _, off = flag.partition("/")
        return [on] if value else [off or f"--no-{on[2:]}"]
    if isinstance(value, tuple):
        return [part for item in value for part in (flag, str(item))]
    unit = f.metadata["unit"]
    return [flag.split("/")[-1], str(value // unit if unit != 1 else value)]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_command_offers_every_field_with_its_default_and_hands_it_on(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    command = cli.commands[case.command]
    params = {p.name: p for p in command.params}
    for f in dataclasses.fields(case.options):
        assert f.name in params, f"{case.command} has no option for {f.name}"
        param = params[f.name]
        flag = (f.metadata["flag"] or flag_of(f.name)).split("/")
        assert flag[-1] in param.opts or flag[0] in param.opts, (f.name, param.opts)
        if f.default is dataclasses.MISSING:
            assert param.required, f.name
        else:
            assert param.default == _cli_default(f), f.name
    # Nothing besides the fields, the run options and (corrupt) the mode options.
    run = set(RUN_OPTION_NAMES) - ({"shards"} if "shards" not in params else set())
    modes = set(corrupt_options()) if case.command == "corrupt" else set()
    fields = {f.name for f in dataclasses.fields(case.options)}
    assert set(params) - {"source"} == fields | run | modes

    _capture(case, monkeypatch)
    runner = CliRunner()
    for f, hint in _optional_fields(case):
        value = _other(f, hint)
        args = [case.command, "in", *case.cli_args, *_cli_value(f, value)]
        result = runner.invoke(cli, args)
        assert isinstance(result.exception, Captured), (args, result.output)
        assert getattr(result.exception.options, f.name) == value, args


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_help_shows_each_default(case: Case) -> None:
    result = CliRunner().invoke(cli, [case.command, "--help"], terminal_width=200)
    text = " ".join(result.output.split())
    for f in dataclasses.fields(case.options):
        if any(f.default is nothing for nothing in (dataclasses.MISSING, None, False)):
            continue
        if f.default == ():
            continue
        flag = (f.metadata["flag"] or flag_of(f.name)).split("/")[0]
        shown = flag[2:] if f.default is True else _cli_default(f)
        assert f"[default: {shown}" in text, (case.command, f.name)


@pytest.mark.parametrize(
    ("stage", "options"),
    [
        ("tokenize", TokenizeOptions),
        ("sample", SampleOptions),
        ("pack", PackOptions),
        ("dedup", DedupOptions),
        ("pairs", PairsOptions),
        ("negatives", NegativeOptions),
    ],
)
def test_the_readme_options_table_of_each_stage_is_its_dataclass(
    stage: str, options: type[Options]
) -> None:
    """Each stage's README table is written from its options dataclass, so a
    field added, renamed or given another default shows there or fails here
    (rewrite the block with `options_table(XOptions)`)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    writer = f"tokenmill.options.options_table({options.__name__})"
    begin = f"<!-- options {stage}: written by {writer} -->\n"
    assert readme.count(begin) == 1, f"the README has no table for {stage}"
    table = readme.split(begin, 1)[1].split("<!-- /options -->", 1)[0]
    assert table == options_table(options)
    assert table.count("\n| `--") == len(dataclasses.fields(options))
