"""The options several commands share, and the run report they print."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, overload

import click

from tokenmill.objectives import corrupt_options
from tokenmill.options import flag_of, shown_default
from tokenmill.runner import DEFAULT_BATCH_ROWS, FORMATS, RunReport

RUN_OPTION_NAMES = ("output", "overwrite", "fmt", "batch_size", "shards", "progress")


Command = Callable[..., Any]


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """The click type of an option's annotation, and whether it repeats."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _click_type(args[0])
    if typing.get_origin(annotation) is tuple:
        return args[0], True
    return annotation, False


def _value_type(kind: Any, meta: Mapping[str, Any]) -> Any:
    """The click type of a value option: its choices, a path, a range or `kind`."""
    low, high = meta.get("low"), meta.get("high")
    if meta.get("choices"):
        return click.Choice(meta["choices"])
    if meta.get("path"):
        return click.Path(path_type=Path)
    if kind is int and (low, high) != (None, None):
        return click.IntRange(low, high)
    if kind is float and (low, high) != (None, None):
        return click.FloatRange(low, high)
    return kind


def field_option(
    spec: dataclasses.Field[Any],
    annotation: Any,
    *,
    help: str,
    default: Any,
    required: bool = False,
    show_default: bool = False,
) -> Callable[[Command], Command]:
    """The click option of one options-dataclass field (see
    :func:`tokenmill.options.option` for its metadata), with the default,
    help and defaults shown that the caller decides."""
    meta = spec.metadata
    flag = meta.get("flag") or flag_of(spec.name)
    kind, repeats = _click_type(annotation)
    kwargs: dict[str, Any] = {"help": help, "default": default}
    if required:
        kwargs["required"] = True
    if kind is bool:
        if spec.default is True and "/" not in flag:
            flag = f"{flag}/--no-{flag[2:]}"
        elif spec.default is not True:
            kwargs["is_flag"] = True
        decls = [flag]
    else:
        decls = flag.split("/")
        kwargs["type"] = _value_type(kind, meta)
        if repeats:
            kwargs["multiple"] = True
    unit = meta.get("unit", 1)
    if unit != 1:
        kwargs["callback"] = lambda _ctx, _param, value: None if value is None else value * unit
    if show_default:
        kwargs["show_default"] = True
    return click.option(*decls, spec.name, **kwargs)


def corruption_options(command: Command) -> Command:
    """One option per corruption option of every mode, generated from the
    options dataclasses of :mod:`tokenmill.objectives`. An option left out
    keeps its mode's default (in brackets); one of another mode is an error."""
    for spec, modes in reversed(corrupt_options().values()):
        help = f"{', '.join(modes)}: {spec.metadata['help']} [{shown_default(spec)}]."
        command = field_option(spec, spec.type, help=help, default=None)(command)
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
    metadata (see :func:`tokenmill.options.option`), with the field's
    default shown, so an option is declared once: in the dataclass. A
    field without a default is a required option."""
    hints = typing.get_type_hints(config)

    def decorate(command: Command) -> Command:
        for spec in reversed(dataclasses.fields(config)):
            if spec.name in skip:
                continue
            required = spec.default is dataclasses.MISSING
            default = None if required else spec.default
            if isinstance(default, int) and not isinstance(default, bool):
                default //= spec.metadata.get("unit", 1)
            # Switches show an "on" default only; values any but none.
            shown = default if isinstance(default, bool) else default not in (None, ())
            option = field_option(
                spec,
                hints[spec.name],
                help=spec.metadata.get("help", ""),
                default=default,
                required=required,
                show_default=shown,
            )
            command = option(command)
        return command

    return decorate
