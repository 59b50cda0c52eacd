"""The ADS state machine, driven in-process: a scripted client plays Envoy's side of the protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2 as d
from google.protobuf import duration_pb2
from google.rpc import status_pb2
from prometheus_client import REGISTRY

from stackway.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot
from stackway.xds_server import AdsServicer, SnapshotCache

pytestmark = pytest.mark.timeout(10)


def snap(clusters: dict[str, int], route_to: str, listeners: tuple[str, ...] = ("http",)) -> Snapshot:
    """Clusters name → connect timeout seconds (to make a 'modified' cluster); one route to `route_to`."""
    return Snapshot(
        resources={
            CLUSTER: {
                n: cluster_pb2.Cluster(
                    name=n, type=cluster_pb2.Cluster.EDS, connect_timeout=duration_pb2.Duration(seconds=t)
                )
                for n, t in clusters.items()
            },
            ENDPOINT: {n: endpoint_pb2.ClusterLoadAssignment(cluster_name=n) for n in clusters},
            LISTENER: {n: listener_pb2.Listener(name=n) for n in listeners},
            ROUTE: {"r": route_pb2.RouteConfiguration(name="r", virtual_hosts=[{"name": route_to}])},
        }
    )


class FakeEnvoy:
    """Sends requests into the servicer and collects its responses, as Envoy's gRPC mux would."""

    def __init__(self, cache: SnapshotCache, delta: bool, node: str = "n1") -> None:
        self.delta = delta
        self.node = node
        self.first = True
        self.names: dict[str, list[str]] = {}  # SotW: every request repeats the subscribed names
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        servicer = AdsServicer(cache)
        rpc = servicer.DeltaAggregatedResources if delta else servicer.StreamAggregatedResources
        self.task = asyncio.create_task(self._pump(rpc(self._requests(), None)))

    async def _requests(self) -> AsyncIterator[Any]:
        while (req := await self.requests.get()) is not None:
            yield req

    async def _pump(self, responses: AsyncIterator[Any]) -> None:
        async for resp in responses:
            self.responses.put_nowait(resp)

    def send(self, type_url: str, **fields: Any) -> None:
        if "resource_names" in fields:
            self.names[type_url] = list(fields["resource_names"])
        req = (d.DeltaDiscoveryRequest if self.delta else d.DiscoveryRequest)(type_url=type_url, **fields)
        if self.first:
            req.node.CopyFrom(base_pb2.Node(id=self.node, cluster="c"))
            self.first = False
        self.requests.put_nowait(req)

    def ack(self, resp: Any, **fields: Any) -> None:
        if not self.delta:
            fields.setdefault("version_info", resp.version_info)
            fields.setdefault("resource_names", self.names.get(resp.type_url, []))
        self.send(resp.type_url, response_nonce=resp.nonce, **fields)

    def nack(self, resp: Any, message: str = "bad", **fields: Any) -> None:
        if not self.delta:
            fields.setdefault("resource_names", self.names.get(resp.type_url, []))
        self.send(
            resp.type_url, response_nonce=resp.nonce, error_detail=status_pb2.Status(code=13, message=message), **fields
        )

    async def recv(self) -> Any:
        return await asyncio.wait_for(self.responses.get(), 2)

    async def silent(self, wait: float = 0.05) -> None:
        await asyncio.sleep(wait)
        assert self.responses.empty(), self.responses.get_nowait()

    async def close(self) -> None:
        self.requests.put_nowait(None)
        await asyncio.wait_for(self.task, 2)


def names(resp: Any) -> list[str]:
    if isinstance(resp, d.DeltaDiscoveryResponse):
        return [r.name for r in resp.resources]
    out = []
    for any_msg in resp.resources:
        for cls in (cluster_pb2.Cluster, listener_pb2.Listener, route_pb2.RouteConfiguration):
            if any_msg.Is(cls.DESCRIPTOR):
                msg = cls()
                any_msg.Unpack(msg)
                out.append(msg.name)
        if any_msg.Is(endpoint_pb2.ClusterLoadAssignment.DESCRIPTOR):
            cla = endpoint_pb2.ClusterLoadAssignment()
            any_msg.Unpack(cla)
            out.append(cla.cluster_name)
    return out


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def handshake(envoy: FakeEnvoy) -> dict[str, Any]:
    """Envoy's start-up order: CDS, EDS for the clusters, LDS, RDS for the route; all ACKed."""
    last = {}
    envoy.send(CLUSTER)
    last[CLUSTER] = cds = await envoy.recv()
    envoy.send(
        ENDPOINT, **({"resource_names_subscribe": names(cds)} if envoy.delta else {"resource_names": names(cds)})
    )
    last[ENDPOINT] = await envoy.recv()
    envoy.ack(cds)
    envoy.ack(last[ENDPOINT])
    envoy.send(LISTENER)
    last[LISTENER] = lds = await envoy.recv()
    envoy.send(ROUTE, **({"resource_names_subscribe": ["r"]} if envoy.delta else {"resource_names": ["r"]}))
    last[ROUTE] = await envoy.recv()
    envoy.ack(lds)
    envoy.ack(last[ROUTE])
    await asyncio.sleep(0.01)
    return last


