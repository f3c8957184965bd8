"""The worker-thread count, bounded before it reaches the Rust pool."""

from __future__ import annotations

from tokenmill import _core
from tokenmill._core import ConfigError

#: Far above any core count tokenmill runs on, and far below the count at
#: which starting the pool stalls the machine (`--threads 100000` did: every
#: thread reserves a stack). A fixed number rather than a multiple of the
#: cores, so a command that works on one machine works on every other.
MAX_THREADS = 1024


def set_num_threads(threads: int) -> None:
    """Sets the worker threads of later calls; 0 restores the default
    (`TOKENMILL_NUM_THREADS`, `RAYON_NUM_THREADS`, else every core).

    Raises :class:`tokenmill.ConfigError` outside ``[0, MAX_THREADS]``, before
    the pool is touched.
    """
    if not 0 <= threads <= MAX_THREADS:
        raise ConfigError(
            f"{threads} worker threads is outside [0, {MAX_THREADS}]; pass --threads "
            f"(or set_num_threads) of at most {MAX_THREADS}, or 0 for one per core"
        )
    _core.set_num_threads(threads)
