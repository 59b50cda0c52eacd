"""SnapshotCache: the snapshot(s) to serve, the open streams, and make-before-break cluster removal.

`set()` never waits on Envoy: it records the new snapshot and wakes each stream's pusher, so a slow or stuck
Envoy delays no one else. Each stream pushes in order (clusters and endpoints, then listeners and routes).

Make-before-break: clusters (and their load assignments) that a new snapshot drops stay in the served
*view* until every stream has answered the listeners and routes of that view; only then a follow-up push
removes them. So a route that moves from cluster A to B, with A deleted in the same snapshot, never points at
a cluster Envoy no longer has.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import structlog
from google.protobuf import any_pb2
from google.protobuf.message import Message

from stackway.xds.snapshot import CLUSTER, ENDPOINT, Snapshot
from stackway.xds_server import metrics
from stackway.xds_server.state import Notifier
from stackway.xds_server.stream import Stream

log = structlog.get_logger("stackway.xds")

#: Types whose resources are kept for one round after the snapshot drops them.
RETAINED_TYPES = (CLUSTER, ENDPOINT)


@dataclass
class _Entry:
    """The snapshot for one node (or for every node without its own, under key None)."""

    target: Snapshot
    view: Snapshot
    retained: dict[str, list[str]] = field(default_factory=dict)
    finalizer: asyncio.Task[None] | None = None


class SnapshotCache:
    """Holds what to serve and who is connected; the gRPC servicer attaches streams to it."""

    def __init__(self, *, stage_timeout: float = 5.0, settle_timeout: float = 30.0) -> None:
        """`stage_timeout`: how long a stream waits for Envoy to answer clusters before pushing listeners
        anyway. `settle_timeout`: how long dropped clusters are kept at most, waiting for slow Envoys."""
        self.stage_timeout = stage_timeout
        self.settle_timeout = settle_timeout
        self.notifier = Notifier()
        empty = Snapshot.empty()
        self._entries: dict[str | None, _Entry] = {None: _Entry(empty, empty)}
        self._streams: set[Stream] = set()
        self._packed: dict[tuple[str, str, str], any_pb2.Any] = {}
        #: Serialised resources the snapshots came with, by (type, name, version).
        self._encoded: dict[tuple[str, str, str], bytes] = {}

    # ---- what is served ---------------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        """The snapshot for nodes without one of their own."""
        return self._entries[None].target

    def _key(self, node_id: str | None) -> str | None:
        return node_id if node_id in self._entries else None

    def snapshot_for(self, node_id: str | None) -> Snapshot:
        return self._entries[self._key(node_id)].target

    def view_for(self, node_id: str) -> Snapshot:
        """What is served to `node_id` right now: its snapshot plus clusters kept for make-before-break."""
        return self._entries[self._key(node_id)].view

    def pack(self, type_url: str, name: str, version: str, msg: Message) -> any_pb2.Any:
        """Any-packed resource, shared by all streams (serialised once per version, not once per Envoy)."""
        key = (type_url, name, version)
        packed = self._packed.get(key)
        if packed is None:
            data = self._encoded.get(key)
            if data is not None:
                packed = self._packed[key] = any_pb2.Any(type_url=type_url, value=data)
            else:
                packed = self._packed[key] = any_pb2.Any()
                packed.Pack(msg)
        return packed

    async def set(self, snapshot: Snapshot, node_id: str | None = None) -> None:
        """Publish `snapshot` (for `node_id` only, or for every node without its own when None)."""
        for type_url, by_name in snapshot.encoded.items():
            for name, data in by_name.items():
                self._encoded[(type_url, name, snapshot.versions[type_url][name])] = data
        key = node_id
        entry = self._entries.get(key)
        if entry is None:
            base = self._entries[None].view
            entry = self._entries[key] = _Entry(base, base)
        old = entry.view
        retained = {t: sorted(n for n in old.of_type(t) if n not in snapshot.of_type(t)) for t in RETAINED_TYPES}
        retained = {t: names for t, names in retained.items() if names}
        entry.target = snapshot
        entry.retained = retained
        entry.view = self._merge(snapshot, old, retained) if retained else snapshot
        if entry.finalizer is not None:
            entry.finalizer.cancel()
            entry.finalizer = None
        if retained:
            entry.finalizer = asyncio.create_task(self._finalize(key, entry, entry.view.version))
        if key is None:
            metrics.SNAPSHOT_VERSION.info({"version": snapshot.version})
        self._prune_packed()
        log.info("snapshot set", version=snapshot.version, node=node_id, kept_for_now=retained or None)
        self._wake(key)
        self.notifier.notify()
        await asyncio.sleep(0)

    @staticmethod
    def _merge(snapshot: Snapshot, old: Snapshot, retained: dict[str, list[str]]) -> Snapshot:
        resources: dict[str, dict[str, Message]] = {t: dict(by_name) for t, by_name in snapshot.resources.items()}
        versions: dict[str, dict[str, str]] = {t: dict(by_name) for t, by_name in snapshot.versions.items()}
        for type_url, names in retained.items():
            kept = resources.setdefault(type_url, {})
            kept_versions = versions.setdefault(type_url, {})
            for name in names:
                kept[name] = old.of_type(type_url)[name]
                kept_versions[name] = old.versions[type_url][name]
        # Every version is known already: hashing a large RouteConfiguration again takes milliseconds.
        return Snapshot(resources=resources, known_versions=versions, encoded=snapshot.encoded)

    async def _finalize(self, key: str | None, entry: _Entry, view_version: str) -> None:
        """Drop the kept clusters once every stream of this entry has answered the view's routes."""

        def applied() -> bool:
            return all(s.applied_view == view_version for s in self._streams_of(key))

        if not await self.notifier.wait_for(applied, self.settle_timeout):
            log.warning("not every Envoy answered in time; removing old clusters anyway", node=key)
        if entry.view.version != view_version:
            return
        log.info("removing clusters no longer used", node=key, removed=entry.retained)
        entry.view = entry.target
        entry.retained = {}
        entry.finalizer = None
        self._wake(key)
        self.notifier.notify()

    def _prune_packed(self) -> None:
        live = {
            (t, name, ver)
            for e in self._entries.values()
            for t, by_name in e.view.versions.items()
            for name, ver in by_name.items()
        }
        for key in [k for k in self._packed if k not in live]:
            del self._packed[key]
        for key in [k for k in self._encoded if k not in live]:
            del self._encoded[key]

    # ---- streams ------------------------------------------------------------------------------------------
    def _streams_of(self, key: str | None) -> list[Stream]:
        return [s for s in self._streams if s.node_id and self._key(s.node_id) == key]

    def _wake(self, key: str | None) -> None:
        for stream in self._streams_of(key):
            stream.wake.set()

    def register(self, stream: Stream) -> None:
        self._streams.add(stream)
        metrics.CONNECTED_STREAMS.labels(stream.kind).inc()
        self.notifier.notify()

    def unregister(self, stream: Stream) -> None:
        if stream in self._streams:
            self._streams.discard(stream)
            metrics.CONNECTED_STREAMS.labels(stream.kind).dec()
            log.info("envoy disconnected", node=stream.node_id, stream=stream.kind, peer=stream.peer)
            self.notifier.notify()

    # ---- readiness and status -----------------------------------------------------------------------------
    def ready(self) -> bool:
        """True once at least one Envoy is connected and every connected Envoy has ACKed its snapshot."""
        streams = [s for s in self._streams if s.node_id]
        return bool(streams) and all(s.in_sync(self.snapshot_for(s.node_id)) for s in streams)

    async def wait_acked(self, version: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the snapshot `version` is current and ACKed by every connected Envoy."""

        def done() -> bool:
            return any(e.target.version == version for e in self._entries.values()) and self.ready()

        if not await self.notifier.wait_for(done, timeout):
            raise TimeoutError(f"snapshot {version} not ACKed by every Envoy within {timeout} s")

    def status(self) -> dict[str, Any]:
        default = self._entries[None]
        streams = sorted((s for s in self._streams if s.node_id), key=lambda s: (s.connected_since, s.id))
        return {
            "snapshot_version": default.target.version,
            "serving_version": default.view.version,
            "kept_until_routes_settle": default.retained,
            "node_snapshots": {k: e.target.version for k, e in self._entries.items() if k is not None},
            "ready": self.ready(),
            "envoys": [s.status(self.snapshot_for(s.node_id)) for s in streams],
        }

    async def close(self) -> None:
        """Stop background work (finalizers); streams end with the gRPC server."""
        for entry in self._entries.values():
            if entry.finalizer is not None:
                entry.finalizer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await entry.finalizer
                entry.finalizer = None
