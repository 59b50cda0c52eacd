"""Manifest builders for the demo, the benchmarks and the tests: one GatewayClass, Gateways, Services with
their EndpointSlices pointing at local backends, and HTTPRoutes, written as a user would write them."""

from __future__ import annotations

from typing import Any

NAMESPACE = "demo"
GW = "gateway.networking.k8s.io/v1"


def gateway_class(name: str = "stackway") -> dict[str, Any]:
    return {
        "apiVersion": GW,
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": "stackway.dev/gateway-controller"},
    }


def gateway(name: str, namespace: str, port: int, address: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "gatewayClassName": "stackway",
        "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}],
    }
    if address is not None:
        spec["addresses"] = [{"type": "IPAddress", "value": address}]
    return {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def service_with_endpoints(
    name: str, namespace: str, target_port: int, *, port: int = 80, address: str = "127.0.0.1"
) -> list[dict[str, Any]]:
    """A Service and the EndpointSlice that a cluster would derive for one ready pod at address:target_port."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": port, "targetPort": target_port}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-1",
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": target_port}],
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        },
    ]


def http_route(
    name: str, namespace: str, parent: str, backends: dict[str, int], path: str | None = None
) -> dict[str, Any]:
    """An HTTPRoute sending `path` (default: everything) to Services by weight, on port 80."""
    rule: dict[str, Any] = {"backendRefs": [{"name": b, "port": 80, "weight": w} for b, w in backends.items()]}
    if path is not None:
        rule["matches"] = [{"path": {"type": "PathPrefix", "value": path}}]
    return {
        "apiVersion": GW,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"parentRefs": [{"name": parent}], "rules": [rule]},
    }


def demo_manifests(gateway_port: int, backends: dict[str, int], weights: dict[str, int]) -> list[dict[str, Any]]:
    """The demo: a Gateway on 127.0.0.1, two versions of checkout, and the canary route between them."""
    docs = [
        gateway_class(),
        gateway("demo", NAMESPACE, gateway_port, address="127.0.0.1"),
        http_route("checkout", NAMESPACE, "demo", {name: weights[name] for name in backends}),
    ]
    for name, port in backends.items():
        docs += service_with_endpoints(name, NAMESPACE, port)
    return docs
