"""LoadBalancer Services on the real Octavia + Neutron of the test bed: create, follow, adopt, delete."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stackway.openstack.clients.calls import call_counts
from stackway.openstack.loadbalancer import annotations as ann
from stackway.openstack.loadbalancer import names
from stackway.openstack.loadbalancer.actuator import Actuator, LoadBalancerError
from stackway.openstack.loadbalancer.controller import LBStatus, LoadBalancerController
from stackway.openstack.loadbalancer.orphans import collect, find_orphans
from stackway.openstack.loadbalancer.plan import plan
from stackway.openstack.loadbalancer.spec import FloatingIPSpec
from tests.openstack.conftest import OpenStackTestbed
from tests.openstack.lbkit import Cloud, actuator, cloud_ids, leaks, node, octavia_sql, service, unique_cluster

pytestmark = pytest.mark.timeout(300)

NODES = [node("worker-1", "10.0.0.11"), node("worker-2", "10.0.0.12")]


@pytest.fixture(scope="module")
def cloud(testbed: OpenStackTestbed) -> Cloud:
    testbed.require("octavia", "neutron")
    return cloud_ids(testbed)


@pytest.fixture
def cluster(testbed: OpenStackTestbed) -> Iterator[str]:
    """A fresh cluster name; whatever a failed test leaves behind is deleted (and the test fails on it)."""
    name = unique_cluster()
    yield name
    act = actuator(testbed)
    for lb in act.octavia.list_load_balancers():
        if str(lb.get("name", "")).startswith(f"{names.LB_PREFIX}{name}_"):
            act.delete(str(lb["name"]), FloatingIPSpec(wanted=False))


def run(controller: LoadBalancerController, services: list, nodes: list = NODES) -> None:
    controller.update(services, nodes)
    assert controller.wait_idle(timeout=120)


def writes(before: dict, after: dict) -> dict[str, float]:
    """Mutating Octavia/Neutron calls between two call_counts() readings, by operation."""
    out = {}
    for key, value in after.items():
        delta = value - before.get(key, 0)
        op = key[1]
        if delta and not op.endswith(("_get", "_list")):
            out[op] = delta
    return out


def test_service_lifecycle_on_octavia(testbed: OpenStackTestbed, cloud: Cloud, cluster: str) -> None:
    statuses: dict[tuple[str, str], LBStatus] = {}
    act = actuator(testbed)
    controller = LoadBalancerController(act, cloud.config(cluster), on_status=statuses.__setitem__)
    svc = service(
        "web",
        annotations={ann.ENABLE_HEALTH_MONITOR: "true"},
        ports=[{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP", "nodePort": 30053}],
    )
    key = ("default", "web")
    lb_name = f"kube_service_{cluster}_default_web"

    before = call_counts()
    run(controller, [svc])
    status = statuses[key]
    assert status.state == "Active", status.message
    # Serial calls: the LB, then each listener, pool, member set and monitor once; one floating IP.
    assert writes(before, call_counts()) == {
        "loadbalancer_create": 1,
        "listener_create": 2,
        "pool_create": 2,
        "member_batch_update": 2,
        "healthmonitor_create": 2,
        "floating_ip_create": 1,
    }

    lb = act.find(lb_name)
    assert lb is not None
    assert lb["tags"] == [lb_name]
    observed = act.observe(lb)
    assert sorted((li["name"], li["protocol"], li["protocol_port"]) for li in observed.listeners) == [
        (f"listener_0_{lb_name}", "TCP", 80),
        (f"listener_1_{lb_name}", "UDP", 53),
    ]
    for pool in observed.pools:
        assert sorted(m["address"] for m in pool.members) == ["10.0.0.11", "10.0.0.12"]
        assert pool.monitor is not None
    assert {p.monitor["type"] for p in observed.pools if p.monitor} == {"TCP", "UDP-CONNECT"}
    (fip,) = act.neutron.list_floating_ips(port_id=lb["vip_port_id"])
    assert fip["description"] == names.fip_description(cluster, "default", "web")
    assert status.ingress_ip == fip["floating_ip_address"]

    # Nothing changed: no call at all.
    before = call_counts()
    run(controller, [svc])
    assert call_counts() == before

    # A node joins: one batch member update per pool, nothing else.
    before = call_counts()
    run(controller, [svc], [*NODES, node("worker-3", "10.0.0.13")])
    assert writes(before, call_counts()) == {"member_batch_update": 2}
    for pool in act.observe(act.find(lb_name) or {}).pools:
        assert len(pool.members) == 3

    # An annotation changes: the listener is updated in place; the LB keeps its ID and address.
    svc2 = service(
        "web",
        annotations={ann.ENABLE_HEALTH_MONITOR: "true", ann.CONNECTION_LIMIT: "500"},
        ports=[{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP", "nodePort": 30053}],
        loadBalancerSourceRanges=["192.0.2.0/24"],
    )
    before = call_counts()
    run(controller, [svc2], [*NODES, node("worker-3", "10.0.0.13")])
    assert writes(before, call_counts()) == {"listener_update": 2}
    for listener in act.observe(act.find(lb_name) or {}).listeners:
        assert (listener["connection_limit"], listener["allowed_cidrs"]) == (500, ["192.0.2.0/24"])
    assert statuses[key].lb_id == lb["id"]
    assert statuses[key].ingress_ip == fip["floating_ip_address"]

    # A bad annotation: named in the status, the LB left exactly as it was.
    bad = service("web", annotations={ann.LB_METHOD: "FASTEST"}, ports=[{"port": 80, "nodePort": 30080}])
    before = call_counts()
    run(controller, [bad])
    assert statuses[key].state == "Invalid"
    assert ann.LB_METHOD in statuses[key].message
    assert statuses[key].ingress_ip == fip["floating_ip_address"]
    assert call_counts() == before

    # The Service goes: LB, floating IP and VIP port all go.
    run(controller, [])
    assert statuses[key].state == "Deleted"
    assert leaks(testbed, cluster).total == 0
    controller.close()


def test_existing_occm_load_balancer_is_adopted(testbed: OpenStackTestbed, cloud: Cloud, cluster: str) -> None:
    """A cluster moving from OCCM: its LB (same name, same tag) is completed in place, never duplicated."""
    config = cloud.config(cluster)
    spec = plan(service("api"), NODES, config).spec
    assert spec is not None
    act = actuator(testbed)
    created = act.octavia.create_load_balancer(
        {"name": spec.name, "tags": [spec.name], "vip_subnet_id": cloud.subnet_id, "listeners": []}
    )
    act.wait_active(created["id"], spec.name)

    before = call_counts()
    result = act.ensure(spec)
    assert result.lb["id"] == created["id"]
    assert "loadbalancer_create" not in writes(before, call_counts())
    # The description is brought in line; the tree is completed under the existing LB.
    assert [s.action for s in result.applied] == [
        "update_load_balancer",
        "create_listener",
        "create_pool",
        "replace_members",
    ]
    assert len(act.octavia.list_load_balancers(name=spec.name)) == 1
    act.delete(spec.name, spec.floating_ip)
    assert leaks(testbed, cluster).total == 0


def test_fully_populated_create_is_verified(testbed: OpenStackTestbed, cloud: Cloud, cluster: str) -> None:
    """One create call carries the whole tree. This Octavia release answers ACTIVE for the LB while its
    listeners and pools stay PENDING_CREATE; the actuator checks, names the fix, and the LB can be deleted."""
    act = actuator(testbed)
    spec = plan(service("full"), NODES, cloud.config(cluster, serial_api_calls=False)).spec
    assert spec is not None
    assert spec.create_body()["listeners"][0]["default_pool"]["members"]
    with pytest.raises(LoadBalancerError, match="--serial-api-calls"):
        act.ensure(spec)
    (lb,) = act.octavia.list_load_balancers(name=spec.name)
    assert lb["provisioning_status"] == "ACTIVE"
    act.delete(spec.name, spec.floating_ip)
    assert leaks(testbed, cluster).total == 0


def test_load_balancer_ip_and_keep_floatingip(testbed: OpenStackTestbed, cloud: Cloud, cluster: str) -> None:
    """spec.loadBalancerIP takes a user's floating IP, which is only detached on delete; keep-floatingip
    keeps one stackway made."""
    act = actuator(testbed)
    config = cloud.config(cluster)
    mine = act.neutron.create_floating_ip({"floating_network_id": cloud.floating_network_id, "description": "user"})
    try:
        svc = service("pinned", loadBalancerIP=mine["floating_ip_address"])
        spec = plan(svc, NODES, config).spec
        assert spec is not None
        result = act.ensure(spec)
        assert result.address == mine["floating_ip_address"]
        assert (
            act.neutron.list_floating_ips(floating_ip_address=result.address)[0]["port_id"] == result.lb["vip_port_id"]
        )
        act.delete(spec.name, spec.floating_ip)
        kept = act.neutron.list_floating_ips(floating_ip_address=mine["floating_ip_address"])
        assert len(kept) == 1
        assert kept[0]["port_id"] is None
    finally:
        act.neutron.delete_floating_ip(mine["id"])

    keep = plan(service("kept", annotations={ann.KEEP_FLOATINGIP: "true"}), NODES, config).spec
    assert keep is not None
    address = act.ensure(keep).address
    act.delete(keep.name, keep.floating_ip)
    (left,) = act.neutron.list_floating_ips(floating_ip_address=address)
    act.neutron.delete_floating_ip(left["id"])
    assert leaks(testbed, cluster).total == 0


def test_load_balancer_in_error_is_recreated(testbed: OpenStackTestbed, cloud: Cloud, cluster: str) -> None:
    act = actuator(testbed)
    spec = plan(service("broken"), NODES, cloud.config(cluster)).spec
    assert spec is not None
    first = act.ensure(spec)
    octavia_sql(testbed, f"UPDATE load_balancer SET provisioning_status='ERROR' WHERE id='{first.lb['id']}'")
    second = act.ensure(spec)
    assert second.lb["id"] != first.lb["id"]
    assert second.address == first.address  # the same floating IP, moved to the new VIP
    assert [lb["id"] for lb in act.octavia.list_load_balancers(name=spec.name)] == [second.lb["id"]]
    act.delete(spec.name, spec.floating_ip)
    assert leaks(testbed, cluster).total == 0


def test_shared_load_balancer(testbed: OpenStackTestbed, cloud: Cloud, cluster: str) -> None:
    """A second Service joins the first one's LB through load-balancer-id, and leaves only its listener."""
    act = actuator(testbed)
    config = cloud.config(cluster)
    owner = plan(service("owner"), NODES, config).spec
    assert owner is not None
    lb = act.ensure(owner).lb
    guest_svc = service(
        "guest", annotations={ann.LOAD_BALANCER_ID: lb["id"]}, ports=[{"port": 8080, "nodePort": 30081}]
    )
    guest = plan(guest_svc, NODES, config).spec
    assert guest is not None
    assert act.ensure(guest).lb["id"] == lb["id"]
    observed = act.observe(act.octavia.get_load_balancer(lb["id"]))
    assert sorted(li["protocol_port"] for li in observed.listeners) == [80, 8080]
    assert guest.name in act.octavia.get_load_balancer(lb["id"])["tags"]
    # The owner's next reconcile keeps the guest's tag.
    act.ensure(owner)
    assert guest.name in act.octavia.get_load_balancer(lb["id"])["tags"]
    # A third Service is refused (max-shared-lb 2), and so is a port the owner holds; neither changes the LB.
    for name, port in (("third", 9090), ("clash", 80)):
        svc = service(name, annotations={ann.LOAD_BALANCER_ID: lb["id"]}, ports=[{"port": port, "nodePort": 30082}])
        other = plan(svc, NODES, config).spec
        assert other is not None
        with pytest.raises(LoadBalancerError, match="max-shared-lb" if name == "third" else "port 80/TCP is taken"):
            act.ensure(other)
    assert len(act.observe(act.octavia.get_load_balancer(lb["id"])).listeners) == 2
    act.delete(guest.name, guest.floating_ip, guest.existing_id)
    observed = act.observe(act.octavia.get_load_balancer(lb["id"]))
    assert [li["protocol_port"] for li in observed.listeners] == [80]
    act.delete(owner.name, owner.floating_ip)
    assert leaks(testbed, cluster).total == 0


