"""`stackway serve --os-cloud` against the Kubernetes API fake and the real Octavia/Neutron: the leader
creates the LB, writes status.loadBalancer, holds the cleanup finalizer, records Events, and a deleted
Service waits for its LB to go before it disappears."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stackway.cluster import ClusterConfig, ClusterService
from stackway.openstack.loadbalancer import annotations as ann
from stackway.openstack.loadbalancer.controller import FINALIZER
from tests.fakes.kube_apiserver import FakeKubeApiServer
from tests.fakes.kube_semantics import ApiError
from tests.integration.xds_fixtures import free_port
from tests.openstack.conftest import OpenStackTestbed
from tests.openstack.lbkit import actuator, cloud_ids, leaks, node_body, service_body, unique_cluster

pytestmark = pytest.mark.timeout(240)


async def until(check: Callable[[], Any], within: float = 90.0) -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out; last: {last}")


async def events(api: FakeKubeApiServer) -> list[dict[str, Any]]:
    url = f"{api.url}/api/v1/namespaces/default/events"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return list((await response.json())["items"])


async def test_serve_with_os_cloud(testbed: OpenStackTestbed, tmp_path: Path) -> None:
    testbed.require("octavia", "neutron")
    cloud = cloud_ids(testbed)
    cluster = unique_cluster()
    async with FakeKubeApiServer() as api:
        api.apply(service_body("web", ports=[{"port": 80, "protocol": "TCP", "nodePort": 30080}]))
        for name, ip in (("worker-1", "10.0.0.41"), ("worker-2", "10.0.0.42")):
            api.apply(node_body(name, ip))
        service = ClusterService(
            ClusterConfig(
                kubeconfig=api.write_kubeconfig(tmp_path / "kubeconfig"),
                address="127.0.0.1",
                admin=("127.0.0.1", free_port()),
                xds=("127.0.0.1", free_port()),
                log_level="warning",
                os_cloud=testbed.admin_cloud,
                load_balancers=cloud.config(cluster),
            )
        )
        await service.start()
        try:

            def web() -> dict[str, Any]:
                return dict(api.get("v1", "Service", "web"))

            def published() -> dict[str, Any] | None:
                obj = web()
                conditions = (obj.get("status") or {}).get("conditions") or [{}]
                return obj if conditions[0].get("reason") == "Active" else None

            obj = await until(published)
            (ingress,) = obj["status"]["loadBalancer"]["ingress"]
            assert FINALIZER in obj["metadata"]["finalizers"]
            (condition,) = obj["status"]["conditions"]
            assert (condition["type"], condition["status"], condition["reason"]) == (
                "LoadBalancerReady",
                "True",
                "Active",
            )
            act = actuator(testbed)
            lb = act.find(f"kube_service_{cluster}_default_web")
            assert lb is not None
            (fip,) = act.neutron.list_floating_ips(port_id=lb["vip_port_id"])
            assert ingress == {"ip": fip["floating_ip_address"], "ipMode": "VIP"}
            reasons = [e["reason"] for e in await events(api)]
            assert "EnsuredLoadBalancer" in reasons

            # A bad annotation: a Warning Event names it, the LB and the address stay.
            bad = service_body("web", annotations={ann.CONNECTION_LIMIT: "lots"}, ports=obj["spec"]["ports"])
            bad["metadata"]["finalizers"] = obj["metadata"]["finalizers"]
            api.apply(bad)

            async def warned() -> bool:
                return any(e["type"] == "Warning" and ann.CONNECTION_LIMIT in e["message"] for e in await events(api))

            deadline = time.monotonic() + 30
            while not await warned():
                assert time.monotonic() < deadline, await events(api)
                await asyncio.sleep(0.2)
            await until(lambda: web()["status"]["conditions"][0]["reason"] == "Invalid")
            assert web()["status"]["loadBalancer"]["ingress"] == [ingress]
            assert act.find(f"kube_service_{cluster}_default_web") is not None

            # Deleting the Service: the finalizer holds it until the LB, FIP and VIP port are gone.
            api.delete("v1", "Service", "web")
            assert web()["metadata"].get("deletionTimestamp")

            def gone() -> bool:
                try:
                    api.get("v1", "Service", "web")
                except ApiError as err:
                    return err.code == 404
                return False

            await until(gone)
            assert leaks(testbed, cluster).total == 0
            assert "DeletedLoadBalancer" in [e["reason"] for e in await events(api)]
        finally:
            await service.stop()
