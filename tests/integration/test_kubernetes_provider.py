"""KubernetesProvider against the fake API server, through kubernetes_asyncio and a kubeconfig.

Each test drives the failure a real cluster produces (a restarting API server, compaction, a missing
CRD, 500s) and checks the one thing that matters: the delivered state ends equal to what the API holds,
with as few lists and callbacks as the situation allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.kube_apiserver import FakeKubeApiServer
from tests.fakes.kube_semantics import DEFAULT_RESOURCES

from stackway.providers.files.watcher import ProviderState
from stackway.providers.kubernetes import DEFAULT_KINDS, KubernetesProvider
from stackway.providers.kubernetes.watch import Backoff
from stackway.resources.raw import ObjectKey

GW = "gateway.networking.k8s.io"


def service(name: str, port: int = 80, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"port": port}]},
    }


def route(name: str, host: str = "a.example") -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hostnames": [host], "parentRefs": [{"name": "gw"}]},
    }


def svc_key(name: str, namespace: str = "default") -> ObjectKey:
    return ObjectKey("", "Service", namespace, name)


class Recorder:
    """on_change that keeps every state and lets a test wait for one that satisfies a condition."""

    def __init__(self) -> None:
        self.states: list[ProviderState] = []
        self._event = asyncio.Event()

    async def __call__(self, state: ProviderState) -> None:
        self.states.append(state)
        self._event.set()

    @property
    def last(self) -> ProviderState:
        return self.states[-1]

    async def wait_for(self, condition: Callable[[ProviderState], bool], within: float = 5.0) -> ProviderState:
        deadline = time.monotonic() + within
        while not (self.states and condition(self.last)):
            self._event.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no state satisfied the condition; last: {self.states[-1:]}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), left)
        return self.last


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def api() -> AsyncIterator[FakeKubeApiServer]:
    async with FakeKubeApiServer(bookmark_interval=0.2) as server:
        yield server


class Running:
    def __init__(self, provider: KubernetesProvider, recorder: Recorder, task: asyncio.Task[None]) -> None:
        self.provider, self.recorder, self.task = provider, recorder, task


@pytest.fixture
async def start(api: FakeKubeApiServer, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start a provider (from a kubeconfig written for the fake) and run it until the test ends."""
    running: list[Running] = []

    async def _start(**options: Any) -> Running:
        recorder = Recorder()
        provider = KubernetesProvider(
            recorder,
            kubeconfig=api.write_kubeconfig(tmp_path / "kubeconfig"),
            debounce=0.02,
            backoff_initial_s=0.05,
            backoff_max_s=0.4,
            missing_retry_s=0.3,
            **options,
        )
        await provider.start(sync_timeout_s=10)
        run = Running(provider, recorder, asyncio.create_task(provider.run()))
        running.append(run)
        return run

    yield _start
    for run in running:
        run.provider.stop()
        await asyncio.wait_for(run.task, 5)


async def test_initial_list_delivers_every_kind(api: FakeKubeApiServer, start: Callable[..., Any]) -> None:
    api.create({"apiVersion": f"{GW}/v1", "kind": "GatewayClass", "metadata": {"name": "sw"}, "spec": {}})
    api.create({"apiVersion": f"{GW}/v1", "kind": "Gateway", "metadata": {"name": "gw"}, "spec": {}})
    api.create(route("r1"))
    api.create({"apiVersion": f"{GW}/v1", "kind": "GRPCRoute", "metadata": {"name": "g1"}, "spec": {}})
    api.create({"apiVersion": f"{GW}/v1", "kind": "TLSRoute", "metadata": {"name": "t1"}, "spec": {}})
    api.create({"apiVersion": f"{GW}/v1", "kind": "BackendTLSPolicy", "metadata": {"name": "b1"}, "spec": {}})
    api.create({"apiVersion": f"{GW}/v1beta1", "kind": "ReferenceGrant", "metadata": {"name": "rg"}, "spec": {}})
    api.create({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"}, "spec": {}})
    api.create({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "c"}, "spec": {}})
    api.create(service("web"))
    api.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}, "type": "kubernetes.io/tls"})
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "b"}})
    api.create(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"]}],
        }
    )
    run = await start()
    state = run.provider.snapshot()
    assert state.generation == 1
    assert run.recorder.states == [state]
    kinds = {(k.group, k.kind) for k in state.objects}
    assert kinds == {(k.group, k.kind) for k in DEFAULT_KINDS}
    assert ObjectKey("", "Namespace", "", "kube-system") in state.objects
    web = state.objects[svc_key("web")].body
    # a built-in list sends kind/apiVersion once; the provider puts them back on each object
    assert (web["apiVersion"], web["kind"]) == ("v1", "Service")
    assert "managedFields" not in web["metadata"]
    assert web["metadata"]["uid"]
    assert state.objects[ObjectKey(GW, "ReferenceGrant", "default", "rg")].body["apiVersion"] == f"{GW}/v1beta1"
    assert state.problems == ()


