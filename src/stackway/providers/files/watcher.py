"""A watched directory as a stream of whole-directory states.

File events only say *that* something may have changed; what changed is decided by comparing each file's
stat and bytes with what was read last time. That makes the watcher indifferent to how writers and
platforms report changes: editors that write a `.tmp` file and rename it, a deleted directory, a missed or
duplicated event, or a Kubernetes ConfigMap mount (its files are symlinks into a hidden `..data` directory
that is swapped atomically, so the only events are on hidden paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

import structlog
import watchfiles

from stackway.providers.files.identity import GenerationTracker
from stackway.providers.files.loader import FileProblem, FileResult, manifest_files, merge, parse_file, read_bytes
from stackway.resources.raw import ObjectKey, RawObject

log = structlog.get_logger("stackway.providers.files")

#: A storm of writes that never pauses for `debounce` is still delivered at least this often.
MAX_HOLD_S = 1.0
#: How often to look for the directory again while it does not exist.
RETRY_S = 1.0
#: How often to compare stats even without events; costs one stat per file.
RESCAN_S = 2.0


@dataclass(frozen=True)
class ProviderState:
    """Everything the directory declares right now. `generation` counts delivered states (1 is the first)."""

    objects: Mapping[ObjectKey, RawObject]
    problems: tuple[FileProblem, ...]
    generation: int
    #: When the provider knows it: the keys whose object differs from `base`, the objects of the state it
    #: delivered before, so that a consumer which saw `base` need not compare every object to find them.
    changed: frozenset[ObjectKey] | None = field(default=None, compare=False)
    base: Mapping[ObjectKey, RawObject] | None = field(default=None, compare=False, repr=False)


OnChange = Callable[[ProviderState], Awaitable[None]]
_Stat = tuple[int, int, int, int]  # device, inode, size, mtime in ns: a cheap "did this file change" check
#: File systems stamp mtimes with a coarse clock; a stat this fresh may not show a write that follows it.
_RACY_NS = 100_000_000


@dataclass
class _File:
    stat: _Stat | None  # None: re-read next time, whatever the stat says
    digest: str
    result: FileResult
    good: tuple[RawObject, ...]  # objects from the last time the file parsed; served while it does not


class FilesProvider:
    """Loads `root`, then re-reads only what changes and calls `on_change` with each new state.

    Rules that users rely on: a deleted file takes its objects with it; a file that stops parsing keeps
    serving the objects last read from it while its problem is reported; nothing in the files can stop
    the watcher; an effectively unchanged directory (a file saved with the same bytes) calls nothing.
    """

    def __init__(
        self,
        root: Path | str,
        on_change: OnChange,
        debounce: float = 0.05,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.root = Path(root)
        self._on_change = on_change
        self._debounce = debounce
        self._files: dict[str, _File] = {}
        self._tracker = GenerationTracker(clock)
        self._state = ProviderState(MappingProxyType({}), (), 0)
        #: The merged objects as read (before stamping), and which file holds each (None: some object is in
        #: more than one place, so every change merges all files again).
        self._merged: dict[ObjectKey, RawObject] = {}
        self._objects: dict[ObjectKey, RawObject] = {}  # what the last state delivered holds (a plain dict copies fast)
        self._owners: dict[ObjectKey, str] | None = None
        self._stop = asyncio.Event()
        self._started = False
        self._lock = asyncio.Lock()

    def snapshot(self) -> ProviderState:
        """The last state delivered (generation 0, empty, before the first load)."""
        return self._state

    async def start(self) -> ProviderState:
        """Load the whole directory and deliver the first state, so callers can serve before watching."""
        if not self._started:
            self._started = True
            await self.refresh(force=True)
        return self._state

    async def run(self) -> None:
        """Watch until `stop()`; loads first if `start()` was not called. Never raises for file trouble.

        If the directory itself goes away (or is replaced, as by `rm -rf dir && cp -r new dir`), its objects
        go with it and watching resumes once a directory is there again.
        """
        await self.start()
        while not self._stop.is_set():
            if self._root_id() is not None:
                try:
                    await self._watch()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the directory vanished while the watch was being set up, ...
                    log.warning("watching failed; retrying", directory=str(self.root), error=str(exc))
                else:
                    continue  # the directory was replaced: watch the new one right away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RETRY_S)
            await self.refresh()

    def stop(self) -> None:
        """Ask `run()` to return; it does so within one debounce step."""
        self._stop.set()

    def _root_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.root)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

    async def _watch(self) -> None:
        """Refresh on every burst of events, and every RESCAN_S regardless: events can be lost (a write
        between the last read and the watch being set up, an overflowing kernel queue), a stat pass is not."""
        watching = self._root_id()
        step_ms = max(1, int(self._debounce * 1000))
        async for _changes in watchfiles.awatch(
            self.root,
            watch_filter=None,  # hidden paths matter too: see the module docstring
            debounce=max(step_ms, int(MAX_HOLD_S * 1000)),
            step=step_ms,
            stop_event=self._stop,
            rust_timeout=int(RESCAN_S * 1000),
            yield_on_timeout=True,
            recursive=True,
            ignore_permission_denied=True,
        ):
            await self.refresh()
            if self._root_id() != watching:
                return

    async def refresh(self, *, force: bool = False) -> bool:
        """Re-check the directory now and deliver a state if anything effectively changed (or if forced).

        Reading and parsing run in a worker thread so that a large directory never stalls the event loop.
        """
        async with self._lock:
            try:
                state = await asyncio.to_thread(self._rescan, force)
            except Exception as exc:  # a bug of ours; the last state keeps serving
                log.exception("reading the directory failed", directory=str(self.root), error=str(exc))
                return False
            if state is None:
                return False
            self._state = state
            try:
                await self._on_change(state)
            except Exception as exc:
                log.exception("on_change failed", generation=state.generation, error=str(exc))
            return True

    def _rescan(self, force: bool) -> ProviderState | None:
        changes: dict[str, _File | None] = {}  # files that changed → what they were (None: new)
        present: set[str] = set()
        for relative in manifest_files(self.root) if self.root.is_dir() else ():
            present.add(relative)
            before = self._files.get(relative)
            if self._check(relative):
                changes[relative] = before
        for relative in [r for r in self._files if r not in present]:
            changes[relative] = self._files.pop(relative)
        if not changes and not force:
            return None
        touched = None if force else self._merge_changes(changes)
        previous = self._state
        if touched is None:
            merged = merge((r, f.good, f.result.problems) for r, f in self._files.items())
            self._merged = dict(merged.objects)
            self._owners = _owners(self._files)
            objects = self._tracker.stamp_all(merged.objects.values())
            problems = merged.problems
            if not force and objects == dict(previous.objects) and problems == previous.problems:
                return None
        else:
            objects = self._objects.copy()
            for key in touched:
                raw = self._merged.get(key)
                if raw is None:
                    objects.pop(key, None)
                    self._tracker.forget(key)
                else:
                    objects[key] = self._tracker.stamp(raw)
            problems = tuple(
                sorted(
                    (p for f in sorted(self._files) for p in self._files[f].result.problems),
                    key=lambda p: (p.file, p.line or 0),
                )
            )
            changed = frozenset(k for k in touched if objects.get(k) is not previous.objects.get(k))
            if problems == previous.problems and all(objects.get(k) == previous.objects.get(k) for k in changed):
                return None
            self._objects = objects
            return ProviderState(
                MappingProxyType(objects), problems, previous.generation + 1, changed, previous.objects
            )
        self._objects = objects
        return ProviderState(MappingProxyType(objects), problems, previous.generation + 1)

    def _merge_changes(self, changes: Mapping[str, _File | None]) -> set[ObjectKey] | None:
        """Fold changed files into the merged objects; returns the keys whose object may have changed, or
        None when only a full merge gets it right (an object in two places: which one wins, and the
        problems that says so, depend on every file holding it)."""
        owners = self._owners
        if owners is None:
            return None
        removed = {obj.key for old in changes.values() if old is not None for obj in old.good}
        added: dict[ObjectKey, tuple[str, RawObject]] = {}
        for relative in changes:
            now = self._files.get(relative)
            for obj in now.good if now is not None else ():
                owner = owners.get(obj.key)
                if obj.key in added or (owner is not None and owner != relative and owner not in changes):
                    return None
                added[obj.key] = (relative, obj)
        for key in removed - added.keys():
            del self._merged[key], owners[key]
        for key, (relative, obj) in added.items():
            self._merged[key] = obj
            owners[key] = relative
        return removed | added.keys()

    def _check(self, relative: str) -> bool:
        """Re-read one file if its stat changed; True if what it contributes changed."""
        full = self.root / relative
        try:
            st = os.stat(full)
        except OSError:
            return self._files.pop(relative, None) is not None  # gone between listing and stat
        current: _Stat | None = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        known = self._files.get(relative)
        if known is not None and known.stat == current:
            return False
        if time.time_ns() - st.st_mtime_ns < _RACY_NS:
            # Modified within a timestamp tick or so: a write after our read might leave size and mtime as
            # they are. Do not trust this stat; the digest still spares a callback when nothing changed.
            current = None
        name, data, failed = read_bytes(relative, self.root)
        # A file that could not be read gets a digest no content has, so it never passes for unchanged.
        digest = hashlib.sha256(data).hexdigest() if failed is None else f"unread: {failed.problems[0].message}"
        if known is not None and known.digest == digest:
            known.stat = current  # same bytes written again: not even parsed
            return False
        result = failed if failed is not None else parse_file(name, data)
        good = result.objects if result.parse_ok else (known.good if known else ())
        self._files[relative] = _File(current, digest, result, good)
        if not result.parse_ok:
            log.warning("file does not parse; serving its last good objects", file=relative, kept=len(good))
        return True


def _owners(files: Mapping[str, _File]) -> dict[ObjectKey, str] | None:
    """Which file holds each object, or None if any object is held twice."""
    owners: dict[ObjectKey, str] = {}
    for relative, file in files.items():
        for obj in file.good:
            if obj.key in owners:
                return None
            owners[obj.key] = relative
    return owners
