"""Per-stream, per-type protocol state shared by the SotW and Delta stream implementations.

The server never trusts its own sends as "Envoy has this": what Envoy holds is learnt only from ACKs (or,
after a reconnect, from what Envoy reports it holds). Readiness and the admin status are computed from that.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf.message import Message

from stackway.xds.snapshot import Snapshot


def set_version(items: Mapping[str, str]) -> str:
    """Version of a set of (name, version) pairs; for a whole type it equals `Snapshot.type_version`."""
    digest = hashlib.sha256()
    for name, ver in sorted(items.items()):
        digest.update(f"{name}\0{ver}\0".encode())
    return digest.hexdigest()[:16]


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def eds_service_name(msg: Message) -> str | None:
    """Name of the ClusterLoadAssignment an EDS cluster reads, or None for clusters that have none."""
    if not isinstance(msg, cluster_pb2.Cluster):
        return None
    if msg.WhichOneof("cluster_discovery_type") != "type" or msg.type != cluster_pb2.Cluster.EDS:
        return None
    return str(msg.eds_cluster_config.service_name or msg.name)


@dataclass(frozen=True)
class NackRecord:
    """A response Envoy rejected. `message` is Envoy's text, kept for humans only (it varies between runs)."""

    version: str
    message: str
    code: int
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "message": self.message, "code": self.code, "at": iso(self.at)}


@dataclass
class Pending:
    """A response sent and not yet ACKed or NACKed."""

    nonce: str
    version: str
    sent_at: float  # monotonic, for the push→ACK histogram
    changes: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)


@dataclass
class TypeState:
    """What one stream asked for of one type, what was sent, and what Envoy confirmed."""

    type_url: str
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    pending: dict[str, Pending] = field(default_factory=dict)
    # SotW: only the latest nonce counts; `answered` tells a re-request (pitfall #1) from the first ACK.
    last_nonce: str | None = None
    answered: bool = False
    # Delta: name → version Envoy holds after our sends (`known`) and after its ACKs (`acked`).
    known: dict[str, str] = field(default_factory=dict)
    acked: dict[str, str] = field(default_factory=dict)
    sent_version: str | None = None
    sent_at: float | None = None
    acked_version: str | None = None
    acked_at: float | None = None
    nack: NackRecord | None = None
    responses: int = 0
    resources_sent: int = 0

    def desired(self, view: Snapshot) -> dict[str, str]:
        """name → version of what this subscription should hold according to `view`."""
        versions = view.versions.get(self.type_url, {})
        if self.wildcard:
            return dict(versions)
        return {name: versions[name] for name in sorted(self.names) if name in versions}

    def status(self) -> dict[str, Any]:
        return {
            "subscribed": "*" if self.wildcard else sorted(self.names),
            "last_sent_version": self.sent_version,
            "last_sent_at": iso(self.sent_at),
            "last_acked_version": self.acked_version,
            "last_acked_at": iso(self.acked_at),
            "last_nack": self.nack.as_dict() if self.nack else None,
            "pending": len(self.pending),
            "responses": self.responses,
            "resources_sent": self.resources_sent,
        }


class Notifier:
    """Wakes every waiter whenever protocol state changes (an ACK, a NACK, a stream coming or going)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait_for(self, predicate: Callable[[], bool], limit: float) -> bool:
        """True once `predicate()` holds, False if it still does not after `limit` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if self._event is None:
                self._event = asyncio.Event()
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True


def now() -> float:
    return time.time()