async def test_create_update_delete_reach_on_change(api: FakeKubeApiServer, start: Callable[..., Any]) -> None:
    run = await start()
    api.create(service("web"))
    await run.recorder.wait_for(lambda s: svc_key("web") in s.objects)
    api.apply(service("web", port=8080))
    state = await run.recorder.wait_for(lambda s: s.objects[svc_key("web")].body["spec"]["ports"][0]["port"] == 8080)
    assert state.objects[svc_key("web")].body["metadata"]["generation"] == 2
    api.delete("v1", "Service", "web")
    await run.recorder.wait_for(lambda s: svc_key("web") not in s.objects)
    generations = [s.generation for s in run.recorder.states]
    assert generations == list(range(1, len(generations) + 1))


async def test_write_that_changes_nothing_calls_nothing(api: FakeKubeApiServer, start: Callable[..., Any]) -> None:
    api.create(service("web"))
    run = await start()
    before = len(run.recorder.states)
    touched = api.touch("v1", "Service", "web")  # a MODIFIED event: only resourceVersion and managedFields moved
    services = next(k for k in DEFAULT_KINDS if k.kind == "Service")
    await until(lambda: run.provider.resource_versions[services] == touched["metadata"]["resourceVersion"])
    await asyncio.sleep(0.15)  # well past the hold-off
    assert len(run.recorder.states) == before
    # the event was applied all the same: the next delivery carries the fresh resourceVersion
    api.create(service("other"))
    state = await run.recorder.wait_for(lambda s: svc_key("other") in s.objects)
    assert len(run.recorder.states) == before + 1
    assert state.objects[svc_key("web")].body["metadata"]["resourceVersion"] == touched["metadata"]["resourceVersion"]


async def test_burst_is_coalesced(api: FakeKubeApiServer, start: Callable[..., Any]) -> None:
    run = await start()
    before = len(run.recorder.states)
    for i in range(50):
        api.create(service(f"s{i}"))
    await run.recorder.wait_for(lambda s: all(svc_key(f"s{i}") in s.objects for i in range(50)))
    assert len(run.recorder.states) - before <= 3


async def test_restart_mid_watch_resumes_without_relisting(api: FakeKubeApiServer, start: Callable[..., Any]) -> None:
    api.create(service("keep"))
    api.create(service("gone"))
    run = await start()
    lists = api.requests["list"]
    watches = api.requests["watch"]
    restarting = asyncio.create_task(api.restart(downtime=0.5))
    await asyncio.sleep(0.1)  # down now: what changes meanwhile must arrive after the watch resumes
    api.store.create(api.store.resource("", "v1", "services"), "default", service("new"))
    api.store.delete(api.store.resource("", "v1", "services"), "default", "gone")
    api.store.update(api.store.resource("", "v1", "services"), "default", "keep", service("keep", port=81))
    await restarting
    state = await run.recorder.wait_for(lambda s: svc_key("new") in s.objects and svc_key("gone") not in s.objects)
    await run.recorder.wait_for(lambda s: s.objects[svc_key("keep")].body["spec"]["ports"][0]["port"] == 81)
    await until(lambda: api.open_watches == len(DEFAULT_KINDS))  # every kind is watching again
    assert api.requests["list"] == lists, "resumed from its resourceVersion; no relist was needed"
    assert api.requests["watch"] > watches
    assert {k.name for k in state.objects if k.kind == "Service"} == {"keep", "new"}


async def test_compaction_gives_410_and_a_relist_with_the_right_state(
    api: FakeKubeApiServer, start: Callable[..., Any]
) -> None:
    for name in ("a", "b", "c"):
        api.create(route(name))
    run = await start()
    routes = next(k for k in DEFAULT_KINDS if k.kind == "HTTPRoute")
    lists = api.requests_by_resource[("list", "httproutes")]
    # all in one tick: the watches are cut, the cluster changes, history is compacted before anyone resumes
    api.drop_watches()
    api.delete(f"{GW}/v1", "HTTPRoute", "a")
    api.apply(route("b", host="b2.example"))
    api.create(route("d"))
    api.compact()
    state = await run.recorder.wait_for(
        lambda s: (
            {k.name for k in s.objects if k.kind == "HTTPRoute"} == {"b", "c", "d"}
            and s.objects[ObjectKey(GW, "HTTPRoute", "default", "b")].body["spec"]["hostnames"] == ["b2.example"]
        )
    )
    assert api.requests_by_resource[("list", "httproutes")] == lists + 1
    d_version = state.objects[ObjectKey(GW, "HTTPRoute", "default", "d")].body["metadata"]["resourceVersion"]
    assert int(run.provider.resource_versions[routes]) >= int(d_version)


