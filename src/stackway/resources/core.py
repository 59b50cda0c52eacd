"""Core Kubernetes kinds stackway reads: Namespace, Service, EndpointSlice, Secret, ConfigMap, Node."""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from pydantic import Field

from stackway.resources.base import Model, ObjectMeta

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class Namespace(Model):
    metadata: ObjectMeta

    @property
    def labels(self) -> dict[str, str]:
        """Labels including the immutable `kubernetes.io/metadata.name` the API server always sets."""
        return {**self.metadata.labels, "kubernetes.io/metadata.name": self.metadata.name}


class ServicePort(Model):
    name: str = ""
    port: int = Field(ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    app_protocol: str | None = None
    target_port: int | str | None = None
    node_port: int | None = None


class ServiceSpec(Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    ports: tuple[ServicePort, ...] = ()
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    external_name: str | None = None
    selector: dict[str, str] | None = None
    load_balancer_ip: str | None = Field(default=None, alias="loadBalancerIP")
    load_balancer_source_ranges: tuple[str, ...] = ()
    load_balancer_class: str | None = None
    external_traffic_policy: str | None = None
    health_check_node_port: int | None = None


class Service(Model):
    metadata: ObjectMeta
    spec: ServiceSpec = ServiceSpec()

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.spec.ports if p.port == number), None)


class EndpointConditions(Model):
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class Endpoint(Model):
    addresses: tuple[str, ...]
    conditions: EndpointConditions = EndpointConditions()
    hostname: str | None = None
    node_name: str | None = None

    @property
    def is_ready(self) -> bool:
        """A nil `ready` means ready: consumers must assume so (discovery.k8s.io/v1 docs)."""
        return self.conditions.ready is not False


class EndpointPort(Model):
    name: str = ""
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: str = "TCP"
    app_protocol: str | None = None


class EndpointSlice(Model):
    metadata: ObjectMeta
    address_type: Literal["IPv4", "IPv6", "FQDN"]
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()

    @property
    def service_name(self) -> str | None:
        return self.metadata.labels.get(SERVICE_NAME_LABEL)


class Secret(Model):
    metadata: ObjectMeta
    type: str = "Opaque"
    data: dict[str, str] = Field(default_factory=dict)
    string_data: dict[str, str] = Field(default_factory=dict)

    def value(self, key: str) -> bytes | None:
        """Decoded value of one key; stringData wins as the API server would merge it."""
        if key in self.string_data:
            return self.string_data[key].encode()
        if key in self.data:
            try:
                return base64.b64decode(self.data[key], validate=True)
            except (binascii.Error, ValueError):
                return None
        return None


class ConfigMap(Model):
    metadata: ObjectMeta
    data: dict[str, str] = Field(default_factory=dict)


class NodeAddress(Model):
    type: str
    address: str


class NodeCondition(Model):
    type: str
    status: str


class NodeSpec(Model):
    provider_id: str | None = Field(default=None, alias="providerID")
    unschedulable: bool = False


class NodeStatus(Model):
    addresses: tuple[NodeAddress, ...] = ()
    conditions: tuple[NodeCondition, ...] = ()


class Node(Model):
    """A cluster node: load-balancer members are its InternalIP on the Service's nodePorts."""

    metadata: ObjectMeta
    spec: NodeSpec = NodeSpec()
    status: NodeStatus = NodeStatus()

    def address(self, kind: str = "InternalIP") -> str | None:
        return next((a.address for a in self.status.addresses if a.type == kind), None)

    @property
    def server_id(self) -> str | None:
        """The Nova server ID from ``openstack:///<id>`` (OCCM also writes ``openstack://<region>/<id>``)."""
        pid = self.spec.provider_id or ""
        if not pid.startswith("openstack://"):
            return None
        return pid.rsplit("/", 1)[-1] or None

    @property
    def ready(self) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)
