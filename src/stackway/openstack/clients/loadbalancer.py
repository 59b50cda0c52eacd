"""Octavia (load-balancer v2) behind the narrow interface the load-balancer controller needs.

Resources are the API's own JSON dicts: the controller reads a handful of fields and the planner compares
them with what it wants, so wrapping them in SDK objects would only add a translation to get wrong.
"""

from __future__ import annotations

from typing import Any, Protocol

from stackway.openstack.clients.rest import Proxy, request

SERVICE = "load-balancer"

Json = dict[str, Any]


class LoadBalancerAPI(Protocol):
    def list_load_balancers(self, **filters: str) -> list[Json]: ...
    def get_load_balancer(self, lb_id: str) -> Json: ...
    def create_load_balancer(self, body: Json) -> Json: ...
    def update_load_balancer(self, lb_id: str, fields: Json) -> Json: ...
    def delete_load_balancer(self, lb_id: str, *, cascade: bool = True) -> None: ...
    def list_listeners(self, lb_id: str) -> list[Json]: ...
    def create_listener(self, body: Json) -> Json: ...
    def update_listener(self, listener_id: str, fields: Json) -> Json: ...
    def delete_listener(self, listener_id: str) -> None: ...
    def list_pools(self, lb_id: str) -> list[Json]: ...
    def create_pool(self, body: Json) -> Json: ...
    def update_pool(self, pool_id: str, fields: Json) -> Json: ...
    def delete_pool(self, pool_id: str) -> None: ...
    def list_members(self, pool_id: str) -> list[Json]: ...
    def replace_members(self, pool_id: str, members: list[Json]) -> None: ...
    def get_health_monitor(self, monitor_id: str) -> Json: ...
    def create_health_monitor(self, body: Json) -> Json: ...
    def update_health_monitor(self, monitor_id: str, fields: Json) -> Json: ...
    def delete_health_monitor(self, monitor_id: str) -> None: ...


class OctaviaClient:
    """openstacksdk's ``load_balancer`` proxy, one measured call per method."""

    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy

    def _call(self, operation: str, method: str, path: str, **kwargs: Any) -> Any:
        return request(self._proxy, SERVICE, operation, method, path, **kwargs)

    def list_load_balancers(self, **filters: str) -> list[Json]:
        return list(self._call("loadbalancer_list", "GET", "/lbaas/loadbalancers", params=filters)["loadbalancers"])

    def get_load_balancer(self, lb_id: str) -> Json:
        return dict(self._call("loadbalancer_get", "GET", f"/lbaas/loadbalancers/{lb_id}")["loadbalancer"])

    def create_load_balancer(self, body: Json) -> Json:
        """``body`` may be fully populated (listeners → default_pool → members, healthmonitor): one call."""
        result = self._call("loadbalancer_create", "POST", "/lbaas/loadbalancers", body={"loadbalancer": body})
        return dict(result["loadbalancer"])

    def update_load_balancer(self, lb_id: str, fields: Json) -> Json:
        result = self._call(
            "loadbalancer_update", "PUT", f"/lbaas/loadbalancers/{lb_id}", body={"loadbalancer": fields}
        )
        return dict(result["loadbalancer"])

    def delete_load_balancer(self, lb_id: str, *, cascade: bool = True) -> None:
        params = {"cascade": "true"} if cascade else None
        self._call("loadbalancer_delete", "DELETE", f"/lbaas/loadbalancers/{lb_id}", params=params)

    def list_listeners(self, lb_id: str) -> list[Json]:
        result = self._call("listener_list", "GET", "/lbaas/listeners", params={"loadbalancer_id": lb_id})
        return list(result["listeners"])

    def create_listener(self, body: Json) -> Json:
        return dict(self._call("listener_create", "POST", "/lbaas/listeners", body={"listener": body})["listener"])

    def update_listener(self, listener_id: str, fields: Json) -> Json:
        result = self._call("listener_update", "PUT", f"/lbaas/listeners/{listener_id}", body={"listener": fields})
        return dict(result["listener"])

    def delete_listener(self, listener_id: str) -> None:
        self._call("listener_delete", "DELETE", f"/lbaas/listeners/{listener_id}")

    def list_pools(self, lb_id: str) -> list[Json]:
        return list(self._call("pool_list", "GET", "/lbaas/pools", params={"loadbalancer_id": lb_id})["pools"])

    def create_pool(self, body: Json) -> Json:
        return dict(self._call("pool_create", "POST", "/lbaas/pools", body={"pool": body})["pool"])

    def update_pool(self, pool_id: str, fields: Json) -> Json:
        return dict(self._call("pool_update", "PUT", f"/lbaas/pools/{pool_id}", body={"pool": fields})["pool"])

    def delete_pool(self, pool_id: str) -> None:
        self._call("pool_delete", "DELETE", f"/lbaas/pools/{pool_id}")

    def list_members(self, pool_id: str) -> list[Json]:
        return list(self._call("member_list", "GET", f"/lbaas/pools/{pool_id}/members")["members"])

    def replace_members(self, pool_id: str, members: list[Json]) -> None:
        """Octavia's batch update: the pool's members become exactly ``members`` in one call (Queens+)."""
        self._call("member_batch_update", "PUT", f"/lbaas/pools/{pool_id}/members", body={"members": members})

    def get_health_monitor(self, monitor_id: str) -> Json:
        return dict(self._call("healthmonitor_get", "GET", f"/lbaas/healthmonitors/{monitor_id}")["healthmonitor"])

    def create_health_monitor(self, body: Json) -> Json:
        result = self._call("healthmonitor_create", "POST", "/lbaas/healthmonitors", body={"healthmonitor": body})
        return dict(result["healthmonitor"])

    def update_health_monitor(self, monitor_id: str, fields: Json) -> Json:
        path = f"/lbaas/healthmonitors/{monitor_id}"
        return dict(self._call("healthmonitor_update", "PUT", path, body={"healthmonitor": fields})["healthmonitor"])

    def delete_health_monitor(self, monitor_id: str) -> None:
        self._call("healthmonitor_delete", "DELETE", f"/lbaas/healthmonitors/{monitor_id}")
