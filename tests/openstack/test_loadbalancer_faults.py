"""Faults between stackway and the real Octavia/Neutron: every run must end with exactly one LB per Service,
its floating IP, and — after the Service is deleted — zero leaked LBs, floating IPs or VIP ports.

A fault proxy sits in front of each API (tests/openstack/faultproxy.py). ``drop_response`` is the nasty one:
the change happens in OpenStack but the client sees a reset, which is how duplicate LBs and leaked floating
IPs are born in controllers that simply retry.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from stackway.openstack.loadbalancer.plan import plan
from tests.openstack.conftest import OpenStackTestbed
from tests.openstack.faultproxy import Fault, FaultProxy
from tests.openstack.lbkit import (
    Cloud,
    actuator,
    cloud_ids,
    leaks,
    node,
    node_body,
    service,
    service_body,
    unique_cluster,
)

pytestmark = pytest.mark.timeout(300)

NODES = [node("worker-1", "10.0.0.21"), node("worker-2", "10.0.0.22")]
LB = r"/lbaas/loadbalancers$"
LB_ONE = r"/lbaas/loadbalancers/[0-9a-f-]+$"

FAULTS = {
    "409 on LB create": [("POST", LB, Fault.status(409, "Load Balancer is immutable"), 2)],
    "500 on LB create": [("POST", LB, Fault.status(500), 1)],
    "503 on listener create": [("POST", r"/lbaas/listeners$", Fault.status(503), 2)],
    "409 on member update": [("PUT", r"/members$", Fault.status(409, "Pool is immutable"), 3)],
    "reset while polling": [("GET", LB_ONE, Fault.reset(), 3)],
    "timeout on pool create": [("POST", r"/lbaas/pools$", Fault.hang(30), 1)],
    "LB created, answer lost": [("POST", LB, Fault.drop_response(), 1)],
    "listener created, answer lost": [("POST", r"/lbaas/listeners$", Fault.drop_response(), 1)],
    "floating IP created, answer lost": [("POST", r"/floatingips$", Fault.drop_response(), 1)],
    "503 on floating IP create": [("POST", r"/floatingips$", Fault.status(503), 2)],
    "409 and lost answer on delete": [
        ("DELETE", LB_ONE, Fault.status(409, "Invalid state PENDING_UPDATE"), 1),
        ("DELETE", LB_ONE, Fault.drop_response(), 1),
    ],
}


@pytest.fixture(scope="module")
def cloud(testbed: OpenStackTestbed) -> Cloud:
    testbed.require("octavia", "neutron")
    return cloud_ids(testbed)


@pytest.fixture
def proxied(
    testbed: OpenStackTestbed, fault_proxy: Callable[[str], FaultProxy], tmp_path: Path
) -> tuple[FaultProxy, FaultProxy, Path]:
    octavia, neutron = fault_proxy("load-balancer"), fault_proxy("network")
    clouds = testbed.clouds_with_overrides(
        tmp_path / "clouds.yaml", {"load-balancer": octavia.url, "network": neutron.url}, api_timeout=3
    )
    return octavia, neutron, clouds


@pytest.mark.parametrize("faults", FAULTS.values(), ids=FAULTS.keys())
def test_faults_end_with_one_lb_and_no_leaks(
    testbed: OpenStackTestbed,
    cloud: Cloud,
    proxied: tuple[FaultProxy, FaultProxy, Path],
    faults: list[tuple[str, str, Fault, int]],
) -> None:
    octavia, neutron, clouds = proxied
    cluster = unique_cluster()
    act = actuator(testbed, clouds)
    svc = service("shop", ports=[{"port": 80, "nodePort": 30080}, {"port": 443, "nodePort": 30443}])
    spec = plan(svc, NODES, cloud.config(cluster)).spec
    assert spec is not None
    ensure_faults = [f for f in faults if f[0] != "DELETE"]
    for method, path, fault, times in ensure_faults:
        (neutron if "floatingips" in path else octavia).inject(method, path, fault, times=times)

    result = act.ensure(spec)

    injected = sum(o.count() for o in (octavia, neutron))
    assert injected > 0
    direct = actuator(testbed)  # read the truth around the proxies
    (lb,) = direct.octavia.list_load_balancers(name=spec.name)
    assert lb["id"] == result.lb["id"]
    observed = direct.observe(lb)
    assert sorted(li["protocol_port"] for li in observed.listeners) == [80, 443]
    assert all(len(p.members) == 2 for p in observed.pools)
    assert len(observed.pools) == 2
    fips = direct.neutron.list_floating_ips(description=spec.floating_ip.description)
    assert [f["floating_ip_address"] for f in fips] == [result.address]
    assert fips[0]["port_id"] == lb["vip_port_id"]

    for method, path, fault, times in [f for f in faults if f[0] == "DELETE"]:
        octavia.inject(method, path, fault, times=times)
    act.delete(spec.name, spec.floating_ip)
    assert leaks(testbed, cluster).total == 0


def _write_manifests(directory: Path, services: list[dict]) -> None:
    directory.mkdir(exist_ok=True)
    docs = [*services, node_body("worker-1", "10.0.0.21"), node_body("worker-2", "10.0.0.22")]
    (directory / "cluster.yaml").write_text(yaml.safe_dump_all(docs))


def _lb_cli(args: list[str], clouds: Path, cloud: Cloud, cluster: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "stackway.cli",
        "lb",
        *args,
        "--os-cloud",
        "testbed-admin",
        "--cluster-name",
        cluster,
        *(
            ["--subnet-id", cloud.subnet_id, "--floating-network-id", cloud.floating_network_id, "--serial-api-calls"]
            if args[0] == "apply"
            else []
        ),
    ]


def test_controller_killed_mid_creation(
    testbed: OpenStackTestbed, cloud: Cloud, proxied: tuple[FaultProxy, FaultProxy, Path], tmp_path: Path
) -> None:
    """kill -9 while a listener create is in flight (the proxy still delivers it), then run again: the
    second run adopts what the first left, and deleting the Service leaves nothing behind."""
    octavia, _neutron, clouds = proxied
    cluster = unique_cluster()
    manifests = tmp_path / "manifests"
    _write_manifests(manifests, [service_body("shop", ports=[{"port": 80, "nodePort": 30080}])])
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds), "COLUMNS": "200"}
    octavia.inject("POST", r"/lbaas/listeners$", Fault.delay(3), times=1)
    first = subprocess.Popen(
        _lb_cli(["apply", str(manifests)], clouds, cloud, cluster), env=env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not octavia.calls("POST", r"/lbaas/listeners$") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert octavia.calls("POST", r"/lbaas/listeners$"), "the first run never got to the listener"
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    time.sleep(3.5)  # the delayed listener create still reaches Octavia

    second = subprocess.run(
        _lb_cli(["apply", str(manifests)], clouds, cloud, cluster),
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert second.returncode == 0, second.stdout.decode()[-2000:]
    direct = actuator(testbed)
    (lb,) = direct.octavia.list_load_balancers(name=f"kube_service_{cluster}_default_shop")
    observed = direct.observe(lb)
    assert [li["protocol_port"] for li in observed.listeners] == [80]
    assert len(observed.pools) == 1
    assert len(direct.neutron.list_floating_ips(port_id=lb["vip_port_id"])) == 1

    # The Service is deleted while no controller runs: the orphan collector finds and removes it.
    _write_manifests(manifests, [])
    gc = subprocess.run(
        _lb_cli(["gc", str(manifests)], clouds, cloud, cluster), env=env, capture_output=True, check=False
    )
    assert gc.returncode == 0, gc.stdout.decode()[-2000:]
    assert b"kube_service_" in gc.stdout
    assert leaks(testbed, cluster).total == 0
