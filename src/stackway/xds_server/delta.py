"""Incremental (delta) ADS: responses carry only what changed, per resource name and version.

Pitfall #2: when an EDS cluster is updated, Envoy re-initialises it and waits for its ClusterLoadAssignment
but does not ask for it (it is already subscribed). The CLA is therefore re-sent after every updated
Cluster, changed or not; otherwise the cluster warms until initial_fetch_timeout (15 s).
"""

from __future__ import annotations

import time
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from stackway.xds.snapshot import CLUSTER, ENDPOINT, WILDCARD_TYPES, Snapshot
from stackway.xds_server.state import Pending, TypeState, eds_service_name, set_version
from stackway.xds_server.stream import Source, Stream


class DeltaStream(Stream):
    kind = "delta"

    def __init__(self, source: Source, peer: str = "") -> None:
        super().__init__(source, peer)
        #: Names to send again although Envoy's version matches (pitfall #2), by type.
        self.force: dict[str, set[str]] = {}

    def on_request(self, request: Any) -> None:
        req: discovery_pb2.DeltaDiscoveryRequest = request
        self.learn_node(req.node)
        type_url = req.type_url
        subscribe = set(req.resource_names_subscribe)
        st = self.types.get(type_url)
        if st is None:
            # First request of this type on this stream. An empty subscribe list on LDS/CDS is the legacy
            # wildcard; initial_resource_versions is what Envoy kept from a previous stream.
            st = self.types[type_url] = TypeState(type_url)
            st.wildcard = "*" in subscribe or (type_url in WILDCARD_TYPES and not subscribe)
            st.names = subscribe - {"*"}
            st.known = dict(req.initial_resource_versions)
            st.acked = dict(st.known)
            if st.acked:
                st.acked_version = set_version(st.acked)
            self.respond(type_url, always=True)
            return
        if req.response_nonce:
            pending = st.pending.pop(req.response_nonce, None)
            if pending is None:
                self.stale(st, req.response_nonce)
            elif req.HasField("error_detail"):
                self.record_nack(st, pending, req.error_detail)
            else:
                st.acked.update(pending.changes)
                for name in pending.removed:
                    st.acked.pop(name, None)
                self.record_ack(st, pending, pending.version)
        for name in subscribe:
            if name == "*":
                st.wildcard = True
            else:
                st.names.add(name)
        for name in req.resource_names_unsubscribe:
            if name == "*":
                st.wildcard = False
                continue
            st.names.discard(name)
            if not st.wildcard:
                st.known.pop(name, None)
                st.acked.pop(name, None)
        if subscribe or req.resource_names_unsubscribe:
            self.respond(type_url)

    def respond(self, type_url: str, *, always: bool = False) -> None:
        st = self.types[type_url]
        view = self.view_for(type_url)
        want = st.desired(view)
        force = self.force.get(type_url, set())
        changed = {name: ver for name, ver in want.items() if st.known.get(name) != ver or name in force}
        # Only wildcard types are told about removals. For RDS/EDS Envoy unsubscribes by itself once nothing
        # refers to a resource; removing one it still uses would break traffic (make-before-break).
        removed = sorted(name for name in st.known if name not in want) if st.wildcard else []
        if not (changed or removed or always):
            return
        self.force.pop(type_url, None)
        by_name = view.of_type(type_url)
        updated = [name for name in changed if name in st.known]
        nonce = self.next_nonce()
        version = set_version(want)
        response = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version,
            type_url=type_url,
            nonce=nonce,
            resources=[
                discovery_pb2.Resource(
                    name=name, version=ver, resource=self.source.pack(type_url, name, ver, by_name[name])
                )
                for name, ver in changed.items()
            ],
            removed_resources=removed,
        )
        st.known.update(changed)
        for name in removed:
            st.known.pop(name, None)
        self.sent(st, response, Pending(nonce, version, time.monotonic(), changed, removed), len(changed))
        if type_url == CLUSTER and updated:
            services = {svc for name in updated if (svc := eds_service_name(by_name[name])) is not None}
            if services:
                self.force.setdefault(ENDPOINT, set()).update(services)
                if ENDPOINT in self.types:
                    self.respond(ENDPOINT)

    def acked_all(self, target: Snapshot) -> bool:
        for st in self.types.values():
            want = st.desired(target)
            if any(st.acked.get(name) != ver for name, ver in want.items()):
                return False
            if st.wildcard and not set(st.acked) <= set(want):
                return False
        return True