async def test_bookmarks_keep_quiet_kinds_resumable(api: FakeKubeApiServer, start: Callable[..., Any]) -> None:
    run = await start()
    classes = next(k for k in DEFAULT_KINDS if k.kind == "IngressClass")
    listed_at = int(run.provider.resource_versions[classes])
    for i in range(5):  # other kinds move the global resourceVersion on; IngressClass sees no event
        api.create(service(f"s{i}"))
    await until(lambda: int(run.provider.resource_versions[classes]) >= api.store.rv)  # by bookmarks alone
    assert int(run.provider.resource_versions[classes]) > listed_at
    lists = api.requests_by_resource[("list", "ingressclasses")]
    api.drop_watches()
    api.compact()  # a resume from the list's resourceVersion would now be 410; from the bookmark's it is not
    api.create({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "x"}, "spec": {}})
    await run.recorder.wait_for(lambda s: ObjectKey("networking.k8s.io", "IngressClass", "", "x") in s.objects)
    assert api.requests_by_resource[("list", "ingressclasses")] == lists


async def test_missing_kind_is_a_problem_until_its_crd_appears(tmp_path: Path) -> None:
    without_grpc = tuple(r for r in DEFAULT_RESOURCES if r.plural != "grpcroutes")
    async with FakeKubeApiServer(without_grpc, bookmark_interval=0.2) as api:
        api.create(service("web"))
        recorder = Recorder()
        provider = KubernetesProvider(
            recorder, kubeconfig=api.write_kubeconfig(tmp_path / "kc"), debounce=0.02, missing_retry_s=0.2
        )
        task = asyncio.create_task(provider.run())
        try:
            state = await recorder.wait_for(lambda s: svc_key("web") in s.objects)
            assert [p.object for p in state.problems] == [f"GRPCRoute.{GW}"]
            assert "not served" in state.problems[0].message
            grpc = next(r for r in DEFAULT_RESOURCES if r.plural == "grpcroutes")
            api.store.add_resource(grpc)  # the CRD gets installed
            api.create({"apiVersion": f"{GW}/v1", "kind": "GRPCRoute", "metadata": {"name": "g"}, "spec": {}})
            state = await recorder.wait_for(lambda s: ObjectKey(GW, "GRPCRoute", "default", "g") in s.objects)
            assert state.problems == ()
        finally:
            provider.stop()
            await asyncio.wait_for(task, 5)


async def test_server_errors_back_off_and_recover(api: FakeKubeApiServer, start: Callable[..., Any]) -> None:
    api.create(service("web"))
    api.inject_fault(500, count=4, verb="list", plural="services")
    run = await start()  # waits for the services list to succeed after four 500s
    assert svc_key("web") in run.provider.snapshot().objects
    assert api.requests_by_resource[("list", "services")] == 5
    assert run.provider.snapshot().problems == ()
    # now watches fail for a while: five 500s in a row (a problem is shown), then a change gets through
    api.inject_fault(500, count=5, verb="watch", plural="services")
    api.drop_watches()
    await run.recorder.wait_for(lambda s: any(p.object == "Service" for p in s.problems))
    api.create(service("late"))
    state = await run.recorder.wait_for(lambda s: svc_key("late") in s.objects and not s.problems)
    assert svc_key("web") in state.objects


async def test_namespace_limits_namespaced_kinds(api: FakeKubeApiServer, start: Callable[..., Any]) -> None:
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    api.create(service("mine"))
    api.create(service("theirs", namespace="other"))
    run = await start(namespace="default")
    names = {k.name for k in run.provider.snapshot().objects if k.kind == "Service"}
    assert names == {"mine"}
    assert ObjectKey("", "Namespace", "", "other") in run.provider.snapshot().objects  # cluster-scoped


def test_backoff_grows_and_is_bounded() -> None:
    backoff = Backoff(0.1, 2.0)
    delays = [backoff.next() for _ in range(10)]
    assert all(0.05 <= d <= 2.0 for d in delays)
    assert max(delays[:2]) <= 0.2 < min(delays[6:])
    backoff.reset()
    assert backoff.next() <= 0.1
