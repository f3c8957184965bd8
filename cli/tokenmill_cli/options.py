"""The options several commands share, and the run report they print."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, overload

import click

from tokenmill.checks import NULLS
from tokenmill.objectives import (
    corrupt_options,
    flag_of,
    shown_default,
)
from tokenmill.runner import DEFAULT_BATCH_ROWS, FORMATS, RunReport

RUN_OPTION_NAMES = ("output", "overwrite", "fmt", "batch_size", "shards", "progress")


Command = Callable[..., Any]


def nulls_option(command: Command) -> Command:
    """`--nulls error|skip`, the same on every stage that reads text or tokens."""
    return click.option(
        "--nulls",
        type=click.Choice(NULLS),
        default="error",
        show_default=True,
        help="A row whose text or tokens are null: stop with an error naming it, or skip "
        "it (counted as rows_null).",
    )(command)


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """The click type of an option's annotation, and whether it repeats."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _click_type(args[0])
    if typing.get_origin(annotation) is tuple:
        return args[0], True
    return annotation, False


def corruption_options(command: Command) -> Command:
    """One option per corruption option of every mode, generated from the
    options dataclasses of :mod:`tokenmill.objectives`. An option left out
    keeps its mode's default (in brackets); one of another mode is an error."""
    for name, (spec, modes) in reversed(corrupt_options().items()):
        flag = spec.metadata["flag"] or flag_of(name)
        help = f"{', '.join(modes)}: {spec.metadata['help']} [{shown_default(spec)}]."
        kind, repeats = _click_type(spec.type)
        if kind is bool and spec.default:
            option = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help)
        elif kind is bool:
            option = click.option(flag, name, is_flag=True, default=None, help=help)
        else:
            choices = spec.metadata["choices"]
            option = click.option(
                flag,
                name,
                type=click.Choice(choices) if choices else kind,
                multiple=repeats,
                help=help,
            )
        command = option(command)
    return command


@overload
def run_options(command: Command) -> Command: ...
@overload
def run_options(
    *, output_required: bool = True, global_stage: str | None = None
) -> Callable[[Command], Command]: ...


def run_options(
    command: Command | None = None,
    *,
    output_required: bool = True,
    global_stage: str | None = None,
) -> Command | Callable[[Command], Command]:
    """The options every shard stage shares, handed to the command as one
    `run` dict of :func:`tokenmill.run_stage` keyword arguments. With
    `output_required=False`, `-o` may be left out and `run["output"]` is None.
    A `global_stage` (its output help) reads every shard at once, so it has
    no `--shard` and `run` holds no `shards`."""
    if command is None:
        return functools.partial(
            run_options, output_required=output_required, global_stage=global_stage
        )
    output_help = global_stage or "Output folder (created if missing)." + (
        "" if output_required else " Default: next to SOURCE, named SOURCE-MODE."
    )
    options = [
        click.option(
            "-o",
            "--output",
            type=click.Path(path_type=Path),
            required=output_required,
            help=output_help,
        ),
        click.option(
            "--overwrite",
            is_flag=True,
            help="Redo every shard, replacing earlier output; without it, finished shards "
            "are skipped.",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(FORMATS),
            default="parquet",
            show_default=True,
            help="Output shard format; 'arrow' (IPC) can be memory-mapped without a copy.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=DEFAULT_BATCH_ROWS,
            show_default=True,
            help="Rows per batch read (memory bound; output is unaffected).",
        ),
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Force the progress bar on or off (default: on at a terminal, off in CI).",
        ),
    ]
    if global_stage is None:
        options.insert(
            4,
            click.option(
                "--shard",
                "shards",
                multiple=True,
                help="Only this input shard (repeatable), to split one dataset over processes.",
            ),
        )
    names = [n for n in RUN_OPTION_NAMES if global_stage is None or n != "shards"]

    @functools.wraps(command)
    def with_run(**kwargs: Any) -> Any:
        run = {name: kwargs.pop(name) for name in names}
        if "shards" in run:
            run["shards"] = list(run["shards"]) or None
        return command(run=run, **kwargs)

    for option in reversed(options):
        with_run = option(with_run)
    return with_run


def report_run(report: RunReport) -> None:
    """The run's one-paragraph report on standard error."""
    rate = report.tokens / max(report.seconds, 1e-9)
    line = (
        f"{report.output}: {len(report.written)} shard(s) written, "
        f"{len(report.skipped)} skipped, {report.rows:,} rows"
    )
    if report.tokens:
        line += f", {report.tokens:,} tokens ({rate / 1e6:.2f}M tokens/s)"
    line += f", {report.seconds:.1f}s"
    if report.manifest is not None:
        totals = ", ".join(f"{k} {v:,}" for k, v in report.manifest.totals.items())
        ratios = "".join(f", {k} {v:.4%}" for k, v in report.manifest.ratios.items())
        line += f"\nmanifest: {totals}{ratios}"
    else:
        line += "\nother shards are not done yet; the manifest is written when they are"
    if report.summary:
        line += f"\n{report.summary}"
    click.echo(line, err=True)


def config_options(config: type, *, skip: tuple[str, ...] = ()) -> Callable[[Command], Command]:
    """One option per field of the dataclass `config`, from the field's
    metadata (help, flag, lowest integer, choices, whether it is a path),
    so a setting is declared once: in the dataclass."""
    hints = typing.get_type_hints(config)

    def decorate(command: Command) -> Command:
        for spec in reversed(dataclasses.fields(config)):
            if spec.name in skip:
                continue
            meta = spec.metadata
            decls = (meta.get("flag") or flag_of(spec.name)).split("/")
            kind, _ = _click_type(hints[spec.name])
            required = spec.default is dataclasses.MISSING
            default = None if required else spec.default
            kwargs: dict[str, Any] = {"help": meta.get("help", ""), "required": required}
            if kind is bool and default:
                decls = [f"{decls[-1]}/--no-{decls[-1][2:]}"]
                kwargs.update(default=True, show_default=True)
            elif kind is bool:
                kwargs.update(is_flag=True)
            else:
                if meta.get("choices"):
                    kwargs["type"] = click.Choice(meta["choices"])
                elif meta.get("path"):
                    kwargs["type"] = click.Path(path_type=Path)
                elif kind is int and meta.get("low") is not None:
                    kwargs["type"] = click.IntRange(min=meta["low"])
                else:
                    kwargs["type"] = kind
                kwargs.update(default=default, show_default=default is not None)
            command = click.option(*decls, spec.name, **kwargs)(command)
        return command

    return decorate
