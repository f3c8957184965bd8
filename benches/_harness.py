"""What every benchmark script shares: timing, and where the corpora live."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO.parent / "shared" / "corpora"


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    """Median wall time of `repeat` calls, after one warm-up call."""
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def shown(path: Path) -> str:
    """`path` as the README prints it: relative to the repository, never the
    absolute path of the machine the bench ran on."""
    return os.path.relpath(Path(path).resolve(), REPO)
