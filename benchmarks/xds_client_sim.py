"""Lightweight xDS clients that behave like Envoy on the wire, for fan-out measurements beyond what real Envoys
fit in memory (an Envoy is ~70 MB RSS; a simulated node is a few hundred kB).

Each simulated node opens its own HTTP/2 connection (a local subchannel pool, or gRPC would multiplex all
nodes over one connection) and one ADS stream, SotW or Delta, and then does what Envoy 1.40 does:
CDS wildcard first; on clusters, subscribe to the ClusterLoadAssignments of EDS clusters, ACK, then LDS
wildcard; on listeners, subscribe to the RouteConfigurations their HTTP connection managers name, ACK; ACK
every RDS/EDS response. Resources are decoded only as far as needed to learn those names, so a simulated
node costs the control plane the same as an Envoy and costs its own process much less.

Usage (normally started by fanout.py): python benchmarks/xds_client_sim.py --target 127.0.0.1:18000
    --nodes 90 [--prefix sim] [--delta] [--tls-dir DIR --server-name NAME]
Runs until stdin closes or SIGTERM; prints one JSON line of totals on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

_T = "type.googleapis.com/"
LISTENER = _T + "envoy.config.listener.v3.Listener"
ROUTE = _T + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = _T + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _T + "envoy.config.endpoint.v3.ClusterLoadAssignment"
#: Which type's resources name the subscriptions of which other type.
DEPENDENT = {CLUSTER: ENDPOINT, LISTENER: ROUTE}

#: Own connection per node, and Envoy's keepalive settings (the server permits pings every 10 s).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def eds_names(packed: Any) -> set[str]:
    """The ClusterLoadAssignment an EDS cluster reads (none for other clusters)."""
    c = cluster_pb2.Cluster()
    packed.Unpack(c)
    if c.WhichOneof("cluster_discovery_type") == "type" and c.type == cluster_pb2.Cluster.EDS:
        return {c.eds_cluster_config.service_name or c.name}
    return set()


def rds_names(packed: Any) -> set[str]:
    """The RouteConfigurations a listener's HTTP connection managers ask for over RDS."""
    listener = listener_pb2.Listener()
    packed.Unpack(listener)
    names = set()
    for chain in listener.filter_chains:
        for f in chain.filters:
            if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                hcm = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                if hcm.HasField("rds"):
                    names.add(hcm.rds.route_config_name)
    return names


