"""Shared pieces of the load-balancer tests: Services and Nodes as the API server would hold them, an
actuator on the test bed (optionally through fault proxies), and a leak counter that asks the real APIs."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackway.openstack.clients.loadbalancer import OctaviaClient
from stackway.openstack.clients.network import NeutronClient
from stackway.openstack.loadbalancer import names
from stackway.openstack.loadbalancer.actuator import Actuator, Timing
from stackway.openstack.loadbalancer.config import LBConfig
from stackway.openstack.retry import Backoff
from stackway.resources.core import Node, Service
from tests.openstack.conftest import OpenStackTestbed

FAST = Timing(
    active_timeout=60.0,
    poll=Backoff(initial=0.1, factor=1.5, cap=1.0, jitter=0.1),
    retry=Backoff(initial=0.1, factor=2.0, cap=1.0),
    attempts=8,
)


def unique_cluster() -> str:
    """Each test its own cluster name, so LB names never collide across tests or earlier runs."""
    return f"t{uuid.uuid4().hex[:8]}"


def service_body(
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {
            "type": "LoadBalancer",
            "ports": ports or [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
            **spec,
        },
    }


def service(name: str, **kwargs: Any) -> Service:
    return Service.model_validate(service_body(name, **kwargs))


def node_body(name: str, address: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"providerID": f"openstack:///{uuid.uuid5(uuid.NAMESPACE_DNS, name)}"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": address}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def node(name: str, address: str, **labels: str) -> Node:
    return Node.model_validate(node_body(name, address, **labels))


@dataclass(frozen=True)
class Cloud:
    """IDs the planner's config needs, read from the test bed once."""

    subnet_id: str
    floating_network_id: str

    def config(self, cluster: str, **kwargs: Any) -> LBConfig:
        """Serial API calls by default: this Octavia release's fully-populated create marks the LB ACTIVE but
        leaves its children PENDING_CREATE (test_fully_populated_create_is_verified shows it)."""
        kwargs.setdefault("serial_api_calls", True)
        return LBConfig(
            cluster_name=cluster, subnet_id=self.subnet_id, floating_network_id=self.floating_network_id, **kwargs
        )


def cloud_ids(testbed: OpenStackTestbed) -> Cloud:
    conn = testbed.connect()
    subnet = conn.network.find_subnet(testbed.private_subnet)
    network = conn.network.find_network(testbed.external_network)
    assert subnet is not None
    assert network is not None
    return Cloud(subnet.id, network.id)


def actuator(testbed: OpenStackTestbed, clouds_yaml: Path | None = None, **kwargs: Any) -> Actuator:
    conn = testbed.connect(clouds_yaml=clouds_yaml)
    return Actuator(OctaviaClient(conn.load_balancer), NeutronClient(conn.network), timing=FAST, **kwargs)


@dataclass(frozen=True)
class Leaks:
    load_balancers: list[str]
    floating_ips: list[str]
    vip_ports: list[str]

    @property
    def total(self) -> int:
        return len(self.load_balancers) + len(self.floating_ips) + len(self.vip_ports)


def leaks(testbed: OpenStackTestbed, cluster: str) -> Leaks:
    """Everything of ``cluster`` still in Octavia/Neutron: LBs, floating IPs stackway made, VIP ports of
    LBs that no longer exist. After a Service is deleted all three must be empty."""
    conn = testbed.connect()
    octavia = OctaviaClient(conn.load_balancer)
    neutron = NeutronClient(conn.network)
    prefix = f"{names.LB_PREFIX}{cluster}_"
    lbs = [lb for lb in octavia.list_load_balancers() if str(lb.get("name", "")).startswith(prefix)]
    fips = [
        f["id"]
        for f in neutron.list_floating_ips()
        if str(f.get("description", "")).startswith(names.FIP_DESCRIPTION_PREFIX)
        and f"from cluster {cluster}" in str(f.get("description"))
    ]
    live_lb_ids = {lb["id"] for lb in octavia.list_load_balancers()}
    ports = [
        p.id
        for p in conn.network.ports(device_owner="Octavia")
        if p.name.startswith("octavia-lb-") and p.name.removeprefix("octavia-lb-") not in live_lb_ids
    ]
    return Leaks([lb["id"] for lb in lbs], fips, ports)


def octavia_sql(testbed: OpenStackTestbed, statement: str) -> None:
    """Change Octavia's own state the way a failed amphora would (there is no API to put an LB in ERROR)."""
    cnf = testbed.base_dir / "etc" / "mysql" / "my.cnf"
    subprocess.run(["mariadb", f"--defaults-file={cnf}", "octavia", "-e", statement], check=True, timeout=30)