# ---- SotW ------------------------------------------------------------------------------------------------------
async def test_sotw_ack_stale_and_rerequest() -> None:
    cache = SnapshotCache()
    await cache.set(snap({"a": 1, "b": 1}, "a"))
    assert not cache.ready()  # nobody connected
    envoy = FakeEnvoy(cache, delta=False)
    last = await handshake(envoy)
    assert sorted(names(last[CLUSTER])) == ["a", "b"]
    assert cache.ready()
    await cache.wait_acked(cache.snapshot.version, 1)
    # A repeated ACK of an old nonce is stale: ignored.
    stale_before = metric("stackway_xds_stale_requests_total", type="CDS")
    envoy.send(CLUSTER, response_nonce="no-such-nonce", version_info="x")
    await envoy.silent()
    assert metric("stackway_xds_stale_requests_total", type="CDS") == stale_before + 1
    # Pitfall #1: the already-ACKed EDS nonce again is a re-request and must be answered.
    envoy.ack(last[ENDPOINT], resource_names=["a", "b"])
    again = await envoy.recv()
    assert again.type_url == ENDPOINT
    assert sorted(names(again)) == ["a", "b"]
    assert again.nonce != last[ENDPOINT].nonce
    await envoy.close()
    assert not cache.ready()


async def test_sotw_nack_is_recorded_and_not_resent() -> None:
    cache = SnapshotCache()
    await cache.set(snap({"a": 1}, "a"))
    envoy = FakeEnvoy(cache, delta=False)
    await handshake(envoy)
    good = cache.status()["envoys"][0]["types"]["RDS"]["last_acked_version"]
    before = metric("stackway_xds_nacks_total", type="RDS")
    await cache.set(snap({"a": 1}, "bad"))
    rds = await envoy.recv()
    assert rds.type_url == ROUTE  # only the changed type is pushed
    envoy.nack(rds, version_info=good)
    await envoy.silent()
    status = cache.status()["envoys"][0]["types"]["RDS"]
    assert status["last_nack"]["version"] == rds.version_info
    assert status["last_nack"]["message"] == "bad"
    assert status["last_acked_version"] == good
    assert metric("stackway_xds_nacks_total", type="RDS") == before + 1
    assert not cache.ready()
    await envoy.close()


async def test_sotw_rds_carries_only_subscribed_names() -> None:
    cache = SnapshotCache()
    s = snap({"a": 1}, "a")
    extra = dict(s.resources)
    extra[ROUTE] = {**s.resources[ROUTE], "other": route_pb2.RouteConfiguration(name="other")}
    await cache.set(Snapshot(resources=extra))
    envoy = FakeEnvoy(cache, delta=False)
    last = await handshake(envoy)
    assert names(last[ROUTE]) == ["r"]
    # A new name in the ACK request is a subscription change: answered with both names.
    envoy.ack(last[ROUTE], resource_names=["r", "other"])
    assert sorted(names(await envoy.recv())) == ["other", "r"]
    await envoy.close()


async def test_push_order_and_make_before_break() -> None:
    """Route a → b with cluster a dropped: CDS (a kept) first; routes only after the clusters are ACKed;
    a follow-up CDS without a only after the route is ACKed."""
    cache = SnapshotCache()
    await cache.set(snap({"a": 1}, "a"))
    envoy = FakeEnvoy(cache, delta=False)
    last = await handshake(envoy)
    await cache.set(snap({"b": 1}, "b"))
    cds = await envoy.recv()
    assert cds.type_url == CLUSTER
    assert sorted(names(cds)) == ["a", "b"]  # a is kept for now
    await envoy.silent()  # no route before the clusters are answered
    envoy.send(ENDPOINT, response_nonce=last[ENDPOINT].nonce, resource_names=["a", "b"])  # Envoy's re-subscribe
    eds = await envoy.recv()
    assert sorted(names(eds)) == ["a", "b"]
    envoy.ack(eds)
    envoy.ack(cds)
    rds = await envoy.recv()
    assert rds.type_url == ROUTE
    await envoy.silent()  # a is not removed before the route is answered
    assert cache.status()["kept_until_routes_settle"] == {CLUSTER: ["a"], ENDPOINT: ["a"]}
    envoy.ack(rds)
    follow_up = await envoy.recv()
    assert follow_up.type_url == CLUSTER
    assert names(follow_up) == ["b"]
    envoy.ack(follow_up)
    envoy.send(ENDPOINT, response_nonce=eds.nonce, resource_names=["b"])  # Envoy drops a's endpoints
    eds = await envoy.recv()
    assert names(eds) == ["b"]
    envoy.ack(eds)
    await cache.wait_acked(cache.snapshot.version, 1)
    assert cache.status()["kept_until_routes_settle"] == {}
    await envoy.close()


