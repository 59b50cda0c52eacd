"""Octavia network driver for the test bed: the noop driver, except that VIP ports are real Neutron ports.

With the noop network driver a load balancer's ``vip_port_id`` is a random UUID that Neutron has never
heard of, so a floating IP can never be associated with it, and the load-balancer controller's floating-IP
handling (allocate, adopt, release, no leaks) could not be tested at all. Real Octavia creates the VIP port
in Neutron on the LB's VIP subnet (named ``octavia-lb-<lb id>``) and deletes it with the LB; this driver does
exactly that much through the same Neutron client and service credentials Octavia's real drivers use, and
leaves everything else (amphorae, plugging) to the noop driver.

up.sh registers it as network driver "testbed_network" through an entry point in a generated *.dist-info
directory on the Octavia processes' PYTHONPATH.
"""

from octavia.common import clients, data_models
from octavia.network.drivers.noop_driver.driver import NoopNetworkDriver
from oslo_config import cfg

CONF = cfg.CONF
PORT_PREFIX = "octavia-lb-"


def _neutron():
    return clients.NeutronAuth.get_neutron_client(
        endpoint=CONF.neutron.endpoint,
        region=CONF.neutron.region_name,
        endpoint_type=CONF.neutron.endpoint_type,
        service_name=CONF.neutron.service_name,
        insecure=CONF.neutron.insecure,
        ca_cert=CONF.neutron.ca_certificates_file,
    )


class TestbedNetworkDriver(NoopNetworkDriver):
    def allocate_vip(self, loadbalancer):
        vip, additional = super().allocate_vip(loadbalancer)
        given = loadbalancer.vip
        if given is None or given.port_id or not given.subnet_id:
            return vip, additional
        neutron = _neutron()
        subnet = neutron.show_subnet(given.subnet_id)["subnet"]
        fixed_ip = {"subnet_id": subnet["id"]}
        if given.ip_address:
            fixed_ip["ip_address"] = given.ip_address
        port = neutron.create_port(
            {
                "port": {
                    "name": PORT_PREFIX + loadbalancer.id,
                    "network_id": subnet["network_id"],
                    "fixed_ips": [fixed_ip],
                    "device_owner": "Octavia",
                    "device_id": PORT_PREFIX + loadbalancer.id,
                    "admin_state_up": False,
                }
            }
        )["port"]
        real = data_models.Vip(
            ip_address=port["fixed_ips"][0]["ip_address"],
            subnet_id=subnet["id"],
            network_id=subnet["network_id"],
            port_id=port["id"],
            load_balancer_id=loadbalancer.id,
        )
        return real, additional

    def deallocate_vip(self, vip):
        super().deallocate_vip(vip)
        if not vip or not vip.port_id:
            return
        neutron = _neutron()
        try:
            port = neutron.show_port(vip.port_id)["port"]
        except Exception:  # already gone (or never real): nothing to release
            return
        if str(port.get("name", "")).startswith(PORT_PREFIX):
            neutron.delete_port(vip.port_id)
