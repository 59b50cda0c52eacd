"""JSON requests through an openstacksdk service proxy, for the APIs whose SDK resources hide what we need.

Octavia's fully-populated create and batch member update, and Neutron filters, are plain REST; going through
the SDK's proxy keeps its Keystone session, catalog lookup, endpoint overrides and microversion handling,
while the body we send is exactly the one the API documents.
"""

from __future__ import annotations

from typing import Any, Protocol

from stackway.openstack.clients.calls import api_call
from stackway.openstack.clients.errors import error_for_status


class Proxy(Protocol):
    """The part of ``openstack.proxy.Proxy`` (a keystoneauth Adapter) we use."""

    def request(self, url: str, method: str, **kwargs: Any) -> Any: ...


def _message(response: Any) -> str:
    """The human part of an OpenStack error body: each service nests it differently."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "").strip()[:500]
    if isinstance(body, dict):
        for key in ("faultstring", "message", "description", "detail"):
            if isinstance(body.get(key), str):
                return str(body[key])
        for value in body.values():
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])
    return str(body)[:500]


def request(
    proxy: Proxy,
    service: str,
    operation: str,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """One measured API call; a 4xx/5xx raises the matching :mod:`errors` class, a 2xx returns the JSON body."""

    def call() -> Any:
        response = proxy.request(path, method, json=body, params=params, raise_exc=False)
        if response.status_code >= 400:
            raise error_for_status(service, operation, response.status_code, _message(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    return api_call(service, operation, call)
