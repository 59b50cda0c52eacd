"""Writing the computed statuses back to the Kubernetes API: only real changes, at a bounded rate.

`update()` is called after every translation and only records what each object's status should be; the
workers of `run()` write it through the `/status` subresource. The design answers the ways a status
writer hurts a cluster or lies to its users:

- *Write storms.* One edit can change a thousand routes' statuses. Keys wait in one ordered queue (a
  key queued twice is queued once, and a worker reads the newest desired status when it gets to it, so
  later changes supersede queued ones) and every request takes a token from one bucket, so the API
  server sees at most `burst` requests at once and then one per `min_interval_s`.
- *Needless writes.* A key is queued only when its desired status differs from the live one. The live
  object comes from the provider's watch cache when given (`live=`): it is what every replica already
  holds, so deciding costs no request, and a write is then one PUT with the cached resourceVersion.
  Without a cache, or when the cache has not caught up with our own last write yet, the writer
  remembers what it wrote and reads the object (GET) only before a write. Comparisons carry
  lastTransitionTime over from the live conditions whose status did not flip, so a fail-over to a replica
  that stamped its own times does not rewrite every object.
- *Going backwards.* Nothing is written when the live object is at a newer generation than the one
  translated (the next translation brings the right status) or when the live status already reports a
  newer observedGeneration (another replica, leader a moment ago, saw more than we did).
- *Lost updates.* Each PUT carries the resourceVersion read; a 409 Conflict re-reads and re-merges, with
  bounded, jittered backoff. Objects deleted meanwhile (404) are dropped.
- *Clobbering others.* Routes and policies are shared: only the `status.parents[]` (`ancestors[]`)
  entries whose controllerName is ours are replaced; other controllers' entries are kept as they are,
  and ours are pruned when the route stops naming our Gateways. Gateways and GatewayClasses are owned by
  one controller: they are written only when their class is ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from stackway.providers.kubernetes.client import DEFAULT_KINDS, JSON, Kind, KubeApi, KubeApiError
from stackway.resources.raw import ObjectKey, RawObject

log = structlog.get_logger("stackway.providers.kubernetes.status")

WRITES = PromCounter(
    "stackway_status_writes_total",
    "Queued status updates by outcome: written, unchanged, stale, not_ours, deleted, rejected, error.",
    ["result"],
)
CONFLICTS = PromCounter("stackway_status_conflicts_total", "Status writes answered 409 Conflict (then re-read).")
QUEUE_DEPTH = Gauge("stackway_status_queue_depth", "Objects whose status waits to be compared and written.")

_GW = "gateway.networking.k8s.io"
#: Kinds whose status is written, by (group, kind); the version is the live object's when known.
STATUS_KINDS: dict[tuple[str, str], Kind] = {
    **{(k.group, k.kind): k for k in DEFAULT_KINDS if k.kind in ("GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute")},
    (_GW, "TLSRoute"): Kind(_GW, "v1", "TLSRoute", "tlsroutes", namespaced=True),
    (_GW, "BackendTLSPolicy"): Kind(_GW, "v1", "BackendTLSPolicy", "backendtlspolicies", namespaced=True),
    ("networking.k8s.io", "Ingress"): Kind("networking.k8s.io", "v1", "Ingress", "ingresses", namespaced=True),
}
#: Status lists whose entries each belong to one controller (routes' parents, policies' ancestors).
SHARED_LISTS = ("parents", "ancestors")
_OWNED = frozenset({(_GW, "Gateway"), (_GW, "GatewayClass"), ("networking.k8s.io", "Ingress")})
#: 4xx answers that retrying the same body cannot fix (the status fails validation, or we may not write).
_REJECTED = frozenset({400, 401, 403, 405, 415, 422})
_TRANSIENT = (KubeApiError, aiohttp.ClientError, TimeoutError, OSError, ValueError)


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = body.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _rv(body: Mapping[str, Any]) -> str:
    return str(_meta(body).get("resourceVersion") or "")


def _identity(item: Any) -> Any:
    """What an entry of a status list is matched by across versions (condition type, listener name, ref)."""
    if isinstance(item, Mapping):
        for name in ("type", "name"):
            if name in item:
                return (name, item[name])
        for ref in ("parentRef", "ancestorRef"):
            if isinstance(item.get(ref), Mapping):
                return (ref, tuple(sorted(item[ref].items())), item.get("controllerName"))
    return None


def carry_transition_times(live: Any, desired: Any) -> Any:
    """A copy of `desired` whose conditions keep the live lastTransitionTime while their status is the same:
    Kubernetes moves it only when a condition flips, and a time stamped by another replica is as good."""
    if isinstance(desired, Mapping):
        out = {
            k: carry_transition_times(live.get(k) if isinstance(live, Mapping) else None, v) for k, v in desired.items()
        }
        if (
            "lastTransitionTime" in out
            and isinstance(live, Mapping)
            and live.get("status") == out.get("status")
            and live.get("lastTransitionTime")
        ):
            out["lastTransitionTime"] = live["lastTransitionTime"]
        return out
    if isinstance(desired, list):
        index = {_identity(x): x for x in live if _identity(x) is not None} if isinstance(live, list) else {}
        return [carry_transition_times(index.get(_identity(x)), x) for x in desired]
    return desired


def observed_generation(status: Any) -> int:
    """The newest observedGeneration anywhere in a status (0 when none)."""
    if isinstance(status, Mapping):
        own = status.get("observedGeneration")
        best = own if isinstance(own, int) else 0
        return max([best, *(observed_generation(v) for v in status.values())])
    if isinstance(status, list):
        return max((observed_generation(v) for v in status), default=0)
    return 0


@dataclass(frozen=True)
class Plan:
    """What to do with one object: `action` is write, unchanged, stale or not_ours; `status` the merged one."""

    action: str
    status: JSON | None = None


@dataclass(frozen=True)
class _Confirmed:
    """What we last made the live status agree with: the desired status, and the resourceVersions before
    and after (equal when nothing had to be written)."""

    desired: JSON
    rv_before: str
    rv_after: str


class TokenBucket:
    """`burst` requests at once, then one per `interval_s`: the API server's view of our write rate."""

    def __init__(self, interval_s: float, burst: int) -> None:
        self.interval_s = max(interval_s, 1e-6)
        self.burst = max(burst, 1)
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        async with self._lock:  # first come, first served: no worker starves
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) / self.interval_s)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) * self.interval_s)


