"""ML2 mechanism driver for the test bed: binds every port that gets a host.

There are no Neutron agents, so the openvswitch mechanism driver binds nothing; when nova-compute
(fake virt driver) sets binding:host_id on a server's port, the binding would fail and Nova would
put the server in ERROR (PortBindingFailed). This driver binds the port to its first segment with
vif_type ovs and marks it ACTIVE. Nothing is wired up on the host.

up.sh registers it as mechanism driver "testbed": stevedore finds drivers only by entry point, so
up.sh writes a small *.dist-info directory and puts it on neutron-server's PYTHONPATH.
"""

from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api


class TestbedMechanismDriver(api.MechanismDriver):
    def initialize(self):
        pass

    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                portbindings.VIF_TYPE_OVS,
                {
                    portbindings.CAP_PORT_FILTER: True,
                    portbindings.VIF_DETAILS_CONNECTIVITY: portbindings.CONNECTIVITY_L2,
                },
                status=constants.PORT_STATUS_ACTIVE,
            )
            return
