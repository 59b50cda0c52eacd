"""The Kubernetes API as a stream of whole-cluster states, the same shape the files provider delivers.

One task per kind runs the list-then-watch loop that client-go's reflector runs: list once, watch from the
list's resourceVersion, and after a dropped connection resume from the last resourceVersion seen (events
or bookmarks), so nothing is lost and nothing is listed again. Only when the server answers 410 Gone (the
resourceVersion was compacted away) is the kind listed again, and the new list is diffed against what is
held, so a relist that finds nothing new costs no rebuild. Errors back off exponentially, bounded; a kind
the server does not serve (a Gateway API CRD not installed) is reported as a problem and retried slowly.

Every change lands in one merged map; a short hold-off coalesces bursts into one `on_change` call, and
events that change nothing the translator can see (a write that only moved resourceVersion or
managedFields) call nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import structlog

from stackway.providers.files.loader import FileProblem
from stackway.providers.files.watcher import OnChange, ProviderState
from stackway.providers.kubernetes.client import DEFAULT_KINDS, JSON, Kind, KubeApi, KubeApiError
from stackway.resources.raw import ObjectKey, ObjectShapeError, RawObject, key_of

log = structlog.get_logger("stackway.providers.kubernetes")

#: A storm of events that never pauses for the hold-off is still delivered at least this often.
MAX_HOLD_S = 1.0
#: After this many failures in a row a kind's trouble shows as a problem, not only in the log.
FAILURES_BEFORE_PROBLEM = 3
#: Answers that will not go away by retrying soon: the kind is not served, or we may not read it.
_PERSISTENT = frozenset({401, 403, 404})


def comparable(body: Mapping[str, Any]) -> JSON:
    """The object as far as a rebuild cares: without resourceVersion (every write moves it)."""
    meta = body.get("metadata")
    if not isinstance(meta, Mapping) or "resourceVersion" not in meta:
        return dict(body)
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}


def _trimmed(body: JSON) -> JSON:
    """Drop managedFields: large, rewritten by every writer, and read by nothing in stackway."""
    meta = body.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        body = {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return body


class Backoff:
    """Exponential delays with full jitter, capped, so that many replicas do not retry in step."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return random.uniform(0.5, 1.0) * min(self.maximum, self.initial * 2.0 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0


