"""The load-balancer planner and differ: OCCM's rules, bad annotations named, minimal steps."""

from __future__ import annotations

from typing import Any

import pytest

from stackway.openstack.loadbalancer import annotations as ann
from stackway.openstack.loadbalancer import names
from stackway.openstack.loadbalancer.config import LBConfig
from stackway.openstack.loadbalancer.diff import Observed, ObservedPool, steps
from stackway.openstack.loadbalancer.plan import plan
from stackway.resources.core import Node, Service

CONFIG = LBConfig(cluster_name="prod", subnet_id="sub-1", floating_network_id="ext-1")


def service(annotations: dict[str, str] | None = None, **spec: Any) -> Service:
    body: dict[str, Any] = {
        "type": "LoadBalancer",
        "ports": [
            {"name": "http", "port": 80, "nodePort": 30080},
            {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
        ],
    }
    body.update(spec)
    return Service.model_validate(
        {"metadata": {"name": "web", "namespace": "shop", "annotations": annotations or {}}, "spec": body}
    )


def node(name: str, ip: str, **labels: str) -> Node:
    return Node.model_validate(
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {"providerID": f"openstack:///{name}-uuid"},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }
    )


NODES = [
    node("n2", "10.0.0.2"),
    node("n1", "10.0.0.1"),
    node("n3", "10.0.0.3", **{"node.kubernetes.io/exclude-from-external-load-balancers": ""}),
]


def test_names_are_occms_and_round_trip() -> None:
    lb = names.lb_name("prod", "shop", "web")
    assert lb == "kube_service_prod_shop_web"
    assert names.listener_name(1, lb) == "listener_1_kube_service_prod_shop_web"
    assert names.service_of(lb, "prod") == ("shop", "web")
    assert names.service_of(lb, "other") is None
    assert names.owns_child(names.pool_name(0, lb), lb)
    assert not names.owns_child("listener_0_kube_service_prod_shop_webx", lb)


def test_plan_one_listener_per_port_members_on_node_ports() -> None:
    spec = plan(service(), NODES, CONFIG).spec
    assert spec is not None
    assert spec.name == "kube_service_prod_shop_web"
    assert [(li.protocol, li.protocol_port, li.pool.protocol) for li in spec.listeners] == [
        ("TCP", 80, "TCP"),
        ("UDP", 53, "UDP"),
    ]
    members = spec.listeners[0].pool.members
    assert [(m.name, m.address, m.protocol_port) for m in members] == [
        ("n1", "10.0.0.1", 30080),
        ("n2", "10.0.0.2", 30080),
    ]
    assert spec.floating_ip.wanted
    assert spec.floating_ip.network_id == "ext-1"
    body = spec.create_body()
    assert body["vip_subnet_id"] == "sub-1"
    assert body["listeners"][1]["default_pool"]["members"][0]["protocol_port"] == 30053


def test_annotations_shape_listeners_pools_and_monitors() -> None:
    spec = plan(
        service(
            {
                ann.LB_METHOD: "least_connections",
                ann.CONNECTION_LIMIT: "100",
                ann.TIMEOUT_CLIENT_DATA: "60000",
                ann.ENABLE_HEALTH_MONITOR: "true",
                ann.HM_DELAY: "7",
                ann.NODE_SELECTOR: "pool=edge",
                ann.INTERNAL: "true",
            },
            loadBalancerSourceRanges=["192.168.0.0/16", "10.0.0.0/8"],
        ),
        [node("a", "10.0.0.5", pool="edge"), node("b", "10.0.0.6", pool="core")],
        CONFIG,
    ).spec
    assert spec is not None
    tcp, udp = spec.listeners
    assert tcp.connection_limit == 100
    assert tcp.timeout_client_data == 60000
    assert tcp.allowed_cidrs == ("10.0.0.0/8", "192.168.0.0/16")
    assert tcp.pool.lb_algorithm == "LEAST_CONNECTIONS"
    assert [m.name for m in tcp.pool.members] == ["a"]
    assert tcp.pool.monitor is not None
    assert tcp.pool.monitor.type == "TCP"
    assert tcp.pool.monitor.delay == 7
    assert udp.pool.monitor is not None
    assert udp.pool.monitor.type == "UDP-CONNECT"
    assert not spec.floating_ip.wanted


def test_local_traffic_policy_monitors_health_check_node_port() -> None:
    svc = service({ann.ENABLE_HEALTH_MONITOR: "true"}, externalTrafficPolicy="Local", healthCheckNodePort=32000)
    spec = plan(svc, NODES, CONFIG).spec
    assert spec is not None
    monitor = spec.listeners[0].pool.monitor
    assert monitor is not None
    assert (monitor.type, monitor.url_path, monitor.http_method) == ("HTTP", "/healthz", "GET")
    assert {m.monitor_port for m in spec.listeners[0].pool.members} == {32000}


def test_proxy_protocol_and_x_forwarded_for() -> None:
    svc = service({ann.PROXY_PROTOCOL: "v2"}, ports=[{"port": 443, "nodePort": 30443}])
    spec = plan(svc, NODES, CONFIG).spec
    assert spec is not None
    assert spec.listeners[0].pool.protocol == "PROXYV2"
    svc = service({ann.X_FORWARDED_FOR: "true"}, ports=[{"port": 80, "nodePort": 30080}])
    spec = plan(svc, NODES, CONFIG).spec
    assert spec is not None
    assert (spec.listeners[0].protocol, dict(spec.listeners[0].insert_headers)) == ("HTTP", {"X-Forwarded-For": "true"})


