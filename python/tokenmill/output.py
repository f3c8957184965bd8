"""The output folder's safety and state: what a stage may write where.

Every run keeps records of its shards in ``OUT/.tokenmill/`` (see
:class:`ShardRecords`), locks each output it writes, refuses to write over
its input, over another run's output or over the user's own files, and writes
the manifest once every shard's record says it is done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenmill import _core
from tokenmill._core import ConfigError, TokenmillError
from tokenmill._fs import remove_temporaries, write_atomic
from tokenmill.dataset import Dataset
from tokenmill.manifest import MANIFEST_NAME, InputShard, Manifest, OutputShard

if TYPE_CHECKING:
    from tokenmill.runner import Stage

STATE_DIR = ".tokenmill"


class ShardRecords:
    """The records of work done shard by shard, one JSON file per shard in `folder`.

    A record names the fingerprint of the parameters, the checksum of the
    input shard, the size of each file the work wrote and what the work
    reports of them (its `output`). A shard is done when all of these still
    hold; :func:`tokenmill.runner.run_shards` is the loop that keeps them.
    """

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def read(self, name: str) -> dict[str, Any] | None:
        """The record of `name`, whatever run wrote it, or None."""
        try:
            record: dict[str, Any] = json.loads(self.path(name).read_text())
            return record
        except (OSError, ValueError):
            return None

    def finished(self, name: str, checksum: str, files: Sequence[Path]) -> dict[str, Any] | None:
        """The recorded output of `name`, when this run's parameters made it
        from the input of `checksum` and `files` are as that run left them."""
        record = self.read(name)
        if (
            record is None
            or "output" not in record
            or record.get("fingerprint") != self.fingerprint
            or record.get("input_checksum") != checksum
            or record.get("files") != _sizes(files)
        ):
            return None
        output: dict[str, Any] = record["output"]
        return output

    def claim(self, name: str, checksum: str) -> None:
        """Records that this run is about to write `name`'s files, before they exist."""
        claim = {"fingerprint": self.fingerprint, "input_checksum": checksum}
        write_atomic(self.path(name), json.dumps(claim).encode())

    def finish(
        self,
        name: str,
        checksum: str,
        input_bytes: int,
        output: dict[str, Any],
        files: Sequence[Path],
    ) -> None:
        """Records that `files` are written and whole, with what the work reported."""
        record = {
            "fingerprint": self.fingerprint,
            "input_checksum": checksum,
            "input_bytes": input_bytes,
            "output": output,
            "files": _sizes(files),
        }
        write_atomic(self.path(name), json.dumps(record).encode())

    def drop(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)


def _sizes(files: Sequence[Path]) -> dict[str, int | None]:
    return {path.name: _size(path) for path in files}


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def remove_empty_output(out: Path) -> None:
    """Removes an output folder this run created, if nothing finished in it.

    Only empty folders go, so another process writing shards of the same
    dataset into it (see `shards`) never loses its work.
    """
    for folder in (out / STATE_DIR, out):
        with contextlib.suppress(OSError):
            folder.rmdir()


