"""Smoke test of the OpenStack test bed through openstacksdk: each service does the one thing the
project's controllers rely on, and everything created is deleted again."""

from __future__ import annotations

import ipaddress
import uuid

import pytest

from tests.openstack.conftest import OpenStackTestbed

WAIT = {"interval": 0.3, "wait": 60}


@pytest.fixture
def name() -> str:
    return f"smoke-{uuid.uuid4().hex[:8]}"


def test_tokens_for_both_clouds(testbed: OpenStackTestbed) -> None:
    for cloud in testbed.clouds:
        conn = testbed.connect(cloud)
        assert conn.auth_token
        assert conn.current_project_id


def test_octavia_load_balancer_goes_active_and_cascade_deletes(testbed: OpenStackTestbed, name: str) -> None:
    testbed.require("load-balancer", "network")
    conn = testbed.connect()
    subnet = conn.network.find_subnet(testbed.private_subnet, ignore_missing=False)
    lb = conn.load_balancer.create_load_balancer(name=name, vip_subnet_id=subnet.id)
    try:
        lb = conn.load_balancer.wait_for_load_balancer(lb.id, status="ACTIVE", failures=["ERROR"], **WAIT)
        listener = conn.load_balancer.create_listener(
            name=name, protocol="TCP", protocol_port=80, load_balancer_id=lb.id
        )
        conn.load_balancer.wait_for_load_balancer(lb.id, status="ACTIVE", failures=["ERROR"], **WAIT)
        assert conn.load_balancer.get_listener(listener.id).provisioning_status == "ACTIVE"
    finally:
        conn.load_balancer.delete_load_balancer(lb.id, cascade=True, ignore_missing=True)
    conn.load_balancer.wait_for_delete(lb, **WAIT)


def test_neutron_network_and_floating_ip_from_public(testbed: OpenStackTestbed, name: str) -> None:
    testbed.require("network")
    conn = testbed.connect(testbed.appcred_cloud)
    net = conn.network.create_network(name=name)
    try:
        subnet = conn.network.create_subnet(network_id=net.id, cidr="10.99.0.0/24", ip_version=4, name=name)
        assert subnet.cidr == "10.99.0.0/24"
    finally:
        conn.network.delete_network(net)

    public = conn.network.find_network(testbed.external_network, ignore_missing=False)
    assert public.is_router_external
    assert public.is_shared
    private = conn.network.find_network(testbed.private_network, ignore_missing=False)
    port = conn.network.create_port(network_id=private.id, name=name)
    try:
        fip = conn.network.create_ip(floating_network_id=public.id, port_id=port.id)
        try:
            assert ipaddress.ip_address(fip.floating_ip_address) in ipaddress.ip_network("203.0.113.0/24")
            assert fip.fixed_ip_address == port.fixed_ips[0]["ip_address"]
        finally:
            conn.network.delete_ip(fip)
    finally:
        conn.network.delete_port(port)


def test_cinder_volume_create_delete(testbed: OpenStackTestbed, name: str) -> None:
    testbed.require("block-storage")
    conn = testbed.connect()
    volume = conn.block_storage.create_volume(name=name, size=1)
    try:
        volume = conn.block_storage.wait_for_status(volume, "available", failures=["error"], **WAIT)
        assert volume.size == 1
    finally:
        conn.block_storage.delete_volume(volume, ignore_missing=True)
    conn.block_storage.wait_for_delete(volume, **WAIT)


def test_nova_server_without_network(testbed: OpenStackTestbed, name: str) -> None:
    testbed.require("compute", "image")
    conn = testbed.connect()
    image = conn.image.find_image(testbed.image, ignore_missing=False)
    flavor = conn.compute.find_flavor(testbed.flavor, ignore_missing=False)
    # networks="none" (microversion 2.37+, negotiated by openstacksdk): no Neutron port needed
    server = conn.compute.create_server(name=name, image_id=image.id, flavor_id=flavor.id, networks="none")
    try:
        server = conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], **WAIT)
        assert server.compute_host == "testbed-compute"
    finally:
        conn.compute.delete_server(server, ignore_missing=True)
    conn.compute.wait_for_delete(server, **WAIT)