@pytest.mark.parametrize(
    ("annotations", "named"),
    [
        ({ann.LB_METHOD: "FASTEST"}, ann.LB_METHOD),
        ({ann.CONNECTION_LIMIT: "lots"}, ann.CONNECTION_LIMIT),
        ({ann.HM_DELAY: "2", ann.HM_TIMEOUT: "5"}, ann.HM_TIMEOUT),
        ({ann.KEEP_FLOATINGIP: "maybe"}, ann.KEEP_FLOATINGIP),
        ({ann.PROXY_PROTOCOL: "true"}, ann.PROXY_PROTOCOL),  # the UDP port cannot carry PROXY
        ({ann.NODE_SELECTOR: "=x"}, ann.NODE_SELECTOR),
        ({ann.P + "class": "gold"}, ann.P + "class"),
    ],
)
def test_bad_annotations_stop_the_plan_and_are_named(annotations: dict[str, str], named: str) -> None:
    result = plan(service(annotations), NODES, CONFIG)
    assert result.spec is None
    assert named in {p.annotation for p in result.problems}


def test_missing_node_port_and_bad_source_range_are_named() -> None:
    result = plan(service(ports=[{"port": 80}], loadBalancerSourceRanges=["nope"]), NODES, CONFIG)
    assert {p.annotation for p in result.problems} == {"spec.ports[0].nodePort", "spec.loadBalancerSourceRanges[0]"}


def test_no_vip_subnet_is_a_problem() -> None:
    result = plan(service(), NODES, LBConfig())
    assert [p.annotation for p in result.problems] == [ann.SUBNET_ID]


# ---- diff -------------------------------------------------------------------------------------------


def observed_from(spec_body: dict[str, Any], lb_id: str = "lb") -> Observed:
    """What Octavia reports after a fully-populated create of ``spec_body``."""
    listeners, pools = [], []
    for i, listener in enumerate(spec_body["listeners"]):
        pool = listener["default_pool"]
        pool_id = f"pool-{i}"
        monitor = pool.get("healthmonitor")
        listeners.append(
            {
                **{k: v for k, v in listener.items() if k != "default_pool"},
                "id": f"l-{i}",
                "default_pool_id": pool_id,
                "allowed_cidrs": listener.get("allowed_cidrs"),
                "insert_headers": listener.get("insert_headers", {}),
                "timeout_client_data": 50000,
            }
        )
        members = tuple(
            {**m, "id": f"m-{i}-{j}", "subnet_id": m.get("subnet_id")} for j, m in enumerate(pool["members"])
        )
        pools.append(
            ObservedPool(
                {k: v for k, v in pool.items() if k not in ("members", "healthmonitor")} | {"id": pool_id},
                members,
                {**monitor, "id": f"hm-{i}"} if monitor else None,
            )
        )
    lb = {k: v for k, v in spec_body.items() if k != "listeners"} | {"id": lb_id, "provisioning_status": "ACTIVE"}
    return Observed(lb, tuple(listeners), tuple(pools))


def test_nothing_to_do_when_octavia_matches() -> None:
    spec = plan(service({ann.ENABLE_HEALTH_MONITOR: "true"}), NODES, CONFIG).spec
    assert spec is not None
    assert steps(spec, observed_from(spec.create_body())) == []


def test_new_lb_is_one_fully_populated_create() -> None:
    spec = plan(service(), NODES, CONFIG).spec
    assert spec is not None
    (step,) = steps(spec, None)
    assert step.action == "create_load_balancer"
    assert len(step.body["listeners"]) == 2


def test_node_joining_is_one_batch_member_update_per_pool() -> None:
    before = plan(service(), NODES, CONFIG).spec
    after = plan(service(), [*NODES, node("n4", "10.0.0.4")], CONFIG).spec
    assert before is not None
    assert after is not None
    todo = steps(after, observed_from(before.create_body()))
    assert [(s.action, s.target) for s in todo] == [("replace_members", "pool-0"), ("replace_members", "pool-1")]
    assert len(todo[0].body["members"]) == 3


def test_changed_options_update_in_place_and_new_port_adds_listener() -> None:
    before = plan(service(), NODES, CONFIG).spec
    svc = service(
        {ann.CONNECTION_LIMIT: "10", ann.ENABLE_HEALTH_MONITOR: "true"},
        ports=[{"port": 80, "nodePort": 30080}, {"port": 8443, "nodePort": 30443}],
    )
    after = plan(svc, NODES, CONFIG).spec
    assert before is not None
    assert after is not None
    todo = [(s.action, s.name) for s in steps(after, observed_from(before.create_body()))]
    lb = after.name
    assert todo == [
        ("update_listener", f"listener_0_{lb}"),
        ("create_health_monitor", f"monitor_0_{lb}"),
        ("delete_listener", f"listener_1_{lb}"),
        ("delete_pool", f"pool_1_{lb}"),
        ("create_listener", f"listener_1_{lb}"),
    ]


def test_foreign_listeners_on_a_shared_lb_are_left_alone() -> None:
    spec = plan(service({ann.LOAD_BALANCER_ID: "lb"}), NODES, CONFIG).spec
    assert spec is not None
    other = plan(service(), NODES, LBConfig(cluster_name="prod", subnet_id="sub-1")).spec
    assert other is not None
    observed = observed_from(other.create_body() | {"name": "someone-elses-lb", "tags": []})
    observed = Observed(
        observed.lb,
        tuple({**li, "name": li["name"].replace("shop_web", "shop_api")} for li in observed.listeners),
        observed.pools,
    )
    todo = [(s.action, s.name) for s in steps(spec, observed)]
    assert todo[0] == ("update_load_balancer", "someone-elses-lb")
    assert not any(action.startswith("delete") for action, _ in todo)
