"""Least-privilege identities: what the control plane may do in the API, and that the Envoys may do nothing.

The grants are derived from what the code does, not written by hand, so that a kind added to the provider
gets its list/watch here and nothing else is granted:
- list and watch on every kind the provider reads (`DEFAULT_KINDS`), cluster-wide: Gateways, routes and the
  Services, EndpointSlices and Secrets they reference live in any namespace;
- get, update and patch on the `status` subresource of the kinds whose status stackway writes (and nothing on
  the objects themselves: stackway never changes spec or metadata);
- get and update on its own Lease, by name, in its own namespace (a Role, not a ClusterRole); and create on
  Leases there, which cannot be narrowed by name because the object does not exist when the request is
  authorized (Kubernetes ignores resourceNames for create).
The Envoys never talk to the API server: their ServiceAccount has no grants and no token is mounted.
"""

from __future__ import annotations

from typing import Any

from stackway.deploy.options import CONTROL_PLANE_NAME, ENVOY_NAME, LEASE_NAME, DeployOptions
from stackway.providers.kubernetes.client import DEFAULT_KINDS

#: Kinds whose `status` stackway writes, as (API group, plural). ReferenceGrant and IngressClass have none;
#: core kinds (Service, Secret, ...) are read only.
STATUS_WRITES: tuple[tuple[str, str], ...] = (
    ("gateway.networking.k8s.io", "gatewayclasses"),
    ("gateway.networking.k8s.io", "gateways"),
    ("gateway.networking.k8s.io", "httproutes"),
    ("gateway.networking.k8s.io", "grpcroutes"),
    ("networking.k8s.io", "ingresses"),
)

READ_VERBS = ("list", "watch")
STATUS_VERBS = ("get", "update", "patch")
LEASE_VERBS_BY_NAME = ("get", "update")
LEASE_VERBS_UNNAMED = ("create",)

_RBAC = "rbac.authorization.k8s.io/v1"


def cluster_rules() -> list[dict[str, Any]]:
    """ClusterRole rules: one rule per API group for reads, one for status writes; groups in a fixed order."""
    reads: dict[str, list[str]] = {}
    for kind in DEFAULT_KINDS:
        reads.setdefault(kind.group, []).append(kind.plural)
    writes: dict[str, list[str]] = {}
    for group, plural in STATUS_WRITES:
        writes.setdefault(group, []).append(f"{plural}/status")
    rules = [
        {"apiGroups": [group], "resources": sorted(set(plurals)), "verbs": list(READ_VERBS)}
        for group, plurals in sorted(reads.items())
    ]
    rules += [
        {"apiGroups": [group], "resources": sorted(subresources), "verbs": list(STATUS_VERBS)}
        for group, subresources in sorted(writes.items())
    ]
    return rules


def lease_rules() -> list[dict[str, Any]]:
    """Role rules in stackway's namespace for leader election through the `stackway-controller` Lease."""
    return [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [LEASE_NAME],
            "verbs": list(LEASE_VERBS_BY_NAME),
        },
        # Create cannot be restricted by name: the authorizer sees no object name on a create.
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": list(LEASE_VERBS_UNNAMED)},
    ]


def rbac_objects(options: DeployOptions, labels: dict[str, str]) -> list[dict[str, Any]]:
    """ServiceAccounts for both components, the ClusterRole/Role and their bindings."""
    ns = options.namespace

    def meta(name: str, namespaced: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "namespace": ns} if namespaced else {"name": name}
        out["labels"] = dict(labels)
        return out

    subject = [{"kind": "ServiceAccount", "name": CONTROL_PLANE_NAME, "namespace": ns}]
    # Cluster-scoped names carry the namespace so that two installs in different namespaces do not collide.
    cluster_name = f"{CONTROL_PLANE_NAME}-{ns}"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(CONTROL_PLANE_NAME)},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(ENVOY_NAME),
            "automountServiceAccountToken": False,
        },
        {"apiVersion": _RBAC, "kind": "ClusterRole", "metadata": meta(cluster_name, False), "rules": cluster_rules()},
        {
            "apiVersion": _RBAC,
            "kind": "ClusterRoleBinding",
            "metadata": meta(cluster_name, False),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
            "subjects": subject,
        },
        {
            "apiVersion": _RBAC,
            "kind": "Role",
            "metadata": meta(f"{CONTROL_PLANE_NAME}-leader-election"),
            "rules": lease_rules(),
        },
        {
            "apiVersion": _RBAC,
            "kind": "RoleBinding",
            "metadata": meta(f"{CONTROL_PLANE_NAME}-leader-election"),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{CONTROL_PLANE_NAME}-leader-election",
            },
            "subjects": subject,
        },
    ]
