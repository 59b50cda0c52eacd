"""The demo's manifests: one Gateway, two versions of a Service, one HTTPRoute splitting between them."""

from __future__ import annotations

from typing import Any

NAMESPACE = "demo"


def demo_manifests(gateway_port: int, backends: dict[str, int], weights: dict[str, int]) -> list[dict[str, Any]]:
    """Manifests as a user would write them; endpoints point at the local demo backends."""
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "stackway"},
            "spec": {"controllerName": "stackway.dev/gateway-controller"},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "demo", "namespace": NAMESPACE},
            "spec": {
                "gatewayClassName": "stackway",
                "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                "listeners": [{"name": "http", "port": gateway_port, "protocol": "HTTP"}],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "checkout", "namespace": NAMESPACE},
            "spec": {
                "parentRefs": [{"name": "demo"}],
                "rules": [{"backendRefs": [{"name": name, "port": 80, "weight": weights[name]} for name in backends]}],
            },
        },
    ]
    for name, port in backends.items():
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]},
            }
        )
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-local",
                    "namespace": NAMESPACE,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            }
        )
    return docs
