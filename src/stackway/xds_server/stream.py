"""One ADS stream (one Envoy connection): the part common to SotW and Delta.

A stream's responses go through one queue that the gRPC handler drains, so responses leave in exactly the
order they were decided. Requests are handled synchronously (no await between reading state and queueing
the answer), so the reader and the pusher never interleave inside one decision.

Pushes of a new snapshot happen in two stages per stream (the pusher task): clusters, endpoints and secrets
first, then, once Envoy has ACKed or NACKed those (clusters warm before they are ACKed), listeners and
routes. A route therefore never names a cluster Envoy does not have active yet.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from abc import ABC, abstractmethod
from typing import Any, Protocol

import structlog
from envoy.config.core.v3 import base_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from stackway.xds.snapshot import LISTENER, PUSH_ORDER, WILDCARD_TYPES, Snapshot
from stackway.xds_server import metrics
from stackway.xds_server.state import NackRecord, Notifier, Pending, TypeState, iso, now

log = structlog.get_logger("stackway.xds")

#: Types pushed (and settled) before any listener or route of the same snapshot.
FIRST_STAGE: tuple[str, ...] = PUSH_ORDER[: PUSH_ORDER.index(LISTENER)]

_stream_ids = itertools.count(1)


class Source(Protocol):
    """What a stream needs from the cache."""

    notifier: Notifier
    stage_timeout: float

    def view_for(self, node_id: str) -> Snapshot: ...

    def pack(self, type_url: str, name: str, version: str, msg: Message) -> any_pb2.Any: ...


class Stream(ABC):
    kind = "abstract"

    def __init__(self, source: Source, peer: str = "") -> None:
        self.source = source
        self.peer = peer
        self.id = next(_stream_ids)
        self.node_id = ""
        self.node_cluster = ""
        self.envoy_version = ""
        self.connected_since = now()
        self.out: asyncio.Queue[Message | None] = asyncio.Queue()
        self.types: dict[str, TypeState] = {}
        self.type_view: dict[str, Snapshot] = {}
        #: Version of the last view whose listeners and routes this Envoy has answered (make-before-break).
        self.applied_view: str | None = None
        self.wake = asyncio.Event()
        self._nonces = itertools.count(1)

    # ---- hooks for the concrete protocols -------------------------------------------------------------
    @abstractmethod
    def on_request(self, request: Any) -> None:
        """Handle one request; queue whatever responses it calls for."""

    @abstractmethod
    def respond(self, type_url: str, *, always: bool = False) -> None:
        """Send what Envoy lacks of `type_url` from this type's view (everything, for SotW)."""

    @abstractmethod
    def acked_all(self, target: Snapshot) -> bool:
        """True if Envoy has ACKed exactly `target` for every type it subscribes to."""

    def in_sync(self, target: Snapshot) -> bool:
        """ACKed everything, and subscribed to listeners and clusters if there are any: a stream that has
        only asked for clusters so far (just connected) is not in sync yet."""
        if any(target.of_type(t) and t not in self.types for t in WILDCARD_TYPES):
            return False
        return self.acked_all(target)

    # ---- shared machinery ---------------------------------------------------------------------------------
    def learn_node(self, node: base_pb2.Node) -> None:
        """The node arrives only on the first request (set_node_on_first_message_only)."""
        if self.node_id or not node.id:
            return
        self.node_id = node.id
        self.node_cluster = node.cluster
        ver = node.user_agent_build_version.version
        if node.HasField("user_agent_build_version"):
            self.envoy_version = f"{ver.major_number}.{ver.minor_number}.{ver.patch}"
        log.info("envoy connected", node=self.node_id, stream=self.kind, peer=self.peer, envoy=self.envoy_version)
        self.applied_view = self.source.view_for(self.node_id).version
        self.source.notifier.notify()

    def view_for(self, type_url: str) -> Snapshot:
        view = self.type_view.get(type_url)
        if view is None:
            view = self.type_view[type_url] = self.source.view_for(self.node_id)
        return view

    def next_nonce(self) -> str:
        return f"{self.id}-{next(self._nonces)}"

    def sent(self, st: TypeState, response: Message, pending: Pending, resources: int) -> None:
        st.pending[pending.nonce] = pending
        st.sent_version = pending.version
        st.sent_at = now()
        st.responses += 1
        st.resources_sent += resources
        label = metrics.short(st.type_url)
        metrics.PUSHES.labels(label).inc()
        metrics.RESOURCES_SENT.labels(label).inc(resources)
        self.out.put_nowait(response)

    def record_ack(self, st: TypeState, pending: Pending, version: str) -> None:
        st.acked_version = version
        st.acked_at = now()
        label = metrics.short(st.type_url)
        metrics.ACKS.labels(label).inc()
        metrics.PUSH_TO_ACK.labels(label).observe(time.monotonic() - pending.sent_at)
        self.source.notifier.notify()

    def record_nack(self, st: TypeState, pending: Pending, error: status_pb2.Status) -> None:
        st.nack = NackRecord(version=pending.version, message=error.message, code=error.code, at=now())
        label = metrics.short(st.type_url)
        metrics.NACKS.labels(label).inc()
        metrics.PUSH_TO_ACK.labels(label).observe(time.monotonic() - pending.sent_at)
        log.warning(
            "envoy rejected config",
            node=self.node_id,
            stream=self.kind,
            type=label,
            version=pending.version,
            still_serving=st.acked_version,
            error=error.message,
        )
        self.source.notifier.notify()

    def stale(self, st: TypeState, nonce: str) -> None:
        metrics.STALE.labels(metrics.short(st.type_url)).inc()
        log.debug("stale nonce ignored", node=self.node_id, type=metrics.short(st.type_url), nonce=nonce)

    def settled(self, types: tuple[str, ...]) -> bool:
        return all(not st.pending for t, st in self.types.items() if t in types)

    def push(self, view: Snapshot, types: tuple[str, ...]) -> None:
        """Serve `types` from `view` from now on and send what changed."""
        for type_url in types:
            self.type_view[type_url] = view
        for type_url in types:
            if type_url in self.types:
                self.respond(type_url)

    async def run_pusher(self) -> None:
        """Follow the cache's view for this node, one staged push at a time (newer views coalesce)."""
        notifier, timeout = self.source.notifier, self.source.stage_timeout
        while True:
            await self.wake.wait()
            self.wake.clear()
            view = self.source.view_for(self.node_id)
            rest = tuple(dict.fromkeys(t for t in (*PUSH_ORDER, *sorted(view.resources)) if t not in FIRST_STAGE))
            self.push(view, FIRST_STAGE)
            if not await notifier.wait_for(lambda: self.settled(FIRST_STAGE), timeout):
                log.warning("envoy slow to answer clusters; pushing listeners anyway", node=self.node_id)
            self.push(view, rest)
            await notifier.wait_for(lambda rest=rest: self.settled(rest), timeout)  # type: ignore[misc]
            self.applied_view = view.version
            notifier.notify()

    def status(self, target: Snapshot) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "node_cluster": self.node_cluster,
            "envoy_version": self.envoy_version,
            "stream": self.kind,
            "peer": self.peer,
            "connected_since": iso(self.connected_since),
            "in_sync": self.in_sync(target),
            "types": {metrics.short(t): st.status() for t, st in sorted(self.types.items())},
        }
