"""`manifest.json`: what a stage made, from what, with which parameters.

The manifest is written last, by atomic rename, so its presence means the
dataset is complete.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tokenmill._core import ShardError
from tokenmill._fs import write_atomic

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass
class InputShard:
    name: str
    bytes: int
    checksum: str


@dataclass
class OutputShard:
    name: str
    rows: int
    tokens: int
    bytes: int
    input: str
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class Manifest:
    stage: str
    tool_version: str
    params: dict[str, Any]
    seed: int | None
    fingerprint: str
    inputs: list[InputShard]
    outputs: list[OutputShard]
    totals: dict[str, int] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    def save(self, folder: Path) -> Path:
        path = folder / MANIFEST_NAME
        write_atomic(path, self.to_json().encode())
        return path

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            raw = json.loads(path.read_text())
            manifest = cls(
                stage=raw["stage"],
                tool_version=raw["tool_version"],
                params=raw["params"],
                seed=raw.get("seed"),
                fingerprint=raw["fingerprint"],
                inputs=[InputShard(**s) for s in raw["inputs"]],
                outputs=[OutputShard(**s) for s in raw["outputs"]],
                totals=raw.get("totals", {}),
                ratios=raw.get("ratios", {}),
                version=raw.get("version", MANIFEST_VERSION),
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ShardError(
                f"{path}: the manifest cannot be read ({err!r}); "
                "delete it and rerun the stage that made this folder"
            ) from err
        _refuse_outputs_outside(path, manifest.outputs)
        return manifest


def _refuse_outputs_outside(path: Path, outputs: list[OutputShard]) -> None:
    """Raises ShardError unless every output is a distinct file name beside the manifest.

    Readers take the manifest's word for which shards a folder holds, so a
    path there (`../x.parquet`, `/abs/x.parquet`, `sub/x.parquet`) would read
    outside the dataset, and a name listed twice would read its rows twice.
    """
    fix = f"rerun the stage that made this folder, or delete {MANIFEST_NAME} to read its shards"
    seen: set[str] = set()
    for output in outputs:
        name = output.name
        if not isinstance(name, str) or name in ("", "..") or Path(name).name != name:
            raise ShardError(
                f"{path}: output {name!r} is not a file name in the manifest's folder, so "
                f"reading it would leave the dataset; {fix}"
            )
        if name in seen:
            raise ShardError(
                f"{path}: output {name!r} is listed twice, so its rows would be read twice; {fix}"
            )
        seen.add(name)
