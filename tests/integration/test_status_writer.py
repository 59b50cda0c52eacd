"""StatusWriter against the fake API server: what is written, how often, and what is left alone.

Counts come from the fake's own request counters (what the API server saw), not from the writer's
opinion of itself; rates from timestamps of every request the writer's client sent.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from prometheus_client import REGISTRY
from tests.fakes.kube_apiserver import FakeKubeApiServer
from tests.integration.xds_fixtures import free_port

from stackway.cluster import ClusterConfig, ClusterService
from stackway.providers.kubernetes import KubeApi
from stackway.providers.kubernetes.client import load_configuration
from stackway.providers.kubernetes.status import StatusWriter
from stackway.resources.raw import ObjectKey, RawObject

pytestmark = pytest.mark.timeout(40)

GW = "gateway.networking.k8s.io"
OURS = "stackway.dev/gateway-controller"
OTHER = "example.com/other-controller"
T0 = "2026-01-01T00:00:00Z"


class RecordingApi(KubeApi):
    """The real client, noting when each request was sent."""

    def __init__(self, api_client: ApiClient) -> None:
        super().__init__(api_client, request_timeout_s=5.0)
        self.sent: list[tuple[float, str]] = []

    async def request(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        *,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        self.sent.append((time.monotonic(), method))
        return await super().request(method, path, query, body, content_type=content_type)


@pytest.fixture
async def api() -> AsyncIterator[FakeKubeApiServer]:
    async with FakeKubeApiServer() as server:
        server.apply(
            {
                "apiVersion": f"{GW}/v1",
                "kind": "GatewayClass",
                "metadata": {"name": "sw"},
                "spec": {"controllerName": OURS},
            }
        )
        server.apply(gateway("gw", "sw"))
        yield server


@pytest.fixture
async def client(api: FakeKubeApiServer, tmp_path: Path) -> AsyncIterator[RecordingApi]:
    recording = RecordingApi(ApiClient(await load_configuration(api.write_kubeconfig(tmp_path / "kubeconfig"))))
    yield recording
    await recording.close()


def gateway(name: str, class_name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"gatewayClassName": class_name, "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
    }


def route(name: str, host: str = "a.example") -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hostnames": [host], "parentRefs": [{"name": "gw"}]},
    }


def cond(type_: str, generation: int, message: str = "", at: str = T0, ok: bool = True) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": type_ if ok else "Invalid",
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": at,
    }


def parent(controller: str, generation: int, message: str = "", at: str = T0) -> dict[str, Any]:
    return {
        "parentRef": {"name": "gw"},
        "controllerName": controller,
        "conditions": [cond("Accepted", generation, message, at), cond("ResolvedRefs", generation, message, at)],
    }


CLASS = ObjectKey(GW, "GatewayClass", "", "sw")
GATEWAY = ObjectKey(GW, "Gateway", "default", "gw")


def rkey(name: str) -> ObjectKey:
    return ObjectKey(GW, "HTTPRoute", "default", name)


def base_statuses(generation: int = 1, message: str = "", at: str = T0) -> dict[ObjectKey, dict[str, Any]]:
    return {
        CLASS: {"conditions": [cond("Accepted", 1, at=at)]},
        GATEWAY: {"conditions": [cond("Accepted", 1, at=at), cond("Programmed", 1, at=at)]},
        rkey("r1"): {"parents": [parent(OURS, generation, message, at)]},
    }


def live_of(api: FakeKubeApiServer, keys: list[ObjectKey]) -> dict[ObjectKey, RawObject]:
    return {k: RawObject(k, api.get(f"{k.group}/v1", k.kind, k.name, k.namespace or "default")) for k in keys}


def live_status(api: FakeKubeApiServer, name: str) -> dict[str, Any]:
    return dict(api.get(f"{GW}/v1", "HTTPRoute", name)["status"])


def puts(api: FakeKubeApiServer, plural: str = "httproutes") -> int:
    return api.requests_by_resource[("update", plural)]


async def settle(writer: StatusWriter) -> None:
    assert await writer.wait_idle(10.0), f"still {writer.queue_depth} queued"


async def test_writes_only_changes_and_never_goes_back_a_generation(
    api: FakeKubeApiServer, client: RecordingApi
) -> None:
    api.apply(route("r1"))
    writer = StatusWriter(client, OURS, retry_initial_s=0.01)
    writer.start()
    try:
        gens = {CLASS: 1, GATEWAY: 1, rkey("r1"): 1}
        writer.update(base_statuses(), gens)
        await settle(writer)
        assert live_status(api, "r1") == base_statuses()[rkey("r1")]
        assert api.get(f"{GW}/v1", "Gateway", "gw")["status"] == base_statuses()[GATEWAY]
        assert (puts(api), puts(api, "gateways"), puts(api, "gatewayclasses")) == (1, 1, 1)

        # the same statuses stamped at another time (another replica's translation): nothing to write
        writer.update(base_statuses(at="2026-05-05T05:05:05Z"), gens)
        await settle(writer)
        assert (puts(api), puts(api, "gateways"), writer.stats["written"]) == (1, 1, 3)
        assert writer.stats["unchanged"] == 3

        # with the watch cache: equal statuses cost no request at all
        before = len(client.sent)
        writer.update(base_statuses(), gens, live=live_of(api, [CLASS, GATEWAY, rkey("r1")]))
        await settle(writer)
        assert len(client.sent) == before

        # the spec moved to generation 2 but the translation is of generation 1: not written
        api.apply(route("r1", "b.example"))
        writer.update(base_statuses(1, "new message"), gens)
        await settle(writer)
        assert writer.stats["stale"] == 1
        assert live_status(api, "r1") == base_statuses()[rkey("r1")]
        # the translation of generation 2 is
        writer.update(base_statuses(2), {**gens, rkey("r1"): 2})
        await settle(writer)
        assert puts(api) == 2
        observed = {c["observedGeneration"] for c in live_status(api, "r1")["parents"][0]["conditions"]}
        assert observed == {2}

        # a late translation that knows no generation must not move observedGeneration back to 1
        writer.update(base_statuses(1, "late"), {})
        await settle(writer)
        assert puts(api) == 2
        assert writer.stats["stale"] == 2
    finally:
        await writer.stop()
    written = REGISTRY.get_sample_value("stackway_status_writes_total", {"result": "written"})
    assert written is not None
    assert written >= 4


async def test_conflicts_are_retried_on_a_fresh_read(api: FakeKubeApiServer, client: RecordingApi) -> None:
    api.apply(route("r1"))
    writer = StatusWriter(client, OURS, retry_initial_s=0.01)
    writer.start()
    try:
        api.inject_fault(409, count=2, verb="update", plural="httproutes")
        writer.update(base_statuses(), {rkey("r1"): 1})
        await settle(writer)
        assert writer.stats["conflicts"] == 2
        assert live_status(api, "r1") == base_statuses()[rkey("r1")]
        assert puts(api) == 3  # two refused, one written

        # a real conflict: the watch cache holds an older resourceVersion than the server
        stale = live_of(api, [CLASS, GATEWAY, rkey("r1")])
        api.touch(f"{GW}/v1", "HTTPRoute", "r1")
        writer.update(base_statuses(1, "changed"), {rkey("r1"): 1}, live=stale)
        await settle(writer)
        assert writer.stats["conflicts"] == 3
        assert live_status(api, "r1")["parents"][0]["conditions"][0]["message"] == "changed"

        # a server error is not a conflict: the key comes back after a backoff and is written then
        api.inject_fault(500, count=1, verb="update", plural="httproutes")
        writer.update(base_statuses(1, "after an error"), {rkey("r1"): 1})
        await settle(writer)
        assert writer.stats["error"] == 1
        assert live_status(api, "r1")["parents"][0]["conditions"][0]["message"] == "after an error"
    finally:
        await writer.stop()


async def test_other_controllers_entries_are_kept_and_ours_pruned(api: FakeKubeApiServer, client: RecordingApi) -> None:
    body = api.apply(route("r1"))
    theirs = parent(OTHER, 1, "theirs")
    api.update({**body, "status": {"parents": [theirs]}}, status=True)
    api.apply(gateway("foreign", "not-ours"))
    writer = StatusWriter(client, OURS, retry_initial_s=0.01)
    writer.start()
    try:
        foreign = ObjectKey(GW, "Gateway", "default", "foreign")
        statuses = {**base_statuses(), foreign: {"conditions": [cond("Accepted", 1)]}}
        writer.update(statuses, {rkey("r1"): 1})
        await settle(writer)
        assert live_status(api, "r1")["parents"] == [theirs, parent(OURS, 1)]
        assert "status" not in api.get(f"{GW}/v1", "Gateway", "foreign")  # its class is not ours
        assert writer.stats["not_ours"] == 1

        writer.update(base_statuses(1, "ours changed"), {rkey("r1"): 1})
        await settle(writer)
        assert live_status(api, "r1")["parents"] == [theirs, parent(OURS, 1, "ours changed")]

        # the route no longer names our Gateway: our entry goes, theirs stays
        without = {k: v for k, v in base_statuses().items() if k != rkey("r1")}
        writer.update(without, {}, live=live_of(api, [CLASS, GATEWAY, rkey("r1")]))
        await settle(writer)
        assert live_status(api, "r1")["parents"] == [theirs]
    finally:
        await writer.stop()


async def test_deleted_objects_are_dropped_silently(api: FakeKubeApiServer, client: RecordingApi) -> None:
    writer = StatusWriter(client, OURS, retry_initial_s=0.01)
    writer.start()
    try:
        writer.update(base_statuses(), {})  # r1 was never created (or deleted since)
        await settle(writer)
        assert writer.stats["deleted"] == 1
        assert writer.stats["error"] == 0
        await asyncio.sleep(0.2)
        assert writer.queue_depth == 0
    finally:
        await writer.stop()


async def test_a_burst_of_500_routes_is_written_at_the_bounded_rate_and_ends_correct(
    api: FakeKubeApiServer, client: RecordingApi
) -> None:
    names = [f"r{n:03d}" for n in range(500)]
    for name in names:
        api.create(route(name))
    interval, burst = 0.004, 25  # at most 250 requests a second after a burst of 25
    writer = StatusWriter(client, OURS, min_interval_s=interval, burst=burst, retry_initial_s=0.01)

    def statuses(version: str) -> dict[ObjectKey, dict[str, Any]]:
        return {**base_statuses(), **{rkey(n): {"parents": [parent(OURS, 1, version)]} for n in names}}

    gens = {rkey(n): 1 for n in names}
    writer.start()
    try:
        started = time.monotonic()
        writer.update(statuses("v1"), gens)
        await asyncio.sleep(0.5)
        writer.update(statuses("v2"), gens)  # supersedes what is still queued
        await asyncio.sleep(0.1)
        writer.update(statuses("v3"), gens)
        await settle(writer)
        took = time.monotonic() - started
    finally:
        await writer.stop()
    assert {live_status(api, n)["parents"][0]["conditions"][0]["message"] for n in names} == {"v3"}
    times = [t for t, _ in client.sent]
    window = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    written = puts(api)
    print(
        f"\n500 routes, 3 versions: {written} PUTs + {api.requests['get']} GETs in {took:.2f} s "
        f"({len(times) / took:.0f} requests/s overall, at most {window} in any second; limit {1 / interval:.0f}/s)"
    )
    assert window <= 1 / interval + burst + 5
    assert 500 <= written < 1000  # coalesced: far fewer than 3 times 500
    gaps = [b - a for a, b in itertools.pairwise(times[burst:])]
    assert sum(gaps) / len(gaps) >= interval * 0.9


async def test_runs_again_after_stop_and_resyncs(api: FakeKubeApiServer, client: RecordingApi) -> None:
    api.apply(route("r1"))
    writer = StatusWriter(client, OURS, retry_initial_s=0.01)
    writer.update(base_statuses(), {rkey("r1"): 1})
    await asyncio.sleep(0.1)
    assert puts(api) == 0  # not running (not the leader): nothing is written
    writer.start()
    await settle(writer)
    await writer.stop()
    # while another replica led, someone changed our entry; leading again we put it right
    body = api.get(f"{GW}/v1", "HTTPRoute", "r1")
    tampered = copy.deepcopy(body)
    tampered["status"]["parents"][0]["conditions"][0]["message"] = "tampered"
    api.update(tampered, status=True)
    writer.start()
    await settle(writer)
    await writer.stop()
    assert live_status(api, "r1") == base_statuses()[rkey("r1")]


async def observed(api: FakeKubeApiServer, generation: int, limit: float = 5.0) -> dict[str, Any]:
    """The route's status once our Accepted condition reports `generation`."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for entry in api.get(f"{GW}/v1", "HTTPRoute", "r1").get("status", {}).get("parents", []):
            accepted = {c["type"]: c for c in entry["conditions"]}.get("Accepted", {})
            if entry["controllerName"] == OURS and accepted.get("observedGeneration") == generation:
                return dict(entry)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no status for generation {generation}")


