"""`stackway serve` against the fake Kubernetes API, with a real Envoy connected over xDS, as the DaemonSet's
Envoys would be: objects applied through the API become traffic; edits and endpoint changes follow."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.fakes.kube_apiserver import FakeKubeApiServer
from tests.integration.xds_fixtures import free_port

from stackway.cluster import ClusterConfig, ClusterService
from stackway.dataplane.envoy import EnvoyProcess
from stackway.demo.echo import start_echo
from stackway.demo.manifests import gateway, gateway_class, http_route, service_with_endpoints

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(60)]


def objects(listen_port: int, backends: dict[str, int], route_to: str) -> list[dict[str, Any]]:
    docs = [
        gateway_class(),
        gateway("gw", "default", listen_port),
        http_route("app", "default", "gw", {route_to: 1}),
    ]
    for name, port in backends.items():
        docs += service_with_endpoints(name, "default", port)
    return docs


async def served_by(port: int) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as resp:
        return str(json.loads(await resp.text())["pod"]) if resp.status == 200 else f"HTTP {resp.status}"


async def eventually(port: int, expected: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    last = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, ValueError):
            last = await served_by(port)
            if last == expected:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"served by {last!r}, expected {expected!r}")


async def test_serve_programs_envoy_from_the_api_and_follows_edits(tmp_path: Path) -> None:
    echoes = [await start_echo("127.0.0.1", 0, f"{n}-0", "default", n) for n in ("blue", "green")]
    backends = {"blue": echoes[0].port, "green": echoes[1].port}
    listen = free_port()
    async with FakeKubeApiServer() as api:
        for doc in objects(listen, backends, "blue"):
            api.apply(doc)
        xds = ("127.0.0.1", free_port())
        service = ClusterService(
            ClusterConfig(
                kubeconfig=api.write_kubeconfig(tmp_path / "kubeconfig"),
                address="127.0.0.1",
                admin=("127.0.0.1", free_port()),
                xds=xds,
                log_level="warning",
            )
        )
        await service.start()
        envoy = EnvoyProcess("node-a", xds, delta=True)
        try:
            # ready before any Envoy connects: in a cluster the Envoys find the control plane through its
            # Service, which must not wait for them
            admin = service.config.admin
            async with aiohttp.ClientSession() as session, session.get(f"http://{admin[0]}:{admin[1]}/readyz") as r:
                assert r.status == 200, await r.text()
            await envoy.start()
            await eventually(listen, "blue-0")
            # an edit through the API re-points the route
            route = objects(listen, backends, "green")[2]
            api.apply(route)
            await eventually(listen, "green-0")
            # an endpoint change travels as an endpoints-only update
            updates_before = service.service.control.snapshot.versions
            extra = await start_echo("127.0.0.1", 0, "green-1", "default", "green")
            try:
                slice_ = objects(listen, {"green": extra.port}, "green")[4]
                api.apply(slice_)
                await eventually(listen, "green-1")
                after = service.service.control.snapshot.versions
                routes = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
                assert after[routes] == updates_before[routes]
            finally:
                await extra.close()
            # the status that will be written is what /api/status shows
            document = {d["kind"]: d for d in service.service.control.status_document()}
            conditions = document["HTTPRoute"]["status"]["parents"][0]["conditions"]
            assert {c["type"]: c["status"] for c in conditions} == {"Accepted": "True", "ResolvedRefs": "True"}
            assert service.service.cache.ready()
        finally:
            await envoy.stop()
            await service.stop()
            for echo in echoes:
                await echo.close()
