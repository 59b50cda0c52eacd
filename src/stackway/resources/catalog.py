"""Which kinds stackway understands, and how a raw object becomes a typed one.

Parsing is per object and never raises: a bad object becomes an `InvalidObject` naming each bad field,
and every other object is still served.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from stackway.resources import core, gatewayapi, networking
from stackway.resources.base import describe_validation_error
from stackway.resources.raw import ObjectKey, RawObject

GW = gatewayapi.GROUP

#: (group, kind) → (model, accepted apiVersions)
KINDS: dict[tuple[str, str], tuple[type[BaseModel], frozenset[str]]] = {
    ("", "Namespace"): (core.Namespace, frozenset({"v1"})),
    ("", "Service"): (core.Service, frozenset({"v1"})),
    ("", "Secret"): (core.Secret, frozenset({"v1"})),
    ("", "ConfigMap"): (core.ConfigMap, frozenset({"v1"})),
    ("", "Node"): (core.Node, frozenset({"v1"})),
    ("discovery.k8s.io", "EndpointSlice"): (core.EndpointSlice, frozenset({"discovery.k8s.io/v1"})),
    ("networking.k8s.io", "Ingress"): (networking.Ingress, frozenset({"networking.k8s.io/v1"})),
    ("networking.k8s.io", "IngressClass"): (networking.IngressClass, frozenset({"networking.k8s.io/v1"})),
    (GW, "GatewayClass"): (gatewayapi.GatewayClass, frozenset({f"{GW}/v1", f"{GW}/v1beta1"})),
    (GW, "Gateway"): (gatewayapi.Gateway, frozenset({f"{GW}/v1", f"{GW}/v1beta1"})),
    (GW, "HTTPRoute"): (gatewayapi.HTTPRoute, frozenset({f"{GW}/v1", f"{GW}/v1beta1"})),
    (GW, "GRPCRoute"): (gatewayapi.GRPCRoute, frozenset({f"{GW}/v1"})),
    (GW, "TLSRoute"): (gatewayapi.TLSRoute, frozenset({f"{GW}/v1", f"{GW}/v1alpha2", f"{GW}/v1alpha3"})),
    (GW, "BackendTLSPolicy"): (gatewayapi.BackendTLSPolicy, frozenset({f"{GW}/v1", f"{GW}/v1alpha3"})),
    (GW, "ReferenceGrant"): (gatewayapi.ReferenceGrant, frozenset({f"{GW}/v1", f"{GW}/v1beta1"})),
}

#: Kinds that commonly sit beside gateway manifests and are deliberately not read (no warning for them).
IGNORED_KINDS = frozenset(
    {
        ("apps", "Deployment"),
        ("apps", "DaemonSet"),
        ("apps", "StatefulSet"),
        ("apps", "ReplicaSet"),
        ("", "Pod"),
        ("", "ServiceAccount"),
        ("", "Endpoints"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
    }
)


@dataclass(frozen=True)
class InvalidObject:
    """An object that could not be typed; `problems` are (field path, message) pairs."""

    raw: RawObject
    problems: tuple[tuple[str, str], ...]

    @property
    def generation(self) -> int:
        meta = self.raw.body.get("metadata")
        gen = meta.get("generation") if isinstance(meta, Mapping) else None
        return gen if isinstance(gen, int) else 1


def is_supported(key: ObjectKey) -> bool:
    return (key.group, key.kind) in KINDS


def is_ignored(key: ObjectKey) -> bool:
    return (key.group, key.kind) in IGNORED_KINDS


def parse(raw: RawObject) -> BaseModel | InvalidObject:
    """Type one supported object, or say exactly what is wrong with it."""
    model, versions = KINDS[(raw.key.group, raw.key.kind)]
    api_version = raw.body.get("apiVersion")
    if api_version not in versions:
        return InvalidObject(raw, (("apiVersion", f"{api_version!r} is not served; use one of {sorted(versions)}"),))
    body: dict[str, Any] = dict(raw.body)
    body["metadata"] = {**dict(raw.body.get("metadata") or {}), "namespace": raw.key.namespace or ""}
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        return InvalidObject(raw, tuple(describe_validation_error(exc)))
