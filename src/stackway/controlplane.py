"""The control loop's heart: provider state → store → translate → xDS snapshot, keeping the last good one.

Providers call `update()` with every object they know; the result is published to the snapshot cache
only when it builds. A translation bug (a system error) keeps the previous snapshot serving and is
reported; user mistakes are already conditions by then and never stop a publish.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

import structlog

from stackway.diffs import replaced_keys
from stackway.ir.model import IR
from stackway.observability import metrics
from stackway.resources.core import SERVICE_NAME_LABEL
from stackway.resources.raw import ObjectKey, RawObject
from stackway.resources.store import Resources, ResourceStore, StoreProblem
from stackway.translate import Options, Problem, TranslateResult, refresh_endpoints, translate
from stackway.xds.build import BuildMemo, build_incremental
from stackway.xds.clusters import build_load_assignment
from stackway.xds.snapshot import ENDPOINT, Snapshot

log = structlog.get_logger("stackway.controlplane")

ENDPOINT_SLICE = ("discovery.k8s.io", "EndpointSlice")


class SourceProblem(Protocol):
    """A provider's problem that belongs to no object (e.g. a file that does not parse)."""

    @property
    def file(self) -> str: ...
    @property
    def line(self) -> int | None: ...
    @property
    def object(self) -> str | None: ...
    @property
    def field(self) -> str | None: ...
    @property
    def message(self) -> str: ...


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp_transition_times(old: Mapping[str, Any] | None, new: dict[str, Any], now: str) -> dict[str, Any]:
    """Fill each condition's lastTransitionTime: kept from `old` while its status is unchanged, else `now`.

    Kubernetes moves lastTransitionTime only when a condition's status flips; a message or reason change,
    or a mere re-translation, must not look like a transition.
    """
    _stamp_walk(old, new, now)
    return new


def _stamp_walk(o: Any, n: Any, now: str) -> None:
    # A module-level function, not a closure: a recursive closure is a reference cycle left for the
    # garbage collector on every call.
    if isinstance(n, dict):
        if "lastTransitionTime" in n:
            same = isinstance(o, dict) and o.get("status") == n.get("status") and o.get("lastTransitionTime")
            n["lastTransitionTime"] = o["lastTransitionTime"] if same else now
        for k, v in n.items():
            _stamp_walk(o.get(k) if isinstance(o, dict) else None, v, now)
    elif isinstance(n, list):
        index = {_identity(x): x for x in o} if isinstance(o, list) else {}
        for item in n:
            _stamp_walk(index.get(_identity(item)), item, now)


def _identity(item: Any) -> Any:
    if isinstance(item, dict):
        for k in ("type", "name"):
            if k in item:
                return (k, item[k])
        if "parentRef" in item:
            return ("parentRef", tuple(sorted(item["parentRef"].items())))
    return id(item)


@dataclass
class PublishResult:
    snapshot: Snapshot | None
    changed: bool
    error: str | None = None