async def test_serve_writes_status_from_the_leader_only_and_fails_over(api: FakeKubeApiServer, tmp_path: Path) -> None:
    api.apply(
        {"apiVersion": f"{GW}/v1", "kind": "GatewayClass", "metadata": {"name": "sw"}, "spec": {"controllerName": OURS}}
    )
    api.apply(route("r1"))

    def replica() -> ClusterService:
        return ClusterService(
            ClusterConfig(
                kubeconfig=api.write_kubeconfig(tmp_path / "kubeconfig"),
                address="127.0.0.1",
                admin=("127.0.0.1", free_port()),
                xds=("127.0.0.1", free_port()),
                log_level="warning",
            )
        )

    a, b = replica(), replica()
    await a.start()
    try:
        assert a.elector is not None
        await asyncio.wait_for(a.elector.leading.wait(), 5.0)
        await b.start()
        entry = await observed(api, 1)
        assert {c["type"]: c["status"] for c in entry["conditions"]}["Accepted"] == "True"
        assert b.elector is not None
        assert not b.elector.is_leader
        api.apply(route("r1", "b.example"))  # generation 2
        await observed(api, 2)
        writes_by_b = b.status_writer.stats["written"] if b.status_writer else -1
        assert writes_by_b == 0  # every replica translates; only the leader writes
        released = time.monotonic()
        await a.stop()
        await asyncio.wait_for(b.elector.leading.wait(), 5.0)
        print(f"\nserve fail-over after a clean stop: {(time.monotonic() - released) * 1000:.0f} ms (retry period 2 s)")
        api.apply(route("r1", "c.example"))  # generation 3, written by the new leader
        await observed(api, 3)
    finally:
        await a.stop()
        await b.stop()
