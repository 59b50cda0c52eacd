"""Mutual TLS between Envoy and the xDS server, with certificates from `stackway.certs`: a real Envoy with the
right client certificate gets its configuration and serves traffic; Envoys with a certificate from another CA,
without TLS, or facing a server they cannot verify never get a stream; plain gRPC clients without TLS or
without a client certificate are refused too."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from xds_fixtures import HOST, free_port, snapshot, start_backend, wait_served_by

from stackway import certs
from stackway.dataplane.bootstrap import XdsClientTls
from stackway.dataplane.envoy import EnvoyProcess
from stackway.xds.snapshot import CLUSTER
from stackway.xds_server import SnapshotCache
from stackway.xds_server.server import ServerTls, XdsServer

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(60)]

SERVICE, NAMESPACE = "stackway", "stackway-system"
SERVER_NAME = f"{SERVICE}.{NAMESPACE}.svc"


@dataclass(frozen=True)
class Pki:
    good: Path  # the CA the server trusts, and the server's certificate
    rogue: Path  # another CA with its own server and client certificates

    def envoy_tls(self, client: Path | None = None, ca: Path | None = None, name: str = SERVER_NAME) -> XdsClientTls:
        client, ca = client or self.good, ca or self.good
        return XdsClientTls(client / "client.crt", client / "client.key", ca / "ca.crt", name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    certs.ensure_files(root / "good", service=SERVICE, namespace=NAMESPACE)
    certs.ensure_files(root / "rogue", service=SERVICE, namespace=NAMESPACE)
    return Pki(root / "good", root / "rogue")


@dataclass
class TlsStack:
    cache: SnapshotCache
    server: XdsServer
    listen_port: int
    version: str


@contextlib.asynccontextmanager
async def tls_server(pki: Pki) -> AsyncIterator[TlsStack]:
    """An mTLS xDS server on 127.0.0.1 with a snapshot routing everything to backend "a"."""
    backend, port = await start_backend("a")
    cache = SnapshotCache()
    good = pki.good
    server = XdsServer(cache, HOST, 0, tls=ServerTls(good / "server.crt", good / "server.key", good / "ca.crt"))
    await server.start()
    listen_port = free_port()
    first = snapshot(listen_port, {"a": port}, "a")
    await cache.set(first)
    try:
        yield TlsStack(cache, server, listen_port, first.version)
    finally:
        await server.stop(0.2)
        await cache.close()
        backend.close()


async def envoy_stats(envoy: EnvoyProcess) -> dict[str, int]:
    """Counters and gauges of the xDS connection from Envoy's admin interface."""
    url = f"{envoy.admin_url}/stats?filter=^(cluster\\.xds_cluster\\.|control_plane\\.)"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
    stats = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            stats[name] = int(value)
    return stats


async def envoy_ready_status(envoy: EnvoyProcess) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{envoy.admin_url}/ready") as resp:
        return resp.status


async def assert_refused(stack: TlsStack, envoy: EnvoyProcess) -> dict[str, int]:
    """Envoy keeps retrying (at least three connection attempts) and never gets a stream or its config.

    `control_plane.connected_state` is no proof either way: Envoy sets it to 1 as soon as it *opens* a gRPC
    stream, before the connection is up, and back to 0 when that fails; a sample can land in between. No gRPC
    response (`upstream_rq_200`) and no completed TLS handshake are the stable signs."""
    await envoy.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 10
        while (stats := await envoy_stats(envoy)).get("cluster.xds_cluster.upstream_cx_total", 0) < 3:
            assert time.monotonic() < deadline, f"Envoy did not retry the xDS connection: {stats}"
            await asyncio.sleep(0.05)
        assert stack.cache.status()["envoys"] == []
        assert not stack.cache.ready()
        assert stats.get("cluster.xds_cluster.upstream_rq_200", 0) == 0
        assert stats.get("cluster.xds_cluster.ssl.handshake", 0) == 0
        assert await envoy_ready_status(envoy) == 503  # PRE_INITIALIZING: no clusters or listeners arrived
        return stats
    finally:
        await envoy.stop()


