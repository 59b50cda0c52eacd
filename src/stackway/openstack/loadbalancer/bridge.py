"""Between a provider's objects and the load-balancer controller: Services and Nodes in, Service statuses out.

Both modes use it: `stackway up --os-cloud` shows the statuses in /api/status; `stackway serve --os-cloud`
also writes them to the Services (see ``servicestatus.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stackway.openstack.loadbalancer.actuator import Actuator
from stackway.openstack.loadbalancer.config import LBConfig
from stackway.openstack.loadbalancer.controller import LBStatus, LoadBalancerController, ServiceKey
from stackway.resources.store import Resources

CONDITION = "LoadBalancerReady"


def service_status(status: LBStatus) -> dict[str, Any]:
    """The Service's ``status`` as it should read: ``loadBalancer.ingress`` and one condition saying why.

    While an LB is Pending or Invalid the last address stays published: traffic that reaches it still works.
    """
    ingress: list[dict[str, Any]] = []
    if status.ingress_hostname:
        ingress.append({"hostname": status.ingress_hostname})
    elif status.ingress_ip:
        ingress.append({"ip": status.ingress_ip, "ipMode": "VIP"})
    ready = status.state == "Active"
    message = status.message or "; ".join(status.warnings) or f"Octavia load balancer {status.lb_name}"
    return {
        "loadBalancer": {"ingress": ingress} if ingress else {},
        "conditions": [
            {
                "type": CONDITION,
                "status": "True" if ready else "False",
                "reason": status.state,
                "message": message[:32768],
            }
        ],
    }


class LoadBalancerBridge:
    def __init__(self, controller: LoadBalancerController) -> None:
        self.controller = controller
        self._listeners: list[Callable[[ServiceKey, LBStatus], None]] = []
        controller.on_status = self.notify
        #: Acting is for one replica only (the leader in a cluster): a passive bridge keeps the latest objects
        #: and hands them over when activated.
        self.active = True
        self._latest: Resources | None = None

    def add_listener(self, listener: Callable[[ServiceKey, LBStatus], None]) -> None:
        self._listeners.append(listener)

    def notify(self, key: ServiceKey, status: LBStatus) -> None:
        """The controller's on_status: called from its worker threads."""
        for listener in list(self._listeners):
            listener(key, status)

    def activate(self) -> None:
        self.active = True
        if self._latest is not None:
            self.on_resources(self._latest)

    def deactivate(self) -> None:
        self.active = False

    def on_resources(self, resources: Resources) -> None:
        """The control plane's typed view after a change; only Services and Nodes matter here."""
        self._latest = resources
        if self.active:
            self.controller.update(resources.services.values(), resources.nodes.values())

    def status_document(self) -> list[dict[str, Any]]:
        """Entries for /api/status, shaped like the other objects there."""
        return [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "status": service_status(status),
                "loadBalancer": {"name": status.lb_name, "id": status.lb_id, "state": status.state},
            }
            for (namespace, name), status in sorted(self.controller.statuses().items())
            if status.state != "Deleted"
        ]

    def close(self) -> None:
        self.controller.close()


def connect_bridge(cloud: str | None, config: LBConfig, *, workers: int = 8) -> LoadBalancerBridge:
    """A bridge whose controller talks to ``cloud`` (clouds.yaml); authentication happens on first use."""
    from stackway.openstack.clients.connection import connect
    from stackway.openstack.clients.loadbalancer import OctaviaClient
    from stackway.openstack.clients.network import NeutronClient

    conn = connect(cloud)
    actuator = Actuator(OctaviaClient(conn.load_balancer), NeutronClient(conn.network))
    return LoadBalancerBridge(LoadBalancerController(actuator, config, workers=workers))
