"""The fault proxy itself, in front of the real test bed: what it injects is what openstacksdk sees."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from keystoneauth1 import exceptions as ksa_exceptions
from openstack import exceptions as sdk_exceptions

from tests.openstack.conftest import OpenStackTestbed
from tests.openstack.faultproxy import Fault, FaultProxy

LBS = r"/v2/lbaas/loadbalancers$"


@pytest.fixture
def octavia_proxy(fault_proxy: Callable[[str], FaultProxy]) -> FaultProxy:
    return fault_proxy("load-balancer")


def proxied(testbed: OpenStackTestbed, tmp_path: Path, overrides: dict[str, str], api_timeout: float | None = None):  # type: ignore[no-untyped-def]
    clouds = testbed.clouds_with_overrides(tmp_path / "clouds.yaml", overrides, api_timeout=api_timeout)
    return testbed.connect(clouds_yaml=clouds)


def test_pass_through_is_recorded(testbed: OpenStackTestbed, octavia_proxy: FaultProxy, tmp_path: Path) -> None:
    conn = proxied(testbed, tmp_path, {"load-balancer": octavia_proxy.url})
    direct = {lb.id for lb in testbed.connect().load_balancer.load_balancers()}
    assert {lb.id for lb in conn.load_balancer.load_balancers()} == direct
    calls = octavia_proxy.calls("GET", LBS)
    assert [(c.status, c.fault, c.done) for c in calls] == [(200, None, True)]


@pytest.mark.parametrize(
    ("service_type", "list_call"),
    [
        ("network", lambda c: list(c.network.networks())),
        ("block-storage", lambda c: list(c.block_storage.volumes())),
        ("compute", lambda c: list(c.compute.servers())),
        ("image", lambda c: list(c.image.images())),
    ],
)
def test_every_service_can_be_proxied(
    testbed: OpenStackTestbed, fault_proxy: Callable[[str], FaultProxy], tmp_path: Path, service_type, list_call
) -> None:
    """The proxy's plain URL is enough as endpoint override: version discovery runs through it, and the
    services build their links from the request's Host, so nothing goes around the proxy."""
    proxy = fault_proxy(service_type)
    conn = proxied(testbed, tmp_path, {service_type: proxy.url})
    list_call(conn)
    assert any(c.status == 200 and c.path not in ("/", "/v3/", "/v2.1/", "/v2/") for c in proxy.requests), (
        proxy.requests
    )


def test_injected_409_reaches_openstacksdk(
    testbed: OpenStackTestbed, octavia_proxy: FaultProxy, tmp_path: Path
) -> None:
    conn = proxied(testbed, tmp_path, {"load-balancer": octavia_proxy.url})
    rule = octavia_proxy.inject("GET", LBS, Fault.status(409, "Invalid state PENDING_UPDATE"))
    with pytest.raises(sdk_exceptions.ConflictException, match="Invalid state PENDING_UPDATE"):
        list(conn.load_balancer.load_balancers())
    assert rule.remaining == 0
    list(conn.load_balancer.load_balancers())  # used up: passes through again
    assert [c.status for c in octavia_proxy.calls("GET", LBS)] == [409, 200]


def test_times_and_method_select_requests(testbed: OpenStackTestbed, octavia_proxy: FaultProxy, tmp_path: Path) -> None:
    conn = proxied(testbed, tmp_path, {"load-balancer": octavia_proxy.url})
    octavia_proxy.inject("POST", LBS, Fault.status(500))  # another method: never matches here
    octavia_proxy.inject("GET", LBS, Fault.status(503), times=2)
    for _ in range(2):
        with pytest.raises(sdk_exceptions.HttpException) as raised:
            list(conn.load_balancer.load_balancers())
        assert raised.value.status_code == 503
    list(conn.load_balancer.load_balancers())
    assert [(c.status, c.fault) for c in octavia_proxy.calls("GET", LBS)] == [
        (503, "status"),
        (503, "status"),
        (200, None),
    ]
    assert octavia_proxy.count("POST") == 0


def test_reset_is_a_connection_error(testbed: OpenStackTestbed, octavia_proxy: FaultProxy, tmp_path: Path) -> None:
    conn = proxied(testbed, tmp_path, {"load-balancer": octavia_proxy.url})
    octavia_proxy.inject("GET", LBS, Fault.reset())
    with pytest.raises(ksa_exceptions.ConnectFailure, match="reset"):
        list(conn.load_balancer.load_balancers())
    assert [(c.status, c.fault) for c in octavia_proxy.calls("GET", LBS)] == [(None, "reset")]


def test_hang_outlasts_the_client_timeout(testbed: OpenStackTestbed, octavia_proxy: FaultProxy, tmp_path: Path) -> None:
    conn = proxied(testbed, tmp_path, {"load-balancer": octavia_proxy.url}, api_timeout=1)
    list(conn.load_balancer.load_balancers())  # version discovery first, outside the timing
    octavia_proxy.inject("GET", LBS, Fault.hang())
    started = time.monotonic()
    with pytest.raises(ksa_exceptions.ConnectTimeout):
        list(conn.load_balancer.load_balancers())
    assert 0.9 < time.monotonic() - started < 5
    held = octavia_proxy.calls("GET", LBS)[-1]
    assert (held.fault, held.done) == ("hang", False)  # still held: recorded on arrival


def test_dropped_response_leaves_the_change_made(
    testbed: OpenStackTestbed, fault_proxy: Callable[[str], FaultProxy], tmp_path: Path
) -> None:
    """The request reaches Neutron, the client sees a reset: the network exists although the create "failed"."""
    proxy = fault_proxy("network")
    conn = proxied(testbed, tmp_path, {"network": proxy.url})
    name = f"faultproxy-{uuid.uuid4().hex[:8]}"
    proxy.inject("POST", r"/v2.0/networks$", Fault.drop_response())
    with pytest.raises(ksa_exceptions.ConnectFailure):
        conn.network.create_network(name=name)
    direct = testbed.connect()
    leaked = direct.network.find_network(name)
    try:
        assert leaked is not None
        assert [(c.status, c.fault) for c in proxy.calls("POST", r"/networks$")] == [(201, "drop_response")]
    finally:
        if leaked is not None:
            direct.network.delete_network(leaked)


def test_error_bodies_follow_each_service(
    testbed: OpenStackTestbed, fault_proxy: Callable[[str], FaultProxy], tmp_path: Path
) -> None:
    """openstacksdk reads the message out of Neutron's and Nova's own error formats too."""
    neutron, nova = fault_proxy("network"), fault_proxy("compute")
    conn = proxied(testbed, tmp_path, {"network": neutron.url, "compute": nova.url})
    neutron.inject("GET", r"/networks$", Fault.status(409, "neutron is busy"))
    nova.inject("GET", r"/servers", Fault.status(409, "nova is busy"))
    with pytest.raises(sdk_exceptions.ConflictException, match="neutron is busy"):
        list(conn.network.networks())
    with pytest.raises(sdk_exceptions.ConflictException, match="nova is busy"):
        list(conn.compute.servers())