@dataclass
class ControlPlane:
    options: Options = field(default_factory=Options)
    store: ResourceStore = field(default_factory=ResourceStore)
    resources: Resources = field(default_factory=Resources)
    snapshot: Snapshot = field(default_factory=Snapshot.empty)
    statuses: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    generations: dict[ObjectKey, int] = field(default_factory=dict)
    store_problems: list[StoreProblem] = field(default_factory=list)
    translate_problems: tuple[Problem, ...] = ()
    system_error: str | None = None
    source_problems: tuple[SourceProblem, ...] = ()
    _unstamped: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    _objects: dict[ObjectKey, RawObject] = field(default_factory=dict)
    _received: Mapping[ObjectKey, RawObject] | None = None  # the mapping the last update was given, as is
    _kinds: Counter[str] = field(default_factory=Counter)
    #: Keys changed by updates whose translation failed: their generations are refreshed on the next success.
    _unsettled: set[ObjectKey] = field(default_factory=set)
    _ir: IR | None = None
    #: The last successful translation and what its build kept, so the next ones redo only what changed.
    _translated: TranslateResult | None = None
    _built: BuildMemo | None = None

    def update(
        self,
        objects: Mapping[ObjectKey, RawObject],
        source_problems: Sequence[SourceProblem] = (),
        *,
        changed: Collection[ObjectKey] | None = None,
        base: Mapping[ObjectKey, RawObject] | None = None,
    ) -> PublishResult:
        """Translate and build from every object a provider knows; `source_problems` are the provider's own
        (a file that does not parse), reported beside the objects' problems.

        A provider that knows which keys differ from the objects it handed over before says so with
        `changed` and `base` (those objects); the hint is used if `base` is the very mapping the previous
        call received, and otherwise every object is compared."""
        started = time.perf_counter()
        self.source_problems = tuple(source_problems)
        if changed is not None and base is not None and base is self._received:
            changed = set(changed)
        else:
            changed = self._changed_keys(objects)
        self._received = objects
        previous = self._objects
        # A provider's mapping is copied (a dict or read-only proxy clones its table without rehashing).
        self._objects = objects.copy() if isinstance(objects, dict | MappingProxyType) else dict(objects)
        self._count_kinds(changed, previous, objects)
        resources, self.store_problems = self.store.update(objects, changed)
        self.resources = resources
        services: set[tuple[str, str]] | None = None  # set: only EndpointSlices changed, of these Services
        if (
            self._ir is not None
            and self.system_error is None
            and changed
            and all((k.group, k.kind) == ENDPOINT_SLICE for k in changed)
        ):
            services = {(k.namespace, n) for k in changed for n in _slice_services(k, previous, objects)}
        try:
            if services is not None:
                return self._endpoints_only(resources, services, started)
            result = translate(resources, self.options, self._translated)
            snapshot, built = build_incremental(result.ir, self._built)
        except Exception as exc:  # whatever went wrong, the last good config keeps serving
            # Not the user's mistake (those are conditions): a bug of ours. Say so loudly, change nothing.
            self.system_error = f"{type(exc).__name__}: {exc}"
            metrics.TRANSLATIONS.labels("error").inc()
            log.exception("translation failed; the last good config keeps serving", error=self.system_error)
            self._unsettled |= changed
            return PublishResult(None, False, self.system_error)
        touched = self._stamp_statuses(result.statuses) | changed | self._unsettled
        self._unsettled = set()
        generations = dict(self.generations)
        for key in touched:
            if key in self.statuses and key in objects:
                generations[key] = _generation(objects[key])
            else:
                generations.pop(key, None)
        self.generations = generations
        self.translate_problems = result.problems
        self._count_problems()
        self.system_error = None
        self._ir = result.ir
        self._translated, self._built = result, built
        return self._publish(snapshot, started, "full")

    def _publish(self, snapshot: Snapshot, started: float, kind: str) -> PublishResult:
        changed = snapshot.version != self.snapshot.version
        self.snapshot = snapshot
        metrics.TRANSLATE_SECONDS.observe(time.perf_counter() - started)
        metrics.TRANSLATIONS.labels("ok").inc()
        metrics.UPDATES.labels(kind).inc()
        return PublishResult(snapshot, changed)

    def _changed_keys(self, objects: Mapping[ObjectKey, RawObject]) -> set[ObjectKey]:
        """Keys added, removed or replaced since the last update (providers hand over unchanged objects as is)."""
        old = self._objects
        changed = set(replaced_keys(objects, old))
        added = sum(1 for k in changed if k not in old)
        if len(old) > len(objects) - added:  # some keys are gone
            changed.update(k for k in old if k not in objects)
        return changed

    def _endpoints_only(self, resources: Resources, services: set[tuple[str, str]], started: float) -> PublishResult:
        """Only EndpointSlices changed: refresh the affected clusters' endpoints, leave routes and statuses."""
        assert self._ir is not None
        fresh = refresh_endpoints(resources, self._ir, services, self.options)
        old_by_name = {c.name: c for c in self._ir.clusters}
        updated = {c.name: build_load_assignment(c) for c in fresh.clusters if old_by_name.get(c.name) != c}
        self._ir = fresh
        if not updated:
            return PublishResult(self.snapshot, False)
        return self._publish(self.snapshot.with_changes({ENDPOINT: updated}), started, "endpoints")

    def _stamp_statuses(self, fresh: dict[ObjectKey, dict[str, Any]]) -> set[ObjectKey]:
        """Statuses with real transition times; an unchanged status is reused as is (the translator hands
        unchanged ones over as the very same dicts, else a dict compare). Returns the keys whose status
        appeared or went."""
        now = utc_now()
        before = self._unstamped
        stamped = dict(self.statuses)
        appeared: set[ObjectKey] = set()
        for key in replaced_keys(fresh, before):
            status, previous = fresh[key], before.get(key)
            if previous is None:
                appeared.add(key)
            elif previous == status:
                continue
            stamped[key] = stamp_transition_times(stamped.get(key), copy.deepcopy(status), now)
        if len(before) > len(fresh) - len(appeared):  # some statuses went
            gone = [k for k in before if k not in fresh]
            appeared.update(gone)
            for key in gone:
                del stamped[key]
        self._unstamped = fresh
        self.statuses = stamped
        return appeared

    def _count_kinds(
        self, changed: set[ObjectKey], before: Mapping[ObjectKey, RawObject], objects: Mapping[ObjectKey, RawObject]
    ) -> None:
        """Objects by kind as a metric, kept up to date from the keys that changed."""
        for key in changed:
            delta = (key in objects) - (key in before)
            if delta:
                self._kinds[key.kind] += delta
                metrics.OBJECTS.labels(key.kind).set(self._kinds[key.kind])

    def _count_problems(self) -> None:
        problems: list[StoreProblem | Problem] = [*self.store_problems, *self.translate_problems]
        for severity in ("error", "warning"):
            metrics.PROBLEMS.labels(severity).set(sum(1 for p in problems if p.severity == severity))

    def status_document(self) -> list[dict[str, Any]]:
        """Objects with their status, exactly as they would be written to Kubernetes."""
        out = []
        for key, status in sorted(self.statuses.items()):
            out.append(
                {
                    "apiVersion": f"{key.group}/v1" if key.group else "v1",
                    "kind": key.kind,
                    "metadata": {
                        "name": key.name,
                        **({"namespace": key.namespace} if key.namespace else {}),
                        "generation": self.generations.get(key, 1),
                    },
                    "status": status,
                }
            )
        return out

    def problem_document(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {
                "object": sp.object,
                "file": sp.file,
                "line": sp.line,
                "field": sp.field,
                "message": sp.message,
                "severity": "error",
            }
            for sp in self.source_problems
        ]
        for sp in self.store_problems:
            out.append(
                {
                    "object": str(sp.key),
                    "file": sp.source.file if sp.source else None,
                    "line": sp.source.line if sp.source else None,
                    "field": sp.field,
                    "message": sp.message,
                    "severity": sp.severity,
                }
            )
        sources = self.resources.sources
        for tp in self.translate_problems:
            src = sources.get(tp.key)
            out.append(
                {
                    "object": str(tp.key),
                    "file": src.file if src else None,
                    "line": src.line if src else None,
                    "field": tp.field,
                    "message": tp.message,
                    "severity": tp.severity,
                }
            )
        if self.system_error:
            out.append(
                {
                    "object": None,
                    "file": None,
                    "line": None,
                    "field": None,
                    "severity": "error",
                    "message": f"internal: snapshot not published: {self.system_error}",
                }
            )
        return out


def _slice_services(key: ObjectKey, *states: Mapping[ObjectKey, RawObject]) -> set[str]:
    """The Service an EndpointSlice belongs to in each state (before and after a change: the label may move)."""
    names: set[str] = set()
    for state in states:
        raw = state.get(key)
        labels = (raw.body.get("metadata") or {}).get("labels") if raw is not None else None
        if isinstance(labels, Mapping) and isinstance(labels.get(SERVICE_NAME_LABEL), str):
            names.add(labels[SERVICE_NAME_LABEL])
    return names


def _generation(raw: RawObject) -> int:
    meta = raw.body.get("metadata")
    gen = meta.get("generation") if isinstance(meta, Mapping) else None
    return gen if isinstance(gen, int) else 1