@pytest.mark.parametrize("delta", [pytest.param(False, id="sotw"), pytest.param(True, id="delta")])
async def test_envoy_with_client_certificate_gets_config_over_mtls(pki: Pki, delta: bool) -> None:
    async with tls_server(pki) as stack:
        envoy = EnvoyProcess("mtls-node", (HOST, stack.server.port), (HOST, 0), delta=delta, xds_tls=pki.envoy_tls())
        async with envoy:
            await stack.cache.wait_acked(stack.version, 10)
            await wait_served_by(stack.listen_port, "a")
            envoys = stack.cache.status()["envoys"]
            assert [e["node_id"] for e in envoys] == ["mtls-node"]
            assert envoys[0]["in_sync"]
            stats = await envoy_stats(envoy)
            assert stats["control_plane.connected_state"] == 1
            assert stats["cluster.xds_cluster.ssl.handshake"] >= 1
            assert stats["cluster.xds_cluster.upstream_rq_200"] >= 1
            assert stats.get("cluster.xds_cluster.upstream_cx_connect_fail", 0) == 0


async def test_envoy_with_certificate_from_another_ca_is_refused(pki: Pki) -> None:
    async with tls_server(pki) as stack:
        tls = pki.envoy_tls(client=pki.rogue)  # trusts the server, but its own certificate is from another CA
        envoy = EnvoyProcess("rogue-node", (HOST, stack.server.port), xds_tls=tls)
        await envoy.start(wait_ready=False)
        try:
            # the handshake fails every time; counted once each attempt has finished, so wait for the count
            deadline = time.monotonic() + 10
            while (stats := await envoy_stats(envoy)).get("cluster.xds_cluster.upstream_cx_connect_fail", 0) < 3:
                assert time.monotonic() < deadline, f"handshakes did not fail: {stats}"
                await asyncio.sleep(0.05)
        finally:
            await envoy.stop()
        await assert_refused(stack, EnvoyProcess("rogue-node", (HOST, stack.server.port), xds_tls=tls))


async def test_plaintext_envoy_is_refused_by_tls_server(pki: Pki) -> None:
    async with tls_server(pki) as stack:
        stats = await assert_refused(stack, EnvoyProcess("plain-node", (HOST, stack.server.port)))
        assert stats["cluster.xds_cluster.upstream_cx_destroy_remote"] >= 3  # the server hangs up on each


@pytest.mark.parametrize(
    "wrong", [pytest.param("ca", id="server-from-another-ca"), pytest.param("name", id="wrong-server-name")]
)
async def test_envoy_refuses_server_it_cannot_verify(pki: Pki, wrong: str) -> None:
    async with tls_server(pki) as stack:
        tls = pki.envoy_tls(ca=pki.rogue) if wrong == "ca" else pki.envoy_tls(name="stackway.elsewhere.svc")
        stats = await assert_refused(stack, EnvoyProcess("careful-node", (HOST, stack.server.port), xds_tls=tls))
        if wrong == "name":
            assert stats["cluster.xds_cluster.ssl.fail_verify_san"] >= 3


async def first_cds_response(channel: grpc.aio.Channel) -> discovery_pb2.DiscoveryResponse:
    """Open an ADS stream, ask for all clusters and return the first answer."""
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    call = stub.StreamAggregatedResources()
    await call.write(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="grpc-client"), type_url=CLUSTER))
    try:
        response: discovery_pb2.DiscoveryResponse = await asyncio.wait_for(call.read(), 5)
        return response
    finally:
        call.cancel()


async def test_grpc_clients_need_tls_and_a_client_certificate(pki: Pki) -> None:
    good = pki.good
    async with tls_server(pki) as stack:
        target = f"{HOST}:{stack.server.port}"
        name = (("grpc.ssl_target_name_override", SERVER_NAME),)
        refused = {
            "plaintext": grpc.aio.insecure_channel(target),
            "no client certificate": grpc.aio.secure_channel(
                target, grpc.ssl_channel_credentials((good / "ca.crt").read_bytes()), options=name
            ),
        }
        for what, channel in refused.items():
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await first_cds_response(channel)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, what
        assert stack.cache.status()["envoys"] == []
        creds = grpc.ssl_channel_credentials(
            (good / "ca.crt").read_bytes(), (good / "client.key").read_bytes(), (good / "client.crt").read_bytes()
        )
        async with grpc.aio.secure_channel(target, creds, options=name) as channel:
            response = await first_cds_response(channel)
        assert response.type_url == CLUSTER
        assert len(response.resources) == 1