@dataclass
class SimNode:
    """One simulated Envoy: one connection, one ADS stream."""

    node_id: str
    delta: bool
    responses: int = 0
    resources: int = 0
    nonces: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    subscribed: dict[str, set[str]] = field(default_factory=dict)
    #: Per wildcard type: resource name → the names it makes us subscribe to (clusters → CLAs, listeners →
    #: routes); the dependent type's subscription is their union.
    refs: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    out: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    _node_sent: bool = False

    def _node(self) -> base_pb2.Node | None:
        if self._node_sent:
            return None
        self._node_sent = True
        return base_pb2.Node(id=self.node_id, cluster="fanout-sim", user_agent_name="xds-client-sim")

    # ---- requests -----------------------------------------------------------------------------------------
    def subscribe(self, type_url: str, names: set[str]) -> None:
        """Ask for `names` of `type_url` (empty set on LDS/CDS: the legacy wildcard, as Envoy sends it)."""
        old = self.subscribed.get(type_url)
        if old == names or (old is None and not names and type_url not in (LISTENER, CLUSTER)):
            return
        self.subscribed[type_url] = names
        if self.delta:
            add, drop = (names, set()) if old is None else (names - old, old - names)
            self.out.put_nowait(
                discovery_pb2.DeltaDiscoveryRequest(
                    node=self._node(),
                    type_url=type_url,
                    resource_names_subscribe=sorted(add),
                    resource_names_unsubscribe=sorted(drop),
                )
            )
        else:
            self.out.put_nowait(self._sotw_request(type_url))

    def _sotw_request(self, type_url: str) -> discovery_pb2.DiscoveryRequest:
        return discovery_pb2.DiscoveryRequest(
            node=self._node(),
            type_url=type_url,
            version_info=self.versions.get(type_url, ""),
            response_nonce=self.nonces.get(type_url, ""),
            resource_names=sorted(self.subscribed.get(type_url, set())),
        )

    # ---- responses ----------------------------------------------------------------------------------------
    def on_response(self, resp: Any) -> None:
        """Learn dependent names, subscribe to new ones before ACKing (Envoy's order), then ACK."""
        type_url = resp.type_url
        self.responses += 1
        self.resources += len(resp.resources)
        dependent = DEPENDENT.get(type_url)
        if dependent is not None:
            refs = self.refs.setdefault(type_url, {})
            names_of = eds_names if type_url == CLUSTER else rds_names
            if self.delta:
                for name in resp.removed_resources:
                    refs.pop(name, None)
                refs.update({r.name: names_of(r.resource) for r in resp.resources})
            else:
                refs.clear()
                refs.update({str(i): names_of(packed) for i, packed in enumerate(resp.resources)})
            self.subscribe(dependent, set().union(*refs.values()))
        if self.delta:
            self.out.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=resp.nonce))
        else:
            self.versions[type_url] = resp.version_info
            self.nonces[type_url] = resp.nonce
            self.out.put_nowait(self._sotw_request(type_url))
        if type_url == CLUSTER and LISTENER not in self.subscribed:
            self.subscribe(LISTENER, set())

    async def _requests(self) -> AsyncIterator[Any]:
        while (request := await self.out.get()) is not None:
            yield request

    async def run(self, channel: grpc.aio.Channel) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.subscribe(CLUSTER, set())
        method = stub.DeltaAggregatedResources if self.delta else stub.StreamAggregatedResources
        call = method(self._requests())
        async for response in call:
            self.on_response(response)


def channel_for(target: str, tls_dir: Path | None, server_name: str) -> grpc.aio.Channel:
    if tls_dir is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    creds = grpc.ssl_channel_credentials(
        (tls_dir / "ca.crt").read_bytes(), (tls_dir / "client.key").read_bytes(), (tls_dir / "client.crt").read_bytes()
    )
    return grpc.aio.secure_channel(
        target, creds, options=[*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", server_name)]
    )


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # The parent closing our stdin (or dying) ends the run too: no simulated nodes left behind.
    loop.add_reader(sys.stdin.fileno(), lambda: None if os.read(sys.stdin.fileno(), 1) else stop.set())
    nodes = [SimNode(f"{args.prefix}-{i}", args.delta) for i in range(args.nodes)]
    channels = [channel_for(args.target, args.tls_dir, args.server_name) for _ in nodes]
    errors: list[str] = []

    async def run(node: SimNode, channel: grpc.aio.Channel) -> None:
        try:
            await node.run(channel)
        except grpc.aio.AioRpcError as exc:
            if not stop.is_set():
                errors.append(f"{node.node_id}: {exc.code().name}")

    tasks = [asyncio.create_task(run(n, c)) for n, c in zip(nodes, channels, strict=True)]
    await stop.wait()
    for task in tasks:
        task.cancel()
    for channel in channels:
        with contextlib.suppress(Exception):
            await channel.close(None)
    totals = {
        "nodes": len(nodes),
        "responses": sum(n.responses for n in nodes),
        "resources": sum(n.resources for n in nodes),
        "errors": errors[:5],
    }
    print(json.dumps(totals), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--target", required=True, help="host:port of the xDS server")
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--prefix", default="sim")
    p.add_argument("--delta", action="store_true", help="incremental ADS (default: state of the world)")
    p.add_argument("--tls-dir", type=Path, help="directory with ca.crt, client.crt, client.key (mutual TLS)")
    p.add_argument("--server-name", default="stackway.stackway-system.svc", help="name to verify the server as")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
