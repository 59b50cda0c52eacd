"""Golden-file helpers: compare output YAML with the committed file, or rewrite it on --update-goldens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stackway.resources.raw import ObjectKey, RawObject, Source, key_of

HERE = Path(__file__).parent


def load_manifests(path: Path) -> dict[ObjectKey, RawObject]:
    objects: dict[ObjectKey, RawObject] = {}
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            key = key_of(doc)
            objects[key] = RawObject(key, doc, Source(path.name, 1))
    return objects


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=True, width=120, default_flow_style=False)


def check_golden(path: Path, actual: str, update: bool) -> None:
    if update or not path.exists():
        path.write_text(actual)
        if not update:
            raise AssertionError(f"{path.name} did not exist; written. Review it and commit.")
        return
    expected = path.read_text()
    assert actual == expected, f"{path.name} is stale: run pytest --update-goldens and review the diff"
