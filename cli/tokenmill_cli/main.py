"""`tokenmill ...`: each command parses options and calls one library function.

The commands live by area (`stages`, `contrastive`, `tools`); their shared
options in `options`."""

from __future__ import annotations

from typing import Any

import click

import tokenmill
from tokenmill._threads import MAX_THREADS
from tokenmill_cli import contrastive, stages, tools


class TokenmillGroup(click.Group):
    """Turns tokenmill's own errors into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except tokenmill.TokenmillError as err:
            raise click.ClickException(f"{type(err).__name__}: {err}") from None
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            raise click.ClickException(
                f"{type(err).__name__}: {where}{err.strerror or err}"
            ) from None


@click.group(cls=TokenmillGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(tokenmill.__version__, prog_name="tokenmill")
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    help=f"Worker threads, at most {MAX_THREADS} (0: TOKENMILL_NUM_THREADS, "
    "RAYON_NUM_THREADS, else every core).",
)
def cli(threads: int) -> None:
    """Pretraining data for every objective, over Arrow shards."""
    if threads:
        tokenmill.set_num_threads(threads)


for command in (
    stages.tokenize_command,
    stages.sample_command,
    stages.corrupt_command,
    stages.pack_command,
    stages.dedup_command,
    contrastive.pairs_command,
    contrastive.negatives_command,
    tools.bench_command,
    tools.tokenizer_group,
    tools.inspect_command,
    tools.train_command,
    tools.demo_command,
):
    cli.add_command(command)


def main() -> None:
    cli.main(prog_name="tokenmill")


if __name__ == "__main__":
    main()
