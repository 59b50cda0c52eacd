"""State-of-the-world ADS: every response carries the full set for its type (or all requested names)."""

from __future__ import annotations

import time
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from stackway.xds.snapshot import WILDCARD_TYPES, Snapshot
from stackway.xds_server.state import Pending, TypeState, set_version
from stackway.xds_server.stream import Stream


class SotwStream(Stream):
    kind = "sotw"

    def on_request(self, request: Any) -> None:
        """Nonce rules per type: no nonce → (re)subscribe; not the latest nonce → stale, ignored; the latest
        nonce the first time → ACK/NACK (answer only if the names changed); the latest nonce again → a
        re-request, answered (pitfall #1: Envoy does this for EDS when a CDS update touches an EDS cluster)."""
        req: discovery_pb2.DiscoveryRequest = request
        self.learn_node(req.node)
        type_url = req.type_url
        names = set(req.resource_names)
        st = self.types.get(type_url)
        if st is None or not req.response_nonce:
            if st is None:
                st = self.types[type_url] = TypeState(type_url)
            st.wildcard = type_url in WILDCARD_TYPES and (not names or "*" in names)
            st.names = names - {"*"}
            if req.version_info:  # what Envoy still holds, e.g. after a control-plane restart
                st.acked_version = req.version_info
            self.respond(type_url, always=True)
            return
        if req.response_nonce != st.last_nonce:
            self.stale(st, req.response_nonce)
            return
        if st.answered:
            st.names = names - {"*"}
            self.respond(type_url, always=True)
            return
        st.answered = True
        pending = st.pending.pop(req.response_nonce, None)
        if pending is not None:
            if req.HasField("error_detail"):
                self.record_nack(st, pending, req.error_detail)
            else:
                self.record_ack(st, pending, req.version_info)
        if not st.wildcard and names - {"*"} != st.names:
            st.names = names - {"*"}
            self.respond(type_url, always=True)

    def respond(self, type_url: str, *, always: bool = False) -> None:
        st = self.types[type_url]
        if not st.wildcard and not st.names:
            return  # nothing subscribed: an empty non-wildcard request asks for nothing
        view = self.view_for(type_url)
        want = st.desired(view)
        version = set_version(want)
        if not always and version == st.sent_version:
            return
        by_name = view.of_type(type_url)
        nonce = self.next_nonce()
        response = discovery_pb2.DiscoveryResponse(
            version_info=version,
            type_url=type_url,
            nonce=nonce,
            resources=[self.source.pack(type_url, name, ver, by_name[name]) for name, ver in want.items()],
        )
        st.pending.clear()  # older responses are superseded: Envoy only ever ACKs the latest with effect
        st.last_nonce, st.answered = nonce, False
        self.sent(st, response, Pending(nonce, version, time.monotonic()), len(want))

    def acked_all(self, target: Snapshot) -> bool:
        return all(
            st.acked_version == set_version(st.desired(target)) for st in self.types.values() if st.wildcard or st.names
        )
