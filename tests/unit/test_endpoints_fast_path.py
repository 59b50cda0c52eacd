"""EndpointSlice-only changes skip translation, and must give exactly what a full translation gives."""

from __future__ import annotations

import copy
from typing import Any

from prometheus_client import REGISTRY

from stackway.controlplane import ControlPlane
from stackway.resources.raw import ObjectKey, RawObject, key_of
from stackway.xds.snapshot import ENDPOINT, ROUTE

GW = "gateway.networking.k8s.io/v1"


def base_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": GW,
            "kind": "GatewayClass",
            "metadata": {"name": "stackway"},
            "spec": {"controllerName": "stackway.dev/gateway-controller"},
        },
        {
            "apiVersion": GW,
            "kind": "Gateway",
            "metadata": {"name": "gw"},
            "spec": {"gatewayClassName": "stackway", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
        },
        {
            "apiVersion": GW,
            "kind": "HTTPRoute",
            "metadata": {"name": "r"},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "rules": [{"backendRefs": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}],
            },
        },
    ]
    for svc in ("a", "b"):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": svc},
                "spec": {"ports": [{"name": "http", "port": 80}]},
            }
        )
    return docs


def endpoint_slice(name: str, service: str, *addresses: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [a]} for a in addresses],
    }


class Objects:
    """A provider's state: replacing a document creates a new RawObject, the others keep their identity."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.state: dict[ObjectKey, RawObject] = {}
        for doc in docs:
            self.put(doc)

    def put(self, doc: dict[str, Any]) -> None:
        key = key_of(doc)
        self.state[key] = RawObject(key, copy.deepcopy(doc))

    def delete(self, doc: dict[str, Any]) -> None:
        del self.state[key_of(doc)]


def full_translation(objects: Objects) -> str:
    return ControlPlane().update(dict(objects.state)).snapshot.version  # type: ignore[union-attr]


def endpoint_updates() -> float:
    return REGISTRY.get_sample_value("stackway_updates_total", {"kind": "endpoints"}) or 0.0


def test_scaling_a_slice_refreshes_only_that_cluster_and_matches_a_full_translation() -> None:
    objects = Objects([*base_docs(), endpoint_slice("a-1", "a", "10.0.0.1"), endpoint_slice("b-1", "b", "10.0.1.1")])
    control = ControlPlane()
    first = control.update(dict(objects.state)).snapshot
    assert first is not None
    before = endpoint_updates()
    objects.put(endpoint_slice("a-1", "a", "10.0.0.1", "10.0.0.2"))
    result = control.update(dict(objects.state))
    assert result.changed
    assert endpoint_updates() == before + 1
    snap = control.snapshot
    assert snap.version == full_translation(objects)
    assert snap.versions[ROUTE] == first.versions[ROUTE]
    changed = {n for n, v in snap.versions[ENDPOINT].items() if first.versions[ENDPOINT].get(n) != v}
    assert changed == {"service/default/a/80"}
    cla = snap.of_type(ENDPOINT)["service/default/a/80"]
    addresses = [e.endpoint.address.socket_address.address for e in cla.endpoints[0].lb_endpoints]  # type: ignore[attr-defined]
    assert addresses == ["10.0.0.1", "10.0.0.2"]


def test_slice_moving_between_services_and_deletion() -> None:
    objects = Objects([*base_docs(), endpoint_slice("x", "a", "10.0.0.1")])
    control = ControlPlane()
    control.update(dict(objects.state))
    objects.put(endpoint_slice("x", "b", "10.0.0.1"))
    control.update(dict(objects.state))
    assert control.snapshot.version == full_translation(objects)
    objects.delete(endpoint_slice("x", "b"))
    control.update(dict(objects.state))
    assert control.snapshot.version == full_translation(objects)


def test_any_other_change_translates_in_full() -> None:
    objects = Objects([*base_docs(), endpoint_slice("a-1", "a", "10.0.0.1")])
    control = ControlPlane()
    control.update(dict(objects.state))
    before = endpoint_updates()
    docs = base_docs()
    docs[2]["spec"]["rules"][0]["backendRefs"].pop()
    objects.put(docs[2])
    objects.put(endpoint_slice("a-1", "a", "10.0.0.9"))
    control.update(dict(objects.state))
    assert endpoint_updates() == before
    assert control.snapshot.version == full_translation(objects)
