"""50 LoadBalancer Services at once on the OpenStack test bed: time to all ACTIVE, time to all gone, and
OpenStack API calls per Service by operation.

Needs the test bed up (tests/openstack/testbed/up.sh). Octavia there uses the amphora provider with noop
drivers, so the times are Octavia's API + worker + database, not VM boots: they compare controllers, not
clouds. Run: .venv/bin/python benchmarks/loadbalancers.py [--services 50] [--workers 16]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections import Counter

from stackway.openstack.clients.calls import call_counts
from stackway.openstack.clients.connection import connect
from stackway.openstack.clients.loadbalancer import OctaviaClient
from stackway.openstack.clients.network import NeutronClient
from stackway.openstack.loadbalancer.actuator import Actuator
from stackway.openstack.loadbalancer.config import LBConfig
from stackway.openstack.loadbalancer.controller import LBStatus, LoadBalancerController
from stackway.openstack.retry import Backoff
from stackway.resources.core import Node, Service


def services(n: int) -> list[Service]:
    return [
        Service.model_validate(
            {
                "metadata": {"name": f"svc{i:03d}", "namespace": "bench"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30000 + i}]},
            }
        )
        for i in range(n)
    ]


def nodes(n: int) -> list[Node]:
    return [
        Node.model_validate(
            {
                "metadata": {"name": f"node{i}"},
                "status": {"addresses": [{"type": "InternalIP", "address": f"10.0.0.{50 + i}"}]},
            }
        )
        for i in range(n)
    ]


def per_service(before: dict, after: dict, count: int) -> Counter[str]:
    calls: Counter[str] = Counter()
    for key, value in after.items():
        delta = value - before.get(key, 0)
        if delta:
            calls[f"{key[0]} {key[1]}"] += delta
    return Counter({k: v / count for k, v in calls.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--cloud", default=os.environ.get("OS_CLOUD", "testbed-admin"))
    args = parser.parse_args()
    os.environ.setdefault("OS_CLIENT_CONFIG_FILE", "/tmp/stackway-testbed/clouds.yaml")

    conn = connect(args.cloud)
    neutron = NeutronClient(conn.network)
    subnet = neutron.list_subnets(name="private-subnet")[0]["id"]
    public = neutron.list_networks(name="public")[0]["id"]
    cluster = f"bench{uuid.uuid4().hex[:6]}"
    config = LBConfig(cluster_name=cluster, subnet_id=subnet, floating_network_id=public, serial_api_calls=True)
    actuator = Actuator(OctaviaClient(conn.load_balancer), neutron)
    # Poll like OCCM does (1 s, x1.2) so that the call counts compare; our default polls faster at first.
    object.__setattr__(actuator.timing, "poll", Backoff(initial=1.0, factor=1.2, cap=10.0, jitter=0.0))
    statuses: dict[tuple[str, str], LBStatus] = {}
    controller = LoadBalancerController(actuator, config, workers=args.workers, on_status=statuses.__setitem__)
    svcs, members = services(args.services), nodes(args.nodes)

    print(f"set-up: {args.services} Services x 1 port, {args.nodes} nodes, {args.workers} workers, serial API calls")
    print("        (the test bed's Octavia needs them), OCCM-like polling (1 s, x1.2), cluster name", cluster)
    before = call_counts()
    start = time.monotonic()
    controller.update(svcs, members)
    controller.wait_idle()
    created = time.monotonic() - start
    states = Counter(s.state for s in statuses.values())
    after_create = call_counts()
    print(f"create: all {args.services} ACTIVE with floating IPs in {created:.1f} s; states {dict(states)}")
    create_calls = per_service(before, after_create, args.services)
    print(f"  API calls per Service: {sum(create_calls.values()):.1f}")
    for op, n in sorted(create_calls.items()):
        print(f"    {op:45s} {n:5.2f}")

    start = time.monotonic()
    controller.update([], members)
    controller.wait_idle()
    deleted = time.monotonic() - start
    left = [lb for lb in actuator.octavia.list_load_balancers() if str(lb.get("name", "")).find(cluster) >= 0]
    print(f"delete: all gone in {deleted:.1f} s; LBs left: {len(left)}")
    delete_calls = per_service(after_create, call_counts(), args.services)
    print(f"  API calls per Service: {sum(delete_calls.values()):.1f}")
    for op, n in sorted(delete_calls.items()):
        print(f"    {op:45s} {n:5.2f}")
    controller.close()


if __name__ == "__main__":
    main()
