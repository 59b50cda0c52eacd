"""Re-reading only the files that changed gives the states a full merge of every file gives."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import yaml

from stackway.providers.files.watcher import FilesProvider, ProviderState


class FullMerge(FilesProvider):
    """The reference: merges every file on every change."""

    def _merge_changes(self, changes: object) -> None:  # type: ignore[override]
        return None


async def ignore(_: ProviderState) -> None:
    return None


def clock() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


def route(name: str, path: str) -> dict[str, object]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"rules": [{"matches": [{"path": {"value": path}}]}]},
    }


def write(rng: random.Random, directory: Path, n: int) -> None:
    files = [f"f{i}.yaml" for i in range(4)] + ["sub/g.yaml"]
    target = directory / rng.choice(files)
    target.parent.mkdir(exist_ok=True)
    choice = rng.random()
    if choice < 0.15 and target.exists():
        target.unlink()
    elif choice < 0.25:
        target.write_text("kind: [unclosed\n")  # does not parse: its last good objects stay
    else:
        # Names overlap across files now and then: the same object in two places.
        docs = [route(f"r{rng.randrange(30 if choice < 0.4 else 300)}", f"/{n}") for _ in range(rng.randint(0, 4))]
        target.write_text(yaml.safe_dump_all(docs))


def test_incremental_states_equal_full_merges(tmp_path: Path) -> None:
    rng = random.Random(5)
    incremental, full = FilesProvider(tmp_path, ignore, clock=clock), FullMerge(tmp_path, ignore, clock=clock)
    a, b = incremental._rescan(True), full._rescan(True)
    assert a == b
    for n in range(300):
        for _ in range(rng.randint(1, 2)):
            write(rng, tmp_path, n)
        a, b = incremental._rescan(False), full._rescan(False)
        if a is None or b is None:
            assert a is None
            assert b is None
            continue
        assert dict(a.objects) == dict(b.objects), n
        assert a.problems == b.problems, n
        assert a.generation == b.generation
        if a.changed is not None:  # the hint names exactly the keys whose object is another one
            before = incremental._state.objects
            assert a.base is before
            assert a.changed == {k for k in a.objects.keys() | before.keys() if a.objects.get(k) is not before.get(k)}
        incremental._state, full._state = a, b
