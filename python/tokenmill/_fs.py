"""Durable, atomic file output: readers see the old file or the whole new one."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Collection, Iterator
from pathlib import Path

_TEMPORARY = re.compile(r"\.(?P<target>.+)\.\d+\.tmp")


def temporary_name(path: Path) -> Path:
    """Where `path` is written before it is renamed into place (`.NAME.PID.tmp`)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_temporaries(folder: Path, targets: Collection[str] | None = None) -> None:
    """Removes the temporaries killed writers left in `folder`: those of `targets`, or all.

    Only for callers that hold the lock on what they name, since a live
    writer's temporary looks the same.
    """
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            match = _TEMPORARY.fullmatch(entry.name)
            if match and (targets is None or match["target"] in targets):
                entry.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path to write; on success flushes it to disk and
    renames it to `path`, on failure removes it.

    The file is synced before the rename and the folder after it, so a record
    saying the file is done can never outlive the file's bytes in a crash.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Writes `data` to `path` atomically and durably."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def out_of_room(err: OSError) -> bool:
    """A full disk, a quota or the file size limit; pyarrow keeps only the message."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    return any(text in str(err) for text in ("No space left", "quota exceeded", "File too large"))
