"""`stackway up DIR --os-cloud`: Services of type LoadBalancer in the directory get Octavia load balancers,
their statuses appear in /api/status, file edits follow through, and deleting the file cleans up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from stackway.openstack.loadbalancer import annotations as ann
from stackway.standalone import Standalone, StandaloneConfig
from tests.integration.xds_fixtures import free_port
from tests.openstack.conftest import OpenStackTestbed
from tests.openstack.lbkit import actuator, cloud_ids, leaks, node_body, service_body, unique_cluster

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(240)]


def write(path: Path, docs: list[dict[str, Any]]) -> None:
    tmp = path.with_name("." + path.name)
    tmp.write_text(yaml.safe_dump_all(docs))
    tmp.rename(path)


async def service_status(admin: str, name: str) -> dict[str, Any] | None:
    async with aiohttp.ClientSession() as session, session.get(f"{admin}/api/status") as response:
        body = await response.json()
    for obj in body["objects"]:
        if obj["kind"] == "Service" and obj["metadata"]["name"] == name:
            return dict(obj)
    return None


async def until(check: Callable[[], Any], within: float = 90.0) -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out; last: {last}")


async def test_up_with_os_cloud(testbed: OpenStackTestbed, tmp_path: Path) -> None:
    testbed.require("octavia", "neutron")
    cloud = cloud_ids(testbed)
    cluster = unique_cluster()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    nodes = [node_body("worker-1", "10.0.0.31"), node_body("worker-2", "10.0.0.32")]
    web = service_body("web", ports=[{"port": 80, "nodePort": 30080}])
    write(manifests / "app.yaml", [web, *nodes])
    admin = free_port()
    gateway = Standalone(
        StandaloneConfig(
            directory=manifests,
            address="127.0.0.1",
            admin=("127.0.0.1", admin),
            xds=("127.0.0.1", free_port()),
            envoy_admin=("127.0.0.1", free_port()),
            log_level="warning",
            os_cloud=testbed.admin_cloud,
            load_balancers=cloud.config(cluster),
        )
    )
    url = f"http://127.0.0.1:{admin}"
    act = actuator(testbed)
    lb_name = f"kube_service_{cluster}_default_web"
    await gateway.start()
    try:

        async def active() -> dict[str, Any] | None:
            status = await service_status(url, "web")
            ok = status and status["status"]["conditions"][0]["reason"] == "Active"
            return status if ok else None

        status = await until(active)
        (ingress,) = status["status"]["loadBalancer"]["ingress"]
        lb = act.find(lb_name)
        assert lb is not None
        assert status["loadBalancer"]["id"] == lb["id"]
        (fip,) = act.neutron.list_floating_ips(port_id=lb["vip_port_id"])
        assert ingress["ip"] == fip["floating_ip_address"]

        # A third node appears in the directory: the members follow.
        write(manifests / "app.yaml", [web, *nodes, node_body("worker-3", "10.0.0.33")])

        async def three_members() -> bool:
            observed = await asyncio.to_thread(act.observe, act.find(lb_name) or {})
            return bool(observed.pools) and len(observed.pools[0].members) == 3

        await until(three_members)

        # A bad annotation: the condition names it, the address stays.
        bad = service_body("web", annotations={ann.LB_METHOD: "FASTEST"}, ports=[{"port": 80, "nodePort": 30080}])
        write(manifests / "app.yaml", [bad, *nodes])

        async def invalid() -> dict[str, Any] | None:
            status = await service_status(url, "web")
            ok = status and status["status"]["conditions"][0]["reason"] == "Invalid"
            return status if ok else None

        status = await until(invalid)
        assert ann.LB_METHOD in status["status"]["conditions"][0]["message"]
        assert status["status"]["loadBalancer"]["ingress"] == [ingress]

        # A Service that no longer validates is a problem, not a deleted Service: its last good version
        # stays, and so do its LB and address.
        broken = service_body("web", ports=[{"port": "eighty", "nodePort": 30080}])
        write(manifests / "app.yaml", [broken, *nodes])

        async def reported() -> bool:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/api/status") as response:
                problems = (await response.json())["problems"]
            return any("spec.ports[0].port" in str(p.get("field")) for p in problems)

        await until(reported)
        await asyncio.sleep(2)  # time enough for a wrongful delete to start
        assert act.find(lb_name) is not None
        status = await service_status(url, "web")
        assert status is not None
        assert status["status"]["loadBalancer"]["ingress"] == [ingress]

        # The file goes: the LB, its floating IP and its VIP port go.
        (manifests / "app.yaml").unlink()

        async def gone() -> bool:
            return (await asyncio.to_thread(leaks, testbed, cluster)).total == 0

        await until(gone)

        async def unlisted() -> bool:
            return await service_status(url, "web") is None

        await until(unlisted, within=10)

        # Every OpenStack call and every reconcile is on /metrics.
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
            metrics = await response.text()
        for series in (
            'openstack_api_requests_total{operation="loadbalancer_create",service="load-balancer"}',
            'openstack_api_request_duration_seconds_count{operation="floating_ip_create",service="network"}',
            'cloudprovider_openstack_reconcile_total{operation="loadbalancer_delete"}',
            'stackway_loadbalancer_services{state="Active"}',
        ):
            assert series in metrics
    finally:
        await gateway.stop()