# ---- Delta -----------------------------------------------------------------------------------------------------
async def test_delta_wildcard_removal_and_unchanged_not_resent() -> None:
    cache = SnapshotCache()
    await cache.set(snap({"a": 1, "b": 1}, "a", listeners=("http", "https")))
    envoy = FakeEnvoy(cache, delta=True)
    last = await handshake(envoy)
    assert sorted(names(last[LISTENER])) == ["http", "https"]
    await cache.set(snap({"a": 1, "b": 1}, "a", listeners=("http",)))
    lds = await envoy.recv()
    assert lds.type_url == LISTENER
    assert list(lds.removed_resources) == ["https"]
    assert names(lds) == []  # http is unchanged: not sent again
    envoy.ack(lds)
    await cache.wait_acked(cache.snapshot.version, 1)
    await envoy.close()


async def test_delta_updated_cluster_resends_its_load_assignment() -> None:
    """Pitfall #2: Envoy does not ask for the CLA of an updated EDS cluster; the server must send it."""
    cache = SnapshotCache()
    await cache.set(snap({"a": 1, "b": 1}, "a"))
    envoy = FakeEnvoy(cache, delta=True)
    await handshake(envoy)
    await cache.set(snap({"a": 2, "b": 1}, "a"))
    cds = await envoy.recv()
    assert names(cds) == ["a"]
    eds = await envoy.recv()
    assert eds.type_url == ENDPOINT
    assert names(eds) == ["a"]  # unchanged, sent anyway
    envoy.ack(cds)
    envoy.ack(eds)
    await cache.wait_acked(cache.snapshot.version, 1)
    await envoy.close()


async def test_delta_reconnect_sends_only_what_changed() -> None:
    cache = SnapshotCache()
    old = snap({"a": 1, "b": 1}, "a")
    new = snap({"a": 1, "c": 1}, "b")
    await cache.set(new)
    envoy = FakeEnvoy(cache, delta=True)
    envoy.send(CLUSTER, initial_resource_versions=old.versions[CLUSTER])
    cds = await envoy.recv()
    assert names(cds) == ["c"]
    assert list(cds.removed_resources) == ["b"]
    envoy.ack(cds)
    envoy.send(ROUTE, resource_names_subscribe=["r"], initial_resource_versions=old.versions[ROUTE])
    rds = await envoy.recv()
    assert names(rds) == ["r"]
    envoy.send(LISTENER, initial_resource_versions=old.versions[LISTENER])
    lds = await envoy.recv()
    assert names(lds) == []  # the listener is unchanged; answered (empty) so Envoy's init completes
    await envoy.close()


async def test_delta_nack_then_fix() -> None:
    cache = SnapshotCache()
    await cache.set(snap({"a": 1}, "a"))
    envoy = FakeEnvoy(cache, delta=True)
    await handshake(envoy)
    await cache.set(snap({"a": 1}, "bad"))
    rds = await envoy.recv()
    envoy.nack(rds)
    await envoy.silent()  # the rejected resource is not pushed again on its own
    assert cache.status()["envoys"][0]["types"]["RDS"]["last_nack"]["version"] == rds.system_version_info
    assert not cache.ready()
    await cache.set(snap({"a": 1}, "good"))
    fixed = await envoy.recv()
    envoy.ack(fixed)
    await cache.wait_acked(cache.snapshot.version, 1)
    await envoy.close()


# ---- cache -----------------------------------------------------------------------------------------------------
async def test_per_node_snapshot_and_wait_acked_timeout() -> None:
    cache = SnapshotCache()
    await cache.set(snap({"a": 1}, "a"))
    one, two = FakeEnvoy(cache, delta=True, node="one"), FakeEnvoy(cache, delta=False, node="two")
    await handshake(one)
    await handshake(two)
    await cache.set(snap({"a": 1}, "special"), node_id="two")
    rds = await two.recv()
    assert rds.type_url == ROUTE
    await one.silent()  # node one keeps the default snapshot
    assert cache.status()["node_snapshots"] == {"two": cache.snapshot_for("two").version}
    with pytest.raises(TimeoutError):
        await cache.wait_acked(cache.snapshot_for("two").version, 0.1)
    two.ack(rds)
    await cache.wait_acked(cache.snapshot_for("two").version, 1)
    assert metric("stackway_snapshot_version_info", version=cache.snapshot.version) == 1
    await one.close()
    await two.close()
