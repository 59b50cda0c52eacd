"""FilesProvider against a real directory and real file-system events."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stackway.providers.files import FilesProvider, ProviderState
from stackway.providers.files.watcher import RETRY_S
from stackway.resources.raw import ObjectKey

pytestmark = pytest.mark.timeout(30)

#: Generous compared with the 50 ms debounce, so a loaded machine does not make the tests flaky.
WITHIN_S = 1.0
#: How long to watch for a callback that must not come.
QUIET_S = 0.5


def secret(name: str, value: str = "v", **extra: str) -> str:
    lines = "".join(f"\n  {k}: {v}" for k, v in extra.items())
    return f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}{lines}\ndata: {{k: {value}}}\n"


def key(name: str) -> ObjectKey:
    return ObjectKey("", "Secret", "default", name)


@dataclass
class Recorder:
    states: list[ProviderState] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, state: ProviderState) -> None:
        self.states.append(state)
        self.times.append(time.monotonic())
        self.changed.set()

    @property
    def last(self) -> ProviderState:
        return self.states[-1]

    async def until(self, check: Callable[[ProviderState], bool], within: float = WITHIN_S) -> ProviderState:
        """The latest delivered state once it passes `check`; fails the test after `within` seconds."""
        try:
            async with asyncio.timeout(within):
                while not (self.states and check(self.last)):
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            pytest.fail(f"no matching state within {within}s; last: {self.states[-1] if self.states else None}")
        return self.last

    async def quiet(self) -> int:
        """Number of callbacks during QUIET_S."""
        before = len(self.states)
        await asyncio.sleep(QUIET_S)
        return len(self.states) - before


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def provider(tmp_path: Path, recorder: Recorder) -> AsyncIterator[FilesProvider]:
    (tmp_path / "a.yaml").write_text(secret("a", "one"))
    files = FilesProvider(tmp_path, recorder)
    task = asyncio.create_task(files.run())
    await recorder.until(lambda s: s.generation == 1)
    await asyncio.sleep(0.1)  # let the watch settle so the first test write is seen as a change
    yield files
    files.stop()
    await asyncio.wait_for(task, 5)


def data_of(state: ProviderState, name: str) -> object:
    return state.objects[key(name)].body["data"]


async def test_initial_load_is_delivered_and_snapshotted(provider: FilesProvider, recorder: Recorder) -> None:
    first = recorder.states[0]
    assert (first.generation, list(first.objects), first.problems) == (1, [key("a")], ())
    assert provider.snapshot() is recorder.last


async def test_edit_delivers_new_content_within_a_second(
    tmp_path: Path, provider: FilesProvider, recorder: Recorder
) -> None:
    written = time.monotonic()
    (tmp_path / "a.yaml").write_text(secret("a", "two"))
    state = await recorder.until(lambda s: data_of(s, "a") == {"k": "two"})
    assert recorder.times[-1] - written < WITHIN_S
    assert state.generation == 2


async def test_new_file_in_new_directory_and_deleted_file(
    tmp_path: Path, provider: FilesProvider, recorder: Recorder
) -> None:
    (tmp_path / "team" / "x").mkdir(parents=True)
    (tmp_path / "team" / "x" / "b.yml").write_text(secret("b"))
    await recorder.until(lambda s: key("b") in s.objects)
    (tmp_path / "a.yaml").unlink()
    state = await recorder.until(lambda s: key("a") not in s.objects)
    assert list(state.objects) == [key("b")]
    for path in sorted((tmp_path / "team").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    state = await recorder.until(lambda s: not s.objects)
    assert state.problems == ()


async def test_broken_file_keeps_last_objects_until_fixed(
    tmp_path: Path, provider: FilesProvider, recorder: Recorder
) -> None:
    (tmp_path / "a.yaml").write_text(secret("a", "one") + "spec: [\n")
    state = await recorder.until(lambda s: bool(s.problems))
    assert data_of(state, "a") == {"k": "one"}
    (problem,) = state.problems
    assert (problem.file, problem.line) == ("a.yaml", 7)  # the end of the file, where a value was due
    assert "invalid YAML" in problem.message
    (tmp_path / "a.yaml").write_text(secret("a", "fixed"))
    state = await recorder.until(lambda s: not s.problems)
    assert data_of(state, "a") == {"k": "fixed"}


async def test_broken_new_file_serves_nothing_from_it(
    tmp_path: Path, provider: FilesProvider, recorder: Recorder
) -> None:
    (tmp_path / "b.yaml").write_text(secret("b") + "oops: {\n")
    state = await recorder.until(lambda s: bool(s.problems))
    assert list(state.objects) == [key("a")]
    assert state.problems[0].file == "b.yaml"


async def test_invalid_object_is_reported_and_dropped_others_stay(
    tmp_path: Path, provider: FilesProvider, recorder: Recorder
) -> None:
    (tmp_path / "a.yaml").write_text(secret("a", "one") + "---\napiVersion: v1\nkind: Secret\nmetadata: {}\n")
    state = await recorder.until(lambda s: bool(s.problems))
    assert [(p.line, p.field) for p in state.problems] == [(7, "metadata.name")]
    assert list(state.objects) == [key("a")]


async def test_tmp_file_then_rename_is_picked_up(tmp_path: Path, provider: FilesProvider, recorder: Recorder) -> None:
    tmp = tmp_path / ".b.yaml.tmp"
    tmp.write_text(secret("b"))
    assert await recorder.quiet() == 0
    os.replace(tmp, tmp_path / "b.yaml")
    state = await recorder.until(lambda s: key("b") in s.objects)
    assert state.objects[key("b")].source is not None
    assert state.objects[key("b")].source.file == "b.yaml"  # type: ignore[union-attr]
    tmp.write_text(secret("a", "replaced"))
    os.replace(tmp, tmp_path / "a.yaml")
    await recorder.until(lambda s: data_of(s, "a") == {"k": "replaced"})


async def test_identical_rewrite_and_touch_do_not_call_back(
    tmp_path: Path, provider: FilesProvider, recorder: Recorder
) -> None:
    (tmp_path / "a.yaml").write_text(secret("a", "one"))
    os.utime(tmp_path / "a.yaml")
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / ".hidden.yaml").write_text(secret("hidden"))
    assert await recorder.quiet() == 0
    assert recorder.last.generation == 1


async def test_comment_only_change_does_not_call_back_unless_lines_move(
    tmp_path: Path, provider: FilesProvider, recorder: Recorder
) -> None:
    (tmp_path / "a.yaml").write_text(secret("a", "one") + "# trailing comment\n")
    assert await recorder.quiet() == 0
    (tmp_path / "a.yaml").write_text("# now first\n" + secret("a", "one"))
    state = await recorder.until(lambda s: s.objects[key("a")].source.line == 2)  # type: ignore[union-attr]
    assert state.objects[key("a")].body["metadata"]["generation"] == 1


async def test_burst_of_200_writes_is_coalesced(tmp_path: Path, provider: FilesProvider, recorder: Recorder) -> None:
    before = len(recorder.states)
    for i in range(200):
        (tmp_path / f"f{i % 50}.yaml").write_text(secret(f"f{i % 50}", f"v{i}"))
    state = await recorder.until(lambda s: len(s.objects) == 51 and data_of(s, "f49") == {"k": "v199"}, within=5)
    assert await recorder.quiet() == 0
    assert len(recorder.states) - before <= 5
    assert all(data_of(state, f"f{n}") == {"k": f"v{150 + n}"} for n in range(50))


async def test_duplicate_is_served_from_second_file_once_the_first_is_gone(
    tmp_path: Path, provider: FilesProvider, recorder: Recorder
) -> None:
    (tmp_path / "b.yaml").write_text(secret("a", "from-b"))
    state = await recorder.until(lambda s: bool(s.problems))
    assert data_of(state, "a") == {"k": "one"}
    assert state.problems[0].file == "b.yaml"
    (tmp_path / "a.yaml").unlink()
    state = await recorder.until(lambda s: not s.problems)
    assert data_of(state, "a") == {"k": "from-b"}


async def test_generation_follows_spec_changes_only(
    tmp_path: Path, provider: FilesProvider, recorder: Recorder
) -> None:
    def meta(state: ProviderState) -> dict[str, object]:
        return dict(state.objects[key("a")].body["metadata"])

    created = meta(recorder.last)["creationTimestamp"]
    assert meta(recorder.last)["generation"] == 1
    (tmp_path / "a.yaml").write_text(secret("a", "one", labels="{x: y}"))
    state = await recorder.until(lambda s: "labels" in meta(s))
    assert meta(state)["generation"] == 1
    (tmp_path / "a.yaml").write_text(secret("a", "two", labels="{x: y}"))
    state = await recorder.until(lambda s: data_of(s, "a") == {"k": "two"})
    assert meta(state)["generation"] == 2
    assert meta(state)["creationTimestamp"] == created
    (tmp_path / "a.yaml").write_text(secret("a", "three", generation="41"))
    state = await recorder.until(lambda s: data_of(s, "a") == {"k": "three"})
    assert meta(state)["generation"] == 41


async def test_configmap_style_symlink_swap_is_picked_up(tmp_path: Path, recorder: Recorder) -> None:
    """A mounted ConfigMap: visible files link into `..data`, a hidden link swapped to a new hidden dir."""
    for version, value in (("..v1", "one"), ("..v2", "two")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "a.yaml").write_text(secret("a", value))
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "a.yaml").symlink_to("..data/a.yaml")
    files = FilesProvider(tmp_path, recorder)
    task = asyncio.create_task(files.run())
    try:
        await recorder.until(lambda s: data_of(s, "a") == {"k": "one"})
        await asyncio.sleep(0.1)
        (tmp_path / "..data_tmp").symlink_to("..v2")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        await recorder.until(lambda s: data_of(s, "a") == {"k": "two"})
    finally:
        files.stop()
        await asyncio.wait_for(task, 5)


async def test_directory_removed_and_created_again(tmp_path: Path, recorder: Recorder) -> None:
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "a.yaml").write_text(secret("a"))
    files = FilesProvider(root, recorder)
    task = asyncio.create_task(files.run())
    try:
        await recorder.until(lambda s: key("a") in s.objects)
        shutil.rmtree(root)
        await recorder.until(lambda s: not s.objects)
        root.mkdir()
        (root / "b.yaml").write_text(secret("b"))
        await recorder.until(lambda s: key("b") in s.objects, within=3 * RETRY_S)
        await asyncio.sleep(0.1)
        (root / "c.yaml").write_text(secret("c"))  # the new directory is watched, not just polled
        await recorder.until(lambda s: key("c") in s.objects)
    finally:
        files.stop()
        await asyncio.wait_for(task, 5)


class FailingOnce(Recorder):
    async def __call__(self, state: ProviderState) -> None:
        await super().__call__(state)
        if len(self.states) == 2:
            raise RuntimeError("consumer bug")


async def test_failing_callback_does_not_stop_the_watcher(tmp_path: Path) -> None:
    recorder = FailingOnce()
    files = FilesProvider(tmp_path, recorder)
    task = asyncio.create_task(files.run())
    try:
        await recorder.until(lambda s: s.generation == 1)
        await asyncio.sleep(0.1)
        (tmp_path / "a.yaml").write_text(secret("a"))
        await recorder.until(lambda s: s.generation == 2)
        (tmp_path / "b.yaml").write_text(secret("b"))
        await recorder.until(lambda s: s.generation == 3)
        assert [sorted(k.name for k in s.objects) for s in recorder.states] == [[], ["a"], ["a", "b"]]
        assert not task.done()
    finally:
        files.stop()
        await asyncio.wait_for(task, 5)


async def test_start_then_stop_without_changes(tmp_path: Path, recorder: Recorder) -> None:
    files = FilesProvider(tmp_path, recorder)
    state = await files.start()
    assert (state.generation, dict(state.objects)) == (1, {})
    assert await files.start() is state  # idempotent: no second initial delivery
    files.stop()
    await asyncio.wait_for(files.run(), 5)
    assert len(recorder.states) == 1