class KubernetesProvider:
    """Lists and watches `kinds` and calls `on_change` with each new merged state.

    `namespace` limits namespaced kinds to one namespace (cluster-scoped kinds are read cluster-wide);
    `kubeconfig` None means in-cluster credentials in a pod, else the default kubeconfig. Pass `api` to
    share a client (tests, or the status writer using the same connection).
    """

    def __init__(
        self,
        on_change: OnChange,
        kinds: Iterable[Kind] = DEFAULT_KINDS,
        namespace: str | None = None,
        kubeconfig: str | Path | None = None,
        *,
        context: str | None = None,
        api: KubeApi | None = None,
        debounce: float = 0.05,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 30.0,
        missing_retry_s: float = 30.0,
        watch_timeout_s: int = 300,
    ) -> None:
        self.kinds = tuple(kinds)
        self.namespace = namespace
        self._kubeconfig = kubeconfig
        self._context = context
        self._api = api
        self._own_api = api is None
        self._on_change = on_change
        self._debounce = debounce
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._missing_retry_s = missing_retry_s
        self._watch_timeout_s = watch_timeout_s
        self._objects: dict[ObjectKey, RawObject] = {}
        self._by_kind: dict[Kind, set[ObjectKey]] = {k: set() for k in self.kinds}
        self._problems: dict[Kind, FileProblem] = {}
        self._synced = {k: asyncio.Event() for k in self.kinds}
        self._changes = 0  # real changes so far; compared with what the last delivery saw
        self._delivered_changes = -1
        self._delivered_problems: tuple[FileProblem, ...] = ()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._state = ProviderState(MappingProxyType({}), (), 0)
        self._deliver_lock = asyncio.Lock()
        #: The resourceVersion each kind's watch resumes from ("" before the first list); for tests/metrics.
        self.resource_versions: dict[Kind, str] = dict.fromkeys(self.kinds, "")

    def snapshot(self) -> ProviderState:
        """The last state delivered (generation 0, empty, before the first)."""
        return self._state

    async def start(self, sync_timeout_s: float | None = 60.0) -> ProviderState:
        """Start every kind's loop, wait until each has listed once (or is known to be missing), and
        deliver the first state, so that nothing is served from a half-filled cache. After
        `sync_timeout_s` the state goes out anyway, with the kinds still failing reported as problems."""
        if not self._tasks:
            if self._api is None:
                self._api = await KubeApi.connect(self._kubeconfig, self._context)
            self._tasks = [asyncio.create_task(self._kind_loop(k), name=f"watch {k}") for k in self.kinds]
            waits = [e.wait() for e in self._synced.values()]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), sync_timeout_s)
            await self._deliver(force=True)
        return self._state

    async def run(self) -> None:
        """Deliver coalesced changes until `stop()`; starts first if `start()` was not called."""
        try:
            await self.start()
            while not self._stop.is_set():
                await self._wait_for_burst()
                if not self._stop.is_set():
                    await self._deliver()
        finally:
            await self.aclose()

    def stop(self) -> None:
        """Ask `run()` to return; it does so promptly, closing its watches."""
        self._stop.set()
        self._wake.set()

    async def aclose(self) -> None:
        """Cancel the watches and close the client if we made it; for callers that never ran `run()`."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_api and self._api is not None:
            await self._api.close()
            self._api = None

    # ------------------------------------------------------------------------------------- delivering

    async def _wait_for_burst(self) -> None:
        """Return once a change has been followed by `debounce` of quiet, or MAX_HOLD_S after it."""
        await self._wake.wait()
        first = time.monotonic()
        while not self._stop.is_set():
            self._wake.clear()
            left = MAX_HOLD_S - (time.monotonic() - first)
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), min(self._debounce, left))
            except TimeoutError:
                return

    async def _deliver(self, *, force: bool = False) -> None:
        async with self._deliver_lock:
            self._wake.clear()
            problems = tuple(self._problems[k] for k in self.kinds if k in self._problems)
            if not force and self._changes == self._delivered_changes and problems == self._delivered_problems:
                return
            self._delivered_changes, self._delivered_problems = self._changes, problems
            state = ProviderState(MappingProxyType(dict(self._objects)), problems, self._state.generation + 1)
            self._state = state
            try:
                await self._on_change(state)
            except Exception as exc:
                log.exception("on_change failed", generation=state.generation, error=str(exc))

    def _changed(self) -> None:
        self._changes += 1
        self._wake.set()

    def _set_problem(self, kind: Kind, message: str | None) -> None:
        old = self._problems.get(kind)
        if message is None:
            if old is not None:
                del self._problems[kind]
                self._wake.set()
            return
        problem = FileProblem(kind.path(self.namespace), None, str(kind), None, message)
        if old != problem:
            self._problems[kind] = problem
            self._wake.set()

    # ------------------------------------------------------------------------------------- the cache

    def _upsert(self, kind: Kind, body: JSON) -> None:
        body.setdefault("apiVersion", kind.api_version)
        body.setdefault("kind", kind.kind)
        try:
            key = key_of(body)
        except ObjectShapeError as exc:
            log.warning("ignoring an object that cannot be keyed", kind=str(kind), error=str(exc))
            return
        body = _trimmed(body)
        old = self._objects.get(key)
        self._objects[key] = RawObject(key, body)
        self._by_kind[kind].add(key)
        if old is None or comparable(old.body) != comparable(body):
            self._changed()

    def _remove(self, kind: Kind, body: JSON) -> None:
        body.setdefault("apiVersion", kind.api_version)
        body.setdefault("kind", kind.kind)
        try:
            key = key_of(body)
        except ObjectShapeError:
            return
        self._by_kind[kind].discard(key)
        if self._objects.pop(key, None) is not None:
            self._changed()

    def _replace(self, kind: Kind, items: list[JSON]) -> None:
        """A fresh list of `kind`: upsert what it holds, drop what it no longer does."""
        before = set(self._by_kind[kind])
        for item in items:
            self._upsert(kind, item)
        listed = {key_of(i) for i in items if _keyable(i)}
        for key in before - listed:
            self._by_kind[kind].discard(key)
            if self._objects.pop(key, None) is not None:
                self._changed()

    # --------------------------------------------------------------------------------- one kind's loop

    async def _kind_loop(self, kind: Kind) -> None:
        """List, then watch and resume for as long as the provider runs. Never raises for API trouble.

        `self.resource_versions[kind]` is where a watch resumes from; it moves with every event and
        bookmark, also on a connection that then breaks, and "" means the kind must be listed."""
        assert self._api is not None
        api = self._api
        backoff = Backoff(*self._backoff)
        while not self._stop.is_set():
            try:
                if not self.resource_versions[kind]:
                    items, listed_at = await api.list(kind, self._scope(kind))
                    self._replace(kind, items)
                    self.resource_versions[kind] = listed_at
                    self._synced[kind].set()
                    self._set_problem(kind, None)
                    backoff.reset()
                    log.debug("listed", kind=str(kind), objects=len(items), resource_version=listed_at)
                await self._watch(api, kind, backoff)
            except asyncio.CancelledError:
                raise
            except KubeApiError as exc:
                if exc.status == 410:  # Gone: what we hold is too old to resume from; list again
                    log.info("resourceVersion expired; listing again", kind=str(kind))
                    self.resource_versions[kind] = ""
                    continue
                if exc.status in _PERSISTENT:
                    self.resource_versions[kind] = ""  # a kind that went away (CRD deleted) is listed afresh
                await self._failed(kind, exc, backoff, persistent=exc.status in _PERSISTENT)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                await self._failed(kind, exc, backoff, persistent=False)

    def _scope(self, kind: Kind) -> str | None:
        return self.namespace if kind.namespaced else None

    async def _watch(self, api: KubeApi, kind: Kind, backoff: Backoff) -> None:
        """Apply one watch connection's events, moving the kind's resourceVersion with each."""
        started = time.monotonic()
        received = False
        timeout_s = int(self._watch_timeout_s * random.uniform(1.0, 1.25))  # spread reconnects out
        stream = api.watch(kind, self._scope(kind), self.resource_versions[kind], timeout_s=timeout_s)
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                kind_of_event = event.get("type")
                obj = event.get("object")
                if not isinstance(obj, dict):
                    continue
                if kind_of_event == "ERROR":
                    raise KubeApiError.from_status(obj)
                if kind_of_event in ("ADDED", "MODIFIED"):
                    self._upsert(kind, obj)
                elif kind_of_event == "DELETED":
                    self._remove(kind, obj)
                elif kind_of_event != "BOOKMARK":
                    continue
                if not received:  # the connection works: whatever failed before is over
                    received = True
                    backoff.reset()
                    self._set_problem(kind, None)
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self.resource_versions[kind] = str(version)
                if self._stop.is_set():
                    break
        if not received and time.monotonic() - started < 1.0 and not self._stop.is_set():
            # Ended at once with nothing in it: not a timeout but a server or proxy closing on us.
            await asyncio.sleep(backoff.next())

    async def _failed(self, kind: Kind, exc: Exception, backoff: Backoff, *, persistent: bool) -> None:
        """Log, report as a problem once it is persistent or keeps happening, and wait before retrying."""
        if persistent:
            status = exc.status if isinstance(exc, KubeApiError) else 0
            message = (
                f"{kind} is not served by the API server (is its CustomResourceDefinition installed?)"
                if status == 404
                else f"not allowed to list {kind}: {exc}"
            )
            self._drop_kind(kind)
            self._set_problem(kind, f"{message}; retrying every {self._missing_retry_s:g}s")
            self._synced[kind].set()  # nothing to wait for: serving must not hang on an absent CRD
            log.warning("kind unavailable", kind=str(kind), error=str(exc))
            delay = self._missing_retry_s
        else:
            delay = backoff.next()
            log.warning(
                "API request failed; retrying",
                kind=str(kind),
                error=str(exc) or type(exc).__name__,
                retry_in_s=round(delay, 2),
            )
            if backoff.failures >= FAILURES_BEFORE_PROBLEM:
                self._set_problem(
                    kind, f"cannot read {kind} from the API server: {str(exc).strip() or type(exc).__name__}"
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    def _drop_kind(self, kind: Kind) -> None:
        for key in self._by_kind[kind]:
            if self._objects.pop(key, None) is not None:
                self._changed()
        self._by_kind[kind].clear()


def _keyable(body: JSON) -> bool:
    try:
        key_of(body)
    except ObjectShapeError:
        return False
    return True