def test_orphans_are_listed_then_collected(testbed: OpenStackTestbed, cloud: Cloud, cluster: str) -> None:
    act: Actuator = actuator(testbed)
    config = cloud.config(cluster)
    for name in ("gone", "alive"):
        spec = plan(service(name), NODES, config).spec
        assert spec is not None
        act.ensure(spec)
    # Same name pattern but not tagged by us: someone else's, never touched.
    lookalike = act.octavia.create_load_balancer(
        {"name": f"kube_service_{cluster}_default_other", "vip_subnet_id": cloud.subnet_id}
    )
    act.wait_active(lookalike["id"], "lookalike")
    live = {("default", "alive")}
    assert [o.service for o in find_orphans(act.octavia, cluster, live)] == ["gone"]
    assert [o.service for o in collect(act, cluster, live, dry_run=True)] == ["gone"]
    assert len(act.octavia.list_load_balancers(name=f"kube_service_{cluster}_default_gone")) == 1
    assert [o.service for o in collect(act, cluster, live, dry_run=False)] == ["gone"]
    assert act.octavia.list_load_balancers(name=f"kube_service_{cluster}_default_gone") == []
    assert len(act.octavia.list_load_balancers(name=f"kube_service_{cluster}_default_alive")) == 1
    act.octavia.delete_load_balancer(lookalike["id"])
    act.wait_gone(lookalike["id"], "lookalike")
