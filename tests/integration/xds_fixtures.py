"""Envoy protobufs, HTTP backends, traffic and a running control plane + Envoy, for the xDS tests.

Everything listens on 127.0.0.1 only. Backends answer with their own name, so a response says which
cluster Envoy routed it to.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

# Registers the Any-packed types that ParseDict must resolve by "@type".
import envoy.extensions.filters.http.router.v3.router_pb2
import envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2  # noqa: F401
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from stackway.dataplane.envoy import EnvoyProcess
from stackway.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot
from stackway.xds_server import SnapshotCache, XdsServer

HOST = "127.0.0.1"
ROUTE_NAME = "local_route"
ADS = {"ads": {}, "resource_api_version": "V3"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# ---- resources ------------------------------------------------------------------------------------------------
def listener(port: int, route_name: str = ROUTE_NAME) -> listener_pb2.Listener:
    hcm = {
        "@type": "type.googleapis.com/"
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "http",
        "rds": {"route_config_name": route_name, "config_source": ADS},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return json_format.ParseDict(
        {
            "name": "http",
            "address": {"socket_address": {"address": HOST, "port_value": port}},
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
            ],
        },
        listener_pb2.Listener(),
    )


def route(cluster: str, *, regex: str | None = None, name: str = ROUTE_NAME) -> route_pb2.RouteConfiguration:
    """Everything to `cluster`; with `regex`, an extra regex route first (an invalid one makes Envoy NACK)."""
    routes: list[dict[str, Any]] = []
    if regex is not None:
        routes.append({"match": {"safe_regex": {"regex": regex}}, "route": {"cluster": cluster}})
    routes.append({"match": {"prefix": "/"}, "route": {"cluster": cluster}})
    return json_format.ParseDict(
        {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
        route_pb2.RouteConfiguration(),
    )


def cluster(name: str, connect_timeout: str = "1s") -> cluster_pb2.Cluster:
    return json_format.ParseDict(
        {"name": name, "type": "EDS", "connect_timeout": connect_timeout, "eds_cluster_config": {"eds_config": ADS}},
        cluster_pb2.Cluster(),
    )


def load_assignment(name: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    endpoint = {"endpoint": {"address": {"socket_address": {"address": HOST, "port_value": port}}}}
    return json_format.ParseDict(
        {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]}, endpoint_pb2.ClusterLoadAssignment()
    )


def snapshot(
    listen_port: int,
    backends: Mapping[str, int],
    to: str,
    *,
    regex: str | None = None,
    timeouts: Mapping[str, str] | None = None,
) -> Snapshot:
    """One listener → one route to cluster `to`; one EDS cluster per backend (name → port)."""
    timeouts = timeouts or {}
    resources: dict[str, dict[str, Message]] = {
        LISTENER: {"http": listener(listen_port)},
        ROUTE: {ROUTE_NAME: route(to, regex=regex)},
        CLUSTER: {name: cluster(name, timeouts.get(name, "1s")) for name in backends},
        ENDPOINT: {name: load_assignment(name, port) for name, port in backends.items()},
    }
    return Snapshot(resources=resources)


# ---- backends -------------------------------------------------------------------------------------------------
async def start_backend(name: str) -> tuple[asyncio.Server, int]:
    """Minimal HTTP/1.1 keep-alive server answering its name; TCP_NODELAY, or Envoy sees ~40 ms stalls."""
    body = name.encode()
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s" % (len(body), body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    return server, int(server.sockets[0].getsockname()[1])


async def get(port: int, limit: float = 2.0) -> tuple[int, str]:
    """One request on a new connection (so it always sees Envoy's newest route)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), limit)
    try:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), limit)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body.decode(errors="replace")


async def wait_served_by(port: int, name: str, limit: float = 10.0) -> float:
    """Seconds until a fresh request on `port` is answered by backend `name`."""
    started = time.perf_counter()
    while True:
        with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
            if await get(port) == (200, name):
                return time.perf_counter() - started
        if time.perf_counter() - started > limit:
            raise AssertionError(f"port {port} not served by {name} within {limit} s")
        await asyncio.sleep(0.002)


@dataclass
class Traffic:
    """Continuous requests (keep-alive and fresh connections) counting every outcome."""

    port: int
    outcomes: Counter[str] = field(default_factory=Counter)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: bool = False

    def start(self, keepalive_workers: int = 3, fresh_workers: int = 1) -> None:
        for _ in range(keepalive_workers):
            self._tasks.append(asyncio.create_task(self._keepalive()))
        for _ in range(fresh_workers):
            self._tasks.append(asyncio.create_task(self._fresh()))

    async def _keepalive(self) -> None:
        url = f"http://{HOST}:{self.port}/"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while not self._stop:
                try:
                    async with session.get(url) as resp:
                        body = await resp.text()
                        self.outcomes[body if resp.status == 200 else f"HTTP {resp.status}"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.outcomes[f"error {type(exc).__name__}"] += 1
                await asyncio.sleep(0)

    async def _fresh(self) -> None:
        while not self._stop:
            try:
                status, body = await get(self.port)
                self.outcomes[body if status == 200 else f"HTTP {status}"] += 1
            except (OSError, TimeoutError) as exc:
                self.outcomes[f"error {type(exc).__name__}"] += 1

    async def stop(self) -> Counter[str]:
        self._stop = True
        await asyncio.gather(*self._tasks)
        return self.outcomes

    def failures(self, backends: set[str]) -> dict[str, int]:
        return {k: v for k, v in self.outcomes.items() if k not in backends}


# ---- a running control plane and Envoy ------------------------------------------------------------------------
@dataclass
class Stack:
    cache: SnapshotCache
    server: XdsServer
    envoy: EnvoyProcess
    listen_port: int
    backends: dict[str, int]

    async def publish(self, snap: Snapshot, limit: float = 10.0) -> float:
        """Set `snap` and return the seconds until every Envoy has ACKed it."""
        started = time.perf_counter()
        await self.cache.set(snap)
        await self.cache.wait_acked(snap.version, limit)
        return time.perf_counter() - started

    async def envoy_clusters(self) -> set[str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.envoy.admin_url}/clusters?format=json") as resp,
        ):
            data = await resp.json()
        return {c["name"] for c in data.get("cluster_statuses", [])}


@contextlib.asynccontextmanager
async def running_stack(delta: bool, backend_names: tuple[str, ...] = ("a", "b")) -> AsyncIterator[Stack]:
    """Backends, an xDS server with a first snapshot routing to the first backend, and a LIVE Envoy."""
    servers: list[asyncio.Server] = []
    backends: dict[str, int] = {}
    for name in backend_names:
        srv, port = await start_backend(name)
        servers.append(srv)
        backends[name] = port
    cache = SnapshotCache()
    server = XdsServer(cache, HOST, 0)
    await server.start()
    listen_port = free_port()
    first = snapshot(listen_port, backends, backend_names[0])
    await cache.set(first)
    envoy = EnvoyProcess(f"test-{'delta' if delta else 'sotw'}", (HOST, server.port), (HOST, 0), delta=delta)
    stack = Stack(cache, server, envoy, listen_port, backends)
    try:
        await envoy.start()
        await cache.wait_acked(first.version, 10)
        await wait_served_by(listen_port, backend_names[0])
        yield stack
    finally:
        # A test may have replaced the server and cache (control-plane restart): stop what is current.
        await stack.envoy.stop()
        await stack.server.stop(0.2)
        await stack.cache.close()
        for srv in servers:
            srv.close()


def metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0
