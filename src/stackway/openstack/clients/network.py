"""Neutron (network v2.0) behind the narrow interface the load-balancer controller needs: floating IPs,
and the networks, subnets and ports they hang off."""

from __future__ import annotations

from typing import Any, Protocol

from stackway.openstack.clients.rest import Proxy, request

SERVICE = "network"

Json = dict[str, Any]


class NetworkAPI(Protocol):
    def list_floating_ips(self, **filters: str) -> list[Json]: ...
    def create_floating_ip(self, body: Json) -> Json: ...
    def update_floating_ip(self, fip_id: str, fields: Json) -> Json: ...
    def delete_floating_ip(self, fip_id: str) -> None: ...
    def list_networks(self, **filters: str) -> list[Json]: ...
    def list_subnets(self, **filters: str) -> list[Json]: ...
    def get_port(self, port_id: str) -> Json: ...


class NeutronClient:
    """openstacksdk's ``network`` proxy, one measured call per method."""

    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy

    def _call(self, operation: str, method: str, path: str, **kwargs: Any) -> Any:
        return request(self._proxy, SERVICE, operation, method, path, **kwargs)

    def list_floating_ips(self, **filters: str) -> list[Json]:
        return list(self._call("floating_ip_list", "GET", "/floatingips", params=filters)["floatingips"])

    def create_floating_ip(self, body: Json) -> Json:
        return dict(self._call("floating_ip_create", "POST", "/floatingips", body={"floatingip": body})["floatingip"])

    def update_floating_ip(self, fip_id: str, fields: Json) -> Json:
        path = f"/floatingips/{fip_id}"
        return dict(self._call("floating_ip_update", "PUT", path, body={"floatingip": fields})["floatingip"])

    def delete_floating_ip(self, fip_id: str) -> None:
        self._call("floating_ip_delete", "DELETE", f"/floatingips/{fip_id}")

    def list_networks(self, **filters: str) -> list[Json]:
        return list(self._call("network_list", "GET", "/networks", params=filters)["networks"])

    def list_subnets(self, **filters: str) -> list[Json]:
        return list(self._call("subnet_list", "GET", "/subnets", params=filters)["subnets"])

    def get_port(self, port_id: str) -> Json:
        return dict(self._call("port_get", "GET", f"/ports/{port_id}")["port"])
