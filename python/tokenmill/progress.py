"""Progress bars that show on a terminal and stay silent in pipes and CI."""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType

from tqdm import tqdm


def progress_enabled(requested: bool | None = None) -> bool:
    """Whether to draw bars: `requested` wins; else only on an interactive stderr outside CI."""
    if requested is not None:
        return requested
    if os.environ.get("TOKENMILL_PROGRESS") in {"0", "false", "no"}:
        return False
    if os.environ.get("CI"):
        return False
    return sys.stderr.isatty()


class StageProgress:
    """One bar over the rows of a stage, with shards done and tokens/s beside it."""

    def __init__(self, stage: str, total_rows: int, total_shards: int, enabled: bool) -> None:
        self._bar = tqdm(
            total=total_rows,
            desc=stage,
            unit="rows",
            unit_scale=True,
            disable=not enabled,
            dynamic_ncols=True,
            leave=True,
        )
        self._total_shards = total_shards
        self._shards = 0
        self._tokens = 0
        self._started = time.perf_counter()

    def advance(self, rows: int, tokens: int) -> None:
        self._tokens += tokens
        self._bar.update(rows)
        self._refresh()

    def shard_done(self, rows_skipped: int = 0) -> None:
        self._shards += 1
        if rows_skipped:
            self._bar.update(rows_skipped)
        self._refresh()

    def _refresh(self) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._bar.set_postfix_str(
            f"shards {self._shards}/{self._total_shards}, {self._tokens / elapsed:,.0f} tok/s",
            refresh=False,
        )

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.close()
