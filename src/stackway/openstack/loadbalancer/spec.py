"""The desired Octavia state for one Service: frozen values the planner makes and the differ compares.

Field names follow Octavia's API so that a spec turns into a request body without a mapping table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MonitorSpec:
    name: str
    type: str
    delay: int
    timeout: int
    max_retries: int
    max_retries_down: int
    http_method: str | None = None
    url_path: str | None = None
    expected_codes: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "delay": self.delay,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "max_retries_down": self.max_retries_down,
        }
        if self.type == "HTTP":
            body |= {"http_method": self.http_method, "url_path": self.url_path, "expected_codes": self.expected_codes}
        return body


@dataclass(frozen=True)
class MemberSpec:
    name: str
    address: str
    protocol_port: int
    subnet_id: str | None = None
    monitor_port: int | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "address": self.address, "protocol_port": self.protocol_port}
        if self.subnet_id:
            body["subnet_id"] = self.subnet_id
        if self.monitor_port:
            body["monitor_port"] = self.monitor_port
        return body


@dataclass(frozen=True)
class PoolSpec:
    name: str
    protocol: str
    lb_algorithm: str
    members: tuple[MemberSpec, ...]
    monitor: MonitorSpec | None

    def plain_body(self) -> dict[str, Any]:
        return {"name": self.name, "protocol": self.protocol, "lb_algorithm": self.lb_algorithm}

    def body(self) -> dict[str, Any]:
        """Fully populated: members and health monitor travel inside the pool (LB create only: Octavia's
        listener and pool creates answer 500 to inline children in some releases)."""
        body = self.plain_body() | {"members": [m.body() for m in self.members]}
        if self.monitor is not None:
            body["healthmonitor"] = self.monitor.body()
        return body


@dataclass(frozen=True)
class ListenerSpec:
    name: str
    protocol: str
    protocol_port: int
    pool: PoolSpec
    connection_limit: int = -1
    timeout_client_data: int | None = None
    timeout_member_connect: int | None = None
    timeout_member_data: int | None = None
    timeout_tcp_inspect: int | None = None
    allowed_cidrs: tuple[str, ...] = ()
    insert_headers: tuple[tuple[str, str], ...] = ()
    default_tls_container_ref: str | None = None
    tags: tuple[str, ...] = ()

    def mutable_fields(self) -> dict[str, Any]:
        """What an update may change in place; protocol and port need a new listener."""
        fields: dict[str, Any] = {
            "connection_limit": self.connection_limit,
            "allowed_cidrs": sorted(self.allowed_cidrs) or None,
            "insert_headers": dict(self.insert_headers),
            "tags": sorted(self.tags),
        }
        for key in ("timeout_client_data", "timeout_member_connect", "timeout_member_data", "timeout_tcp_inspect"):
            value = getattr(self, key)
            if value is not None:
                fields[key] = value
        if self.default_tls_container_ref:
            fields["default_tls_container_ref"] = self.default_tls_container_ref
        return fields

    def plain_body(self) -> dict[str, Any]:
        body = {"name": self.name, "protocol": self.protocol, "protocol_port": self.protocol_port}
        return body | {k: v for k, v in self.mutable_fields().items() if v is not None}

    def body(self) -> dict[str, Any]:
        return self.plain_body() | {"default_pool": self.pool.body()}


@dataclass(frozen=True)
class FloatingIPSpec:
    """Whether the VIP gets a floating IP, from where, and what happens to it on delete."""

    wanted: bool
    network_id: str | None = None
    subnet_id: str | None = None
    subnet_pattern: str | None = None
    address: str | None = None
    keep: bool = False
    description: str = ""


@dataclass(frozen=True)
class LoadBalancerSpec:
    name: str
    description: str
    vip_subnet_id: str | None
    vip_network_id: str | None
    vip_port_id: str | None
    flavor_id: str | None
    availability_zone: str | None
    provider: str | None
    listeners: tuple[ListenerSpec, ...]
    floating_ip: FloatingIPSpec
    tags: tuple[str, ...] = ()
    #: An LB named by ``load-balancer-id``: shared with other Services or made outside the cluster.
    existing_id: str | None = None
    hostname: str | None = None
    #: Problems that stop nothing but that the user should see (e.g. a Service port Octavia can't serve).
    warnings: tuple[str, ...] = field(default=())
    serial: bool = False
    max_shared: int = 2

    def create_body(self) -> dict[str, Any]:
        """One fully-populated create call: the LB with every listener, pool, member and monitor (or the bare
        LB when the provider needs serial calls; the differ then adds the children one by one)."""
        body: dict[str, Any] = {"name": self.name, "description": self.description, "tags": sorted(self.tags)}
        for key in ("vip_subnet_id", "vip_network_id", "vip_port_id", "flavor_id", "availability_zone", "provider"):
            value = getattr(self, key)
            if value:
                body[key] = value
        body["listeners"] = [] if self.serial else [listener.body() for listener in self.listeners]
        return body