def refuse_output_over_input(out: Path, dataset: Dataset) -> None:
    """Raises ConfigError when writing into `out` could replace or delete input shards.

    The output folder may not equal, contain or lie inside the folder of any
    input shard: shard names are kept, so an output shard would land on its
    own input (or on a sibling a later stage reads as input). Checked before
    anything is written, on resolved paths, so a symlink or `..` cannot hide it.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: the output must be a folder; choose another -o")
    target = out.resolve()
    folders = {shard.path.resolve().parent for shard in dataset.shards}
    if dataset.root.is_dir():
        folders.add(dataset.root.resolve())
    for folder in sorted(folders):
        if target == folder:
            relation = "is the input's folder"
        elif target in folder.parents:
            relation = f"contains the input's folder {folder}"
        elif folder in target.parents:
            relation = f"lies inside the input's folder {folder}"
        else:
            continue
        raise ConfigError(
            f"{out}: the output folder {relation}, so writing it could replace the input "
            "shards; choose an -o outside the input's folder"
        )


def refuse_foreign_output(out: Path, fingerprint: str) -> None:
    """Raises ConfigError when `out` holds shards or a manifest of other parameters."""
    state = ShardRecords(out / STATE_DIR, fingerprint)
    names = sorted(state.folder.glob("*.json")) if state.folder.exists() else []
    foreign = [r for r in names if (state.read(r.stem) or {}).get("fingerprint") != fingerprint]
    manifest = out / MANIFEST_NAME
    if manifest.exists():
        with contextlib.suppress(TokenmillError):
            if Manifest.load(manifest).fingerprint != fingerprint:
                foreign.append(manifest)
    if foreign:
        raise ConfigError(
            f"{out}: the folder holds output of another run with different parameters; "
            "pass --overwrite to replace it, or choose another -o"
        )


def refuse_unrecorded_files(out: Path, names: Sequence[str]) -> None:
    """Raises ConfigError when `out` holds a file of one of `names` that no tokenmill run wrote.

    A run records each output in `.tokenmill/` before it writes the file, so
    an output name without a record, or a manifest that is not a tokenmill
    manifest, is the user's own file: replacing it takes `--overwrite`.
    """
    state = out / STATE_DIR
    unrecorded = [n for n in names if (out / n).exists() and not (state / f"{n}.json").exists()]
    if (out / MANIFEST_NAME).exists():
        try:
            Manifest.load(out / MANIFEST_NAME)
        except TokenmillError:
            unrecorded.append(MANIFEST_NAME)
    if unrecorded:
        more = f" and {len(unrecorded) - 1} more" if len(unrecorded) > 1 else ""
        raise ConfigError(
            f"{out}: {unrecorded[0]}{more} would be replaced, but no tokenmill run wrote them "
            f"(no record in {STATE_DIR}/); move them away, choose another -o, or pass "
            "--overwrite to replace them"
        )


@contextlib.contextmanager
def lock_outputs(out: Path, names: Sequence[str]) -> Iterator[None]:
    """Holds an exclusive lock on each output name in `out` for the block, or
    raises ConfigError at once when another process holds one.

    One lock per output, not per folder: runs over disjoint `shards` share a
    folder on purpose, while two runs that would write one file must not
    (the second deleted the first's temporary). A lock dies with its
    process, so a killed run's lock file blocks nobody, and each lock file
    is removed by its holder, while still held, so none pile up.
    """
    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    held: list[tuple[Path, int]] = []
    try:
        for name in sorted(set(names)):
            path = state / f"{name}.lock"
            held.append((path, _lock(path, out, name)))
        yield
    finally:
        for path, fd in held:
            path.unlink(missing_ok=True)
            os.close(fd)


def _lock(path: Path, out: Path, name: str) -> int:
    """Locks `path`, creating it, and writes this process's PID into it; returns its descriptor."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A holder that finished between our open and our lock removed the
            # file: a lock on a removed file guards nothing, so take the new one.
            if _same_file(fd, path):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            holder = f"another tokenmill run (PID {pid})" if pid else "another tokenmill run"
            raise ConfigError(
                f"{out}: {holder} is writing {name} in this folder; wait for it to finish, "
                "or choose another -o (runs over disjoint --shard sets may share one)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def prepare_output(
    out: Path, selected: Sequence[str], overwrite: bool, *, every_shard: bool
) -> None:
    """Clears what killed runs left of the selected outputs (and, with
    `overwrite`, the outputs themselves).

    Runs under the selected outputs' locks and touches only their files, so
    runs over disjoint `shards` can share one output folder. The manifest's
    temporary is a selected output's only when every shard is: then no
    other run can be writing the manifest.
    """
    state = out / STATE_DIR
    remove_temporaries(out, {*selected, *([MANIFEST_NAME] if every_shard else [])})
    remove_temporaries(state, {f"{name}.json" for name in selected})
    manifest = out / MANIFEST_NAME
    if overwrite:
        manifest.unlink(missing_ok=True)
        for name in selected:
            (out / name).unlink(missing_ok=True)
            (state / f"{name}.json").unlink(missing_ok=True)


def write_manifest_if_complete(
    stage: Stage, dataset: Dataset, out: Path, fingerprint: str, names: dict[str, str]
) -> Manifest | None:
    """Writes `out`'s manifest when the records say every shard of `dataset`
    (named in `out` by `names`) is done with `fingerprint`; returns it, or None."""
    records = ShardRecords(out / STATE_DIR, fingerprint)
    inputs: list[InputShard] = []
    outputs: list[OutputShard] = []
    for shard in dataset.shards:
        record = records.read(names[shard.name])
        if record is None or record.get("fingerprint") != fingerprint or "output" not in record:
            return None
        inputs.append(InputShard(shard.name, record["input_bytes"], record["input_checksum"]))
        outputs.append(OutputShard(**record["output"]))
    totals: dict[str, int] = {
        "shards": len(outputs),
        "rows": sum(o.rows for o in outputs),
        "tokens": sum(o.tokens for o in outputs),
        "bytes": sum(o.bytes for o in outputs),
    }
    for made in outputs:
        for key, value in made.stats.items():
            totals[key] = totals.get(key, 0) + value
    totals.update(stage.manifest_totals())
    ratios = stage.ratios(totals)
    manifest = Manifest(
        stage=stage.name,
        tool_version=_core.__version__,
        params=stage.params(),
        seed=stage.seed,
        fingerprint=fingerprint,
        inputs=inputs,
        outputs=outputs,
        totals=totals,
        ratios=ratios,
    )
    manifest.save(out)
    return manifest
