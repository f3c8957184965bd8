"""Options declared once: the field helper of every options dataclass.

A stage's options (`TokenizeOptions`, `SampleOptions`...), a corrupt mode's
(`MlmOptions`...) and a training run's (`TrainConfig`) are dataclasses whose
fields are made by :func:`option`: beside type and default, a field carries
what the CLI, the README and error messages need to offer it. The CLI makes
one flag per field (`tokenmill_cli.options.config_options`), the stage
functions take one keyword per field (:meth:`Options.parse`), and the
stages record the fields in their manifests, so an option is written in
one place: its dataclass.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field
from typing import Any, TypeVar

from tokenmill._core import ConfigError

#: The largest seed or epoch the kernels take (a u64).
U64_MAX = 2**64 - 1


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] = (),
    path: bool = False,
    domain: str = "",
    shown: str | None = None,
    unit: int = 1,
    blank_none: bool = False,
) -> Any:
    """A field of an options dataclass (no default: a required one).

    - `help`: what the CLI and the README print.
    - `flag`: the CLI's flag where it is not `--name`: `-o/--output` (short
      and long) for a value, `--on/--off` for a switch.
    - `low`, `high`: the CLI's range of a number (`IntRange`/`FloatRange`).
    - `choices`: the values a string takes.
    - `path`: it names a file or folder.
    - `domain`: its domain in words, for the README (`[0, 1]`).
    - `shown`: how its default reads where it is resolved later (`<mask>` for None).
    - `unit`: the CLI reads the value in units of this many (MiB: `1 << 20`).
    - `blank_none`: an empty string means None (`--id-column ''`).
    """
    metadata = {
        "help": help,
        "flag": flag,
        "low": low,
        "high": high,
        "choices": choices,
        "path": path,
        "domain": domain,
        "shown": shown,
        "unit": unit,
        "blank_none": blank_none,
    }
    return field(default=default, metadata=metadata)


def seed_option(help: str = "") -> Any:
    return option(0, help, low=0, high=U64_MAX)


def epoch_option(help: str = "") -> Any:
    return option(0, help, low=0, high=U64_MAX)


def id_column_option(help: str) -> Any:
    """The document id column; '' (or None) keys rows by position."""
    return option("id", help, blank_none=True)


def options_table(options: type, *, skip: Sequence[str] = ()) -> str:
    """The README's table of a stage's options, written from its dataclass
    (a test checks the README holds it as written here)."""
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(options):
        if f.name in skip:
            continue
        flag = shown_flag(f)
        if f.metadata.get("choices"):
            flag += " " + "\\|".join(f.metadata["choices"])
        if f.default is MISSING:
            default = "required"
        elif f.metadata.get("unit", 1) != 1 and f.metadata.get("shown") is None:
            default = str(f.default // f.metadata["unit"])
        elif f.default in ((), None) and f.metadata.get("shown") is None:
            default = "none"
        else:
            default = shown_default(f)
        help = f.metadata.get("help", "").replace("|", "\\|")
        default = default.replace("|", "\\|")
        lines.append(f"| `{flag}` | {default} | {help} |")
    return "\n".join(lines) + "\n"


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def shown_flag(f: dataclasses.Field[Any]) -> str:
    """An option's flag as tables show it: `--eos/--no-eos` for a switch that is on."""
    flag = str(f.metadata.get("flag") or flag_of(f.name))
    return f"{flag}/--no-{flag[2:]}" if f.default is True and "/" not in flag else flag


def shown_default(f: dataclasses.Field[Any]) -> str:
    """How an option's default reads in help and tables."""
    shown = f.metadata.get("shown")
    if shown is not None:
        return str(shown)
    if isinstance(f.default, bool):
        return "on" if f.default else "off"
    if isinstance(f.default, float) and math.isfinite(f.default) and f.default == int(f.default):
        return str(int(f.default))
    return str(f.default)


T = TypeVar("T", bound="Options")


@dataclass(frozen=True)
class Options:
    """Base of the stages' options dataclasses: each field made by
    :func:`option`, `check()` refusing values out of their domain."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("blank_none") and value == "":
                object.__setattr__(self, f.name, None)
            elif f.metadata.get("path") and value is not None:
                object.__setattr__(self, f.name, str(value))  # a Path, as JSON records it

    def check(self) -> None:
        """A ConfigError for the first option out of its domain."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def split(
        cls, given: Mapping[str, Any], *, what: str, also: Sequence[str] = ()
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """`given` as (the fields' keywords, the keywords named in `also`);
        any other name is a ConfigError naming every keyword `what` takes."""
        known = cls.names()
        unknown = [name for name in given if name not in known and name not in also]
        if unknown:
            raise ConfigError(
                f"{what}() takes no keyword {', '.join(unknown)}; "
                f"it takes {', '.join([*known, *also])}"
            )
        fields = {name: value for name, value in given.items() if name in known}
        rest = {name: value for name, value in given.items() if name not in known}
        return fields, rest

    @classmethod
    def parse(
        cls: type[T],
        given: Mapping[str, Any],
        *,
        what: str,
        base: T | None = None,
        also: Sequence[str] = (),
    ) -> T:
        """The options from keyword arguments (over `base`, else the
        defaults), checked; an unknown name is a ConfigError that names
        the fields and `also`, the other keywords `what` takes."""
        fields, _ = cls.split(given, what=what, also=also)
        options = dataclasses.replace(base, **fields) if base is not None else cls(**fields)
        options.check()
        return options


def keywords_of(function: Callable[..., Any]) -> tuple[str, ...]:
    """The keyword-only parameters of `function` (:func:`tokenmill.run_stage`'s
    run options, say)."""
    parameters = inspect.signature(function).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)