class StatusWriter:
    """Writes `update()`'s statuses while `run()` runs (only on the leader); see the module docstring."""

    def __init__(
        self,
        api: KubeApi,
        controller_name: str,
        *,
        min_interval_s: float = 0.02,
        burst: int = 100,
        workers: int = 4,
        max_conflict_retries: int = 5,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 10.0,
        kinds: Mapping[tuple[str, str], Kind] = STATUS_KINDS,
    ) -> None:
        self.api = api
        self.controller_name = controller_name
        self.kinds = dict(kinds)
        self.bucket = TokenBucket(min_interval_s, burst)
        self.workers = workers
        self.max_conflict_retries = max_conflict_retries
        self.retry = (retry_initial_s, retry_max_s)
        #: Outcomes (as WRITES) plus `conflicts`, `requests`: exact counts for this writer, for tests and logs.
        self.stats: Counter[str] = Counter()
        self._desired: dict[ObjectKey, JSON] = {}
        self._generations: dict[ObjectKey, int] = {}
        self._live: Mapping[ObjectKey, RawObject] = {}
        self._our_classes: set[str] = set()
        self._confirmed: dict[ObjectKey, _Confirmed] = {}
        self._checked: dict[ObjectKey, tuple[JSON, RawObject | None]] = {}
        self._rejected: dict[ObjectKey, JSON] = {}
        self._failures: Counter[ObjectKey] = Counter()
        self._queue: dict[ObjectKey, float] = {}  # key → not before (monotonic); insertion-ordered
        self._inflight: set[ObjectKey] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------ desired state

    def update(
        self,
        statuses: Mapping[ObjectKey, JSON],
        generations: Mapping[ObjectKey, int],
        live: Mapping[ObjectKey, RawObject] | None = None,
    ) -> None:
        """Record the statuses of one translation and queue the objects whose live status differs. Cheap and
        synchronous: no request is made here. `live` is the provider's objects (the watch cache) of this state;
        without it, objects are read before being written."""
        self._desired = {k: v for k, v in statuses.items() if (k.group, k.kind) in self.kinds}
        self._generations = dict(generations)
        self._our_classes = {k.name for k in self._desired if (k.group, k.kind) == (_GW, "GatewayClass")}
        self._live = live if live is not None else {}
        for key, desired in self._desired.items():
            raw = self._live.get(key)
            checked = self._checked.get(key)
            if checked is not None and checked[0] is desired and checked[1] is raw:
                continue  # the same objects as last time, found in agreement then: skip the comparison
            if self._needs_write(key):
                self._enqueue(key)
            else:
                self._checked[key] = (desired, raw)
        for key in self._prunable():
            self._enqueue(key)

    def resync(self) -> None:
        """Queue every known object for a comparison with the live one (done when leadership starts: while
        we were not writing, another replica or a person may have changed anything)."""
        self._checked.clear()
        for key in [*self._desired, *self._prunable()]:
            self._enqueue(key)

    def _target(self, key: ObjectKey) -> JSON | None:
        """The status to make live; for a shared kind no longer ours, one without our entries."""
        desired = self._desired.get(key)
        if desired is None and (key.group, key.kind) not in _OWNED:
            return {}  # merged with the live status this removes our entries and keeps everyone else's
        return desired

    def _prunable(self) -> Iterable[ObjectKey]:
        """Shared objects not in the statuses any more whose live status still carries entries of ours."""
        candidates = set(self._confirmed)
        candidates.update(k for k in self._live if (k.group, k.kind) in self.kinds)
        for key in candidates:
            if key in self._desired or (key.group, key.kind) in _OWNED:
                continue
            raw = self._live.get(key)
            if raw is not None:
                if any(self._ours(e) for f in SHARED_LISTS for e in (raw.body.get("status") or {}).get(f) or []):
                    yield key
            elif self._confirmed[key].desired:
                yield key

    def _needs_write(self, key: ObjectKey) -> bool:
        desired = self._target(key)
        if desired is None or self._rejected.get(key) == desired:
            return False
        confirmed = self._confirmed.get(key)
        raw = self._live.get(key)
        if raw is not None and not self._lags(raw, confirmed):
            return self.plan(key, desired, raw.body).action == "write"
        return confirmed is None or confirmed.desired != desired  # no cache, or it lags behind our write

    @staticmethod
    def _lags(raw: RawObject, confirmed: _Confirmed | None) -> bool:
        """Whether the cached object is the one our last write replaced (its watch event is still coming)."""
        return (
            confirmed is not None and confirmed.rv_before != confirmed.rv_after and _rv(raw.body) == confirmed.rv_before
        )

    def _ours(self, entry: Any) -> bool:
        return isinstance(entry, Mapping) and entry.get("controllerName") == self.controller_name

    def plan(self, key: ObjectKey, desired: JSON, body: Mapping[str, Any]) -> Plan:
        """Compare `desired` with the live `body`: write (with the merged status), unchanged, stale, not_ours."""
        spec = body.get("spec") if isinstance(body.get("spec"), Mapping) else {}
        assert isinstance(spec, Mapping)
        if key.kind == "GatewayClass" and spec.get("controllerName") != self.controller_name:
            return Plan("not_ours")
        if key.kind == "Gateway" and key.group == _GW and spec.get("gatewayClassName") not in self._our_classes:
            return Plan("not_ours")
        live = body.get("status") if isinstance(body.get("status"), Mapping) else {}
        assert isinstance(live, Mapping)
        generation = _meta(body).get("generation")
        translated = self._generations.get(key)
        if isinstance(generation, int) and translated is not None and generation > translated:
            return Plan("stale")  # the spec moved on; the next translation brings its status
        if (key.group, key.kind) in _OWNED:
            live_ours: Any = live
            merged = carry_transition_times(live, desired)
        else:
            merged = {k: copy.deepcopy(v) for k, v in live.items()}
            live_ours = {}
            for name in SHARED_LISTS:
                entries = live.get(name) if isinstance(live.get(name), list) else []
                assert isinstance(entries, list)
                mine = [e for e in entries if self._ours(e)]
                if name not in desired and not mine:
                    continue
                live_ours[name] = mine
                ours = carry_transition_times(mine, desired.get(name) or [])
                merged[name] = [copy.deepcopy(e) for e in entries if not self._ours(e)] + ours
        if desired and observed_generation(live_ours) > observed_generation(desired):
            return Plan("stale")  # never move observedGeneration backwards
        return Plan("unchanged") if merged == dict(live) else Plan("write", merged)

    # ------------------------------------------------------------------------------------- queue

    def _enqueue(self, key: ObjectKey, delay: float = 0.0) -> None:
        due = time.monotonic() + delay
        self._queue[key] = min(due, self._queue.get(key, due)) if delay == 0.0 else due
        self._idle.clear()
        self._wake.set()
        QUEUE_DEPTH.set(len(self._queue))

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    async def _next(self) -> ObjectKey:
        """The first queued key that is due and not being written by another worker."""
        while True:
            now = time.monotonic()
            soonest: float | None = None
            for key, due in self._queue.items():
                if key in self._inflight:
                    continue
                if due <= now:
                    del self._queue[key]
                    QUEUE_DEPTH.set(len(self._queue))
                    self._inflight.add(key)
                    return key
                soonest = due if soonest is None else min(soonest, due)
            self._wake.clear()
            timeout = None if soonest is None else soonest - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is queued or being written (for tests and for a clean hand-over)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._idle.is_set()

    # ------------------------------------------------------------------------------------ running

    def start(self) -> None:
        """Run in the background (leadership started); `stop()` ends it."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="status writer")

    async def run(self) -> None:
        """Write until `stop()`; everything known is compared with the live objects first."""
        self._stop.clear()
        self.resync()
        tasks = [asyncio.create_task(self._worker(), name=f"status writer {n}") for n in range(self.workers)]
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._inflight.clear()

    async def stop(self) -> None:
        """Stop writing now (leadership lost or shutting down); a write in flight is abandoned."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _worker(self) -> None:
        while True:
            key = await self._next()
            try:
                await self._write(key)
            except asyncio.CancelledError:
                self._enqueue(key)  # the next leader's resync covers it too; keep the queue honest
                raise
            except Exception as exc:  # API trouble, or a bug: neither may kill the worker; retried later
                expected = isinstance(exc, _TRANSIENT)
                log.warning("status write failed; will retry", object=str(key), error=str(exc), exc_info=not expected)
                self._result(key, "error")
                self._retry_later(key)
            finally:
                self._inflight.discard(key)
                if not self._queue and not self._inflight:
                    self._idle.set()

    def _result(self, key: ObjectKey, result: str) -> None:
        self.stats[result] += 1
        WRITES.labels(result).inc()
        if result != "error":
            self._failures.pop(key, None)

    def _retry_later(self, key: ObjectKey) -> None:
        self._failures[key] += 1
        initial, maximum = self.retry
        delay = random.uniform(0.5, 1.0) * min(maximum, initial * 2.0 ** self._failures[key])
        self._enqueue(key, delay)

    async def _request(self, method: str, path: str, body: Any = None) -> JSON:
        await self.bucket.take()
        self.stats["requests"] += 1
        return await self.api.request(method, path, body=body)

    def _path(self, key: ObjectKey, body: Mapping[str, Any] | None, subresource: str | None = None) -> str:
        kind = self.kinds[(key.group, key.kind)]
        api_version = str((body or {}).get("apiVersion") or "")
        if key.group and api_version.startswith(key.group + "/"):
            kind = Kind(kind.group, api_version.split("/", 1)[1], kind.kind, kind.plural, kind.namespaced)
        return kind.path(key.namespace if kind.namespaced else None, key.name, subresource)

    async def _write(self, key: ObjectKey) -> None:
        """Compare with the live object and write if needed; re-read and retry on 409."""
        raw = self._live.get(key)
        confirmed = self._confirmed.get(key)
        body: Mapping[str, Any] | None = None
        if raw is not None and not self._lags(raw, confirmed):
            body = raw.body  # the watch cache is at least as new as our last write: no read needed
        for attempt in range(self.max_conflict_retries + 1):
            desired = self._target(key)
            if desired is None:
                return  # no longer ours to write (and not a shared kind to prune)
            try:
                if body is None:
                    body = await self._request("GET", self._path(key, None))
                plan = self.plan(key, desired, body)
                if plan.action != "write":
                    if plan.action == "unchanged":
                        self._confirmed[key] = _Confirmed(desired, _rv(body), _rv(body))
                    self._result(key, plan.action)
                    return
                written = await self._request("PUT", self._path(key, body, "status"), {**body, "status": plan.status})
            except KubeApiError as exc:
                if exc.status == 404:
                    self._confirmed.pop(key, None)
                    self._result(key, "deleted")
                    return
                if exc.status == 409 and attempt < self.max_conflict_retries:
                    self.stats["conflicts"] += 1
                    CONFLICTS.inc()
                    initial, maximum = self.retry
                    await asyncio.sleep(random.uniform(0.5, 1.0) * min(maximum, initial * 2.0**attempt))
                    body = None  # re-read: someone wrote after the version we had
                    continue
                if exc.status in _REJECTED:
                    log.error("status rejected by the API server", object=str(key), error=str(exc))
                    self._rejected[key] = desired
                    self._result(key, "rejected")
                    return
                raise  # 5xx, 429, or conflicts that kept coming: the worker retries the key later
            self._confirmed[key] = _Confirmed(desired, _rv(body), _rv(written))
            self._rejected.pop(key, None)
            self._result(key, "written")
            return
