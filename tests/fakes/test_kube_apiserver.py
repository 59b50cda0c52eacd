"""The fake API server against the Kubernetes semantics that controllers depend on.

Plain HTTP first (what the wire looks like), then the official async client library unmodified, which is
what proves the fake is good enough to stand in for a kube-apiserver.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.fakes.kube_apiserver import FakeKubeApiServer

GW = "gateway.networking.k8s.io"
GATEWAYS = f"/apis/{GW}/v1/namespaces/default/gateways"
SERVICES = "/api/v1/namespaces/default/services"
MERGE = {"Content-Type": "application/merge-patch+json"}


def gateway(name: str = "gw", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "Gateway",
        "metadata": {"name": name},
        "spec": {"gatewayClassName": "sw", **spec},
    }


@pytest.fixture
async def api() -> AsyncIterator[FakeKubeApiServer]:
    async with FakeKubeApiServer(bookmark_interval=0.1, history=50) as server:
        yield server


@pytest.fixture
async def http(api: FakeKubeApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(api.url) as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, path, data=None if body is None else json.dumps(body), **kw) as response:
        return response.status, await response.json()


async def events(http: aiohttp.ClientSession, path: str, count: int, **query: str) -> list[dict[str, Any]]:
    """The first `count` events of a watch (or fewer if the server ends it)."""
    params = {"watch": "1", "timeoutSeconds": "2", **query}
    out: list[dict[str, Any]] = []
    async with http.get(path, params=params) as response:
        assert response.status == 200
        async for line in response.content:
            out.append(json.loads(line))
            if len(out) == count:
                break
    return out


async def test_create_stamps_metadata_and_resource_versions_rise_globally(http: aiohttp.ClientSession) -> None:
    status, gw = await call(http, "POST", GATEWAYS, gateway())
    assert status == 201  # Created, as the real server answers
    meta = gw["metadata"]
    assert meta["generation"] == 1
    assert meta["uid"]
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["namespace"] == "default"
    _, svc = await call(http, "POST", SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}})
    assert int(svc["metadata"]["resourceVersion"]) == int(meta["resourceVersion"]) + 1
    _, listed = await call(http, "GET", f"/apis/{GW}/v1/gateways")
    assert listed["metadata"]["resourceVersion"] == svc["metadata"]["resourceVersion"]
    assert listed["items"][0]["kind"] == "Gateway"  # custom resources keep kind per item
    _, services = await call(http, "GET", "/api/v1/services")
    assert "kind" not in services["items"][0]  # built-in lists do not


async def test_create_conflicts_and_missing_namespace(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", GATEWAYS, gateway())
    status, body = await call(http, "POST", GATEWAYS, gateway())
    assert (status, body["reason"], body["kind"]) == (409, "AlreadyExists", "Status")
    status, body = await call(http, "POST", f"/apis/{GW}/v1/namespaces/nope/gateways", gateway())
    assert (status, body["reason"]) == (404, "NotFound")
    status, body = await call(http, "GET", f"/apis/{GW}/v1/namespaces/default/widgets")
    assert status == 404


async def test_update_with_stale_resource_version_is_409(http: aiohttp.ClientSession) -> None:
    _, gw = await call(http, "POST", GATEWAYS, gateway())
    fresh = {**gw, "spec": {"gatewayClassName": "other"}}
    status, updated = await call(http, "PUT", f"{GATEWAYS}/gw", fresh)
    assert status == 200
    assert updated["metadata"]["generation"] == 2
    status, body = await call(http, "PUT", f"{GATEWAYS}/gw", fresh)  # same, now stale, resourceVersion
    assert (status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    unversioned = {**fresh, "metadata": {"name": "gw"}}
    status, body = await call(http, "PUT", f"{GATEWAYS}/gw", unversioned)
    assert status == 422  # custom resources must say which version they update


async def test_generation_follows_spec_only_and_status_is_a_subresource(http: aiohttp.ClientSession) -> None:
    _, gw = await call(http, "POST", GATEWAYS, {**gateway(), "status": {"conditions": ["dropped on create"]}})
    assert "status" not in gw
    labelled = {**gw, "metadata": {**gw["metadata"], "labels": {"a": "b"}}, "status": {"ignored": True}}
    _, gw = await call(http, "PUT", f"{GATEWAYS}/gw", labelled)
    assert gw["metadata"]["generation"] == 1  # metadata is not spec
    assert "status" not in gw  # the main resource does not write status
    _, gw = await call(http, "PUT", f"{GATEWAYS}/gw/status", {**gw, "status": {"ok": 1}, "spec": {"ignored": 1}})
    assert gw["status"] == {"ok": 1}
    assert gw["spec"] == {"gatewayClassName": "sw"}  # /status does not write spec
    assert gw["metadata"]["generation"] == 1
    status, _ = await call(http, "PATCH", f"{GATEWAYS}/gw/status", {"status": {"ok": 2}}, headers=MERGE)
    assert status == 200
    status, _ = await call(http, "GET", "/api/v1/namespaces/default/secrets/x/status")
    assert status == 404  # no such subresource


async def test_patches(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", GATEWAYS, gateway(listeners=[{"name": "a", "port": 80}]))
    _, gw = await call(http, "PATCH", f"{GATEWAYS}/gw", {"spec": {"gatewayClassName": None, "x": 1}}, headers=MERGE)
    assert gw["spec"] == {"listeners": [{"name": "a", "port": 80}], "x": 1}
    ops = [
        {"op": "replace", "path": "/spec/listeners/0/port", "value": 81},
        {"op": "add", "path": "/spec/y", "value": 2},
    ]
    _, gw = await call(http, "PATCH", f"{GATEWAYS}/gw", ops, headers={"Content-Type": "application/json-patch+json"})
    assert gw["spec"]["listeners"][0]["port"] == 81
    assert gw["spec"]["y"] == 2
    failing = [{"op": "test", "path": "/spec/y", "value": 3}]
    status, _ = await call(
        http, "PATCH", f"{GATEWAYS}/gw", failing, headers={"Content-Type": "application/json-patch+json"}
    )
    assert status == 422
    smp = {"Content-Type": "application/strategic-merge-patch+json"}
    status, _ = await call(http, "PATCH", f"{GATEWAYS}/gw", {"spec": {}}, headers=smp)
    assert status == 415  # custom resources do not take strategic merge patches
    stale = {"metadata": {"resourceVersion": "1"}, "spec": {"z": 1}}
    status, _ = await call(http, "PATCH", f"{GATEWAYS}/gw", stale, headers=MERGE)
    assert status == 409  # a resourceVersion in a patch is a precondition


async def test_noop_update_writes_nothing(api: FakeKubeApiServer, http: aiohttp.ClientSession) -> None:
    _, gw = await call(http, "POST", GATEWAYS, gateway())
    _, same = await call(http, "PUT", f"{GATEWAYS}/gw", gw)
    assert same["metadata"]["resourceVersion"] == gw["metadata"]["resourceVersion"]
    touched = api.touch(f"{GW}/v1", "Gateway", "gw")  # another manager: only managedFields move
    assert int(touched["metadata"]["resourceVersion"]) > int(gw["metadata"]["resourceVersion"])
    assert touched["spec"] == gw["spec"]


async def test_finalizers_delay_deletion(http: aiohttp.ClientSession) -> None:
    _, gw = await call(http, "POST", GATEWAYS, {**gateway(), "metadata": {"name": "gw", "finalizers": ["x/y"]}})
    rv = gw["metadata"]["resourceVersion"]
    status, marked = await call(http, "DELETE", f"{GATEWAYS}/gw")
    assert status == 200
    assert marked["metadata"]["deletionTimestamp"]
    watched = asyncio.create_task(events(http, GATEWAYS, 2, resourceVersion=rv))
    status, _ = await call(http, "GET", f"{GATEWAYS}/gw")
    assert status == 200  # still there while a finalizer is
    no_new = {**marked, "metadata": {**marked["metadata"], "finalizers": ["x/y", "new"]}}
    status, _ = await call(http, "PUT", f"{GATEWAYS}/gw", no_new)
    assert status == 422
    status, _ = await call(http, "PATCH", f"{GATEWAYS}/gw", {"metadata": {"finalizers": None}}, headers=MERGE)
    assert status == 200
    status, _ = await call(http, "GET", f"{GATEWAYS}/gw")
    assert status == 404
    assert [e["type"] for e in await watched] == ["MODIFIED", "DELETED"]


async def test_selectors(http: aiohttp.ClientSession) -> None:
    for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
        body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"tier": tier}}}
        await call(http, "POST", SERVICES, body)

    async def names(**params: str) -> list[str]:
        _, listed = await call(http, "GET", SERVICES, params=params)
        return [i["metadata"]["name"] for i in listed["items"]]

    assert await names(labelSelector="tier=web") == ["a", "c"]
    assert await names(labelSelector="tier in (db, cache)") == ["b"]
    assert await names(labelSelector="tier,tier!=web") == ["b"]
    assert await names(labelSelector="!tier") == []
    assert await names(fieldSelector="metadata.name=c") == ["c"]
    assert await names(fieldSelector="metadata.namespace!=default") == []
    status, body = await call(http, "GET", SERVICES, params={"fieldSelector": "spec.type=x"})
    assert status == 400
    assert "field label not supported" in body["message"]


async def test_pagination(http: aiohttp.ClientSession) -> None:
    for i in range(5):
        await call(http, "POST", SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}"}})
    seen, token = [], ""
    while True:
        _, page = await call(http, "GET", SERVICES, params={"limit": "2", **({"continue": token} if token else {})})
        seen += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert seen == [f"s{i}" for i in range(5)]


async def test_watch_replays_from_a_resource_version_and_follows_selectors(
    api: FakeKubeApiServer, http: aiohttp.ClientSession
) -> None:
    _, first = await call(http, "POST", GATEWAYS, gateway("one"))
    await call(http, "POST", GATEWAYS, gateway("two"))
    replayed = await events(http, GATEWAYS, 1, resourceVersion=first["metadata"]["resourceVersion"])
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in replayed] == [("ADDED", "two")]
    initial = await events(http, GATEWAYS, 2)  # no resourceVersion: the current state as ADDED
    assert {e["object"]["metadata"]["name"] for e in initial} == {"one", "two"}
    rv = str(api.store.rv)
    watched = asyncio.create_task(events(http, GATEWAYS, 3, resourceVersion=rv, labelSelector="team=a"))
    await asyncio.sleep(0.05)
    for labels in ({"team": "a"}, {"team": "a", "x": "y"}, {"team": "b"}):
        await call(http, "PATCH", f"{GATEWAYS}/one", {"metadata": {"labels": labels}}, headers=MERGE)
    assert [e["type"] for e in await watched] == ["ADDED", "MODIFIED", "DELETED"]  # into, within, out of


async def test_compaction_answers_410_in_the_stream(api: FakeKubeApiServer, http: aiohttp.ClientSession) -> None:
    _, gw = await call(http, "POST", GATEWAYS, gateway())
    await call(http, "POST", GATEWAYS, gateway("two"))
    api.compact()
    assert await events(http, GATEWAYS, 1, resourceVersion=str(api.store.rv), timeoutSeconds="0.2") == []
    (error,) = await events(http, GATEWAYS, 1, resourceVersion=gw["metadata"]["resourceVersion"])
    assert error["type"] == "ERROR"
    assert (error["object"]["code"], error["object"]["reason"]) == (410, "Expired")
    for i in range(60):  # the history window (50 events) also compacts
        await call(http, "PATCH", f"{GATEWAYS}/gw", {"spec": {"n": i}}, headers=MERGE)
    (error,) = await events(http, GATEWAYS, 1, resourceVersion=str(api.store.rv - 55))
    assert error["object"]["code"] == 410


async def test_bookmarks_and_timeout(api: FakeKubeApiServer, http: aiohttp.ClientSession) -> None:
    rv = str(api.store.rv)
    await call(http, "POST", SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}})
    got = await events(http, GATEWAYS, 100, resourceVersion=rv, allowWatchBookmarks="true", timeoutSeconds="1")
    assert 5 <= len(got) <= 11  # a bookmark every 0.1 s, then the watch ends at its timeout
    assert {e["type"] for e in got} == {"BOOKMARK"}
    assert got[0]["object"]["metadata"]["resourceVersion"] == str(api.store.rv)
    assert await events(http, GATEWAYS, 100, resourceVersion=rv, timeoutSeconds="1") == []  # not asked for


async def test_restart_drops_watches_and_may_lose_state(api: FakeKubeApiServer, http: aiohttp.ClientSession) -> None:
    _, gw = await call(http, "POST", GATEWAYS, gateway())
    watch = asyncio.create_task(events(http, GATEWAYS, 10, resourceVersion=gw["metadata"]["resourceVersion"]))
    await asyncio.sleep(0.05)
    await api.restart(downtime=0.05)
    with pytest.raises(aiohttp.ClientPayloadError):
        await watch
    status, _ = await call(http, "GET", f"{GATEWAYS}/gw")
    assert status == 200
    await api.restart(keep_state=False)
    status, _ = await call(http, "GET", f"{GATEWAYS}/gw")
    assert status == 404
    (error,) = await events(http, GATEWAYS, 1, resourceVersion=gw["metadata"]["resourceVersion"])
    assert error["object"]["code"] == 410


async def test_faults_and_counters(api: FakeKubeApiServer, http: aiohttp.ClientSession) -> None:
    api.inject_fault(500, count=2, verb="list", plural="services")
    api.inject_fault(409, count=1, verb="create")
    statuses = [(await call(http, "GET", SERVICES))[0] for _ in range(3)]
    assert statuses == [500, 500, 200]
    status, body = await call(http, "POST", GATEWAYS, gateway())
    assert (status, body["reason"]) == (409, "Conflict")
    assert (await call(http, "POST", GATEWAYS, gateway()))[0] == 201
    assert api.requests["list"] == 3
    assert api.requests["create"] == 2
    assert api.requests_by_resource[("list", "services")] == 3


# ------------------------------------------------------------------------------ the real client library


@pytest.fixture
async def library(api: FakeKubeApiServer, tmp_path: Path) -> AsyncIterator[k8s.ApiClient]:
    configuration = type.__call__(k8s.Configuration)
    await k8s_config.load_kube_config(
        config_file=str(api.write_kubeconfig(tmp_path / "kubeconfig")), client_configuration=configuration
    )
    async with k8s.ApiClient(configuration) as client:
        yield client


async def test_library_typed_core_api(library: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(library)
    body = k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name="web"), spec=k8s.V1ServiceSpec(ports=[k8s.V1ServicePort(port=80)])
    )
    created = await core.create_namespaced_service("default", body)
    assert created.metadata.generation == 1
    services = await core.list_namespaced_service("default")
    assert [s.metadata.name for s in services.items] == ["web"]
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_service("default", body)
    assert err.value.status == 409
    namespaces = await core.list_namespace()
    assert {"default", "kube-system"} <= {n.metadata.name for n in namespaces.items}


async def test_library_custom_objects_and_status(library: k8s.ApiClient) -> None:
    custom = k8s.CustomObjectsApi(library)
    await custom.create_namespaced_custom_object(GW, "v1", "default", "gateways", gateway())
    gw = await custom.get_namespaced_custom_object(GW, "v1", "default", "gateways", "gw")
    gw["status"] = {"conditions": [{"type": "Accepted", "status": "True"}]}
    written = await custom.replace_namespaced_custom_object_status(GW, "v1", "default", "gateways", "gw", gw)
    assert written["status"]["conditions"][0]["type"] == "Accepted"
    with pytest.raises(ApiException) as err:  # gw's resourceVersion is stale now
        await custom.replace_namespaced_custom_object_status(GW, "v1", "default", "gateways", "gw", gw)
    assert err.value.status == 409


async def test_library_leases(library: k8s.ApiClient) -> None:
    leases = k8s.CoordinationV1Api(library)
    spec = k8s.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15)
    lease = await leases.create_namespaced_lease(
        "default", k8s.V1Lease(metadata=k8s.V1ObjectMeta(name="stackway-controller"), spec=spec)
    )
    lease.spec.holder_identity = "b"
    taken = await leases.replace_namespaced_lease("stackway-controller", "default", lease)
    assert taken.spec.holder_identity == "b"
    lease.spec.holder_identity = "c"  # a replica that read before b took it
    with pytest.raises(ApiException) as err:
        await leases.replace_namespaced_lease("stackway-controller", "default", lease)
    assert err.value.status == 409


async def test_library_watch_and_410(api: FakeKubeApiServer, library: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(library)
    listed = await core.list_namespaced_config_map("default")
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}})
    async with k8s_watch.Watch() as watch:
        stream = watch.stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=1,
        )
        async for event in stream:
            assert event["type"] == "ADDED"
            assert event["object"].data == {"a": "1"}
            break
    api.compact()
    async with k8s_watch.Watch() as watch:
        stream = watch.stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=1,
        )
        with pytest.raises(ApiException) as err:
            async for _event in stream:
                pass
    assert err.value.status == 410
