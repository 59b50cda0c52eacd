"""Least-privilege identities: what the control plane may do in the API, and that the Envoys may do nothing.

The grants are derived from the code that makes the requests, not written by hand, so that a kind added to
the provider or the status writer brings its grant and nothing else is granted:
- `list`, `watch` on every kind the provider reads (`DEFAULT_KINDS`), cluster-wide: Gateways, routes and the
  Services, EndpointSlices and Secrets they reference live in any namespace;
- for every kind whose status the status writer writes (`STATUS_KINDS`): `update` on its `status`
  subresource (a PUT) and `get` on the object itself (the writer re-reads the object, not `/status`, after a
  409 or when its watch cache lags); never a write to spec or metadata, and no `patch`, which nothing sends;
- `get`, `update` on its own Lease by name, in its own namespace (a Role, not a ClusterRole), and `create` on
  Leases there, which cannot be narrowed by name: the object has no name the authorizer could check until it
  exists (Kubernetes ignores resourceNames for create).
With OpenStack load balancers (`openstack_cloud`), and only then, what the load-balancer controller sends:
- `list`, `watch` on Nodes (`NODE_KIND`, the kind cluster mode adds to its watch: nodes are the members);
- `get`, `update` on Services: the service-status writer re-reads a Service and PUTs the whole object to add
  or remove the cleanup finalizer (the controller's `FINALIZER`): a Service has no narrower subresource for it;
- `update` on `services/status` (status.loadBalancer and the condition, a PUT as for every other status);
- `create` on core `events`, in any namespace: one per change of a Service's load balancer.
The Envoys never talk to the API server: their ServiceAccount has no grants and no token is mounted.
"""

from __future__ import annotations

from typing import Any

from stackway.cluster import NODE_KIND
from stackway.deploy.options import CONTROL_PLANE_NAME, ENVOY_NAME, DeployOptions
from stackway.providers.kubernetes.client import DEFAULT_KINDS, Kind
from stackway.providers.kubernetes.leader import LEASE_NAME
from stackway.providers.kubernetes.status import STATUS_KINDS

READ_VERBS = ("list", "watch")
STATUS_OBJECT_VERBS = ("get",)
STATUS_VERBS = ("update",)
LEASE_VERBS_BY_NAME = ("get", "update")
LEASE_VERBS_UNNAMED = ("create",)
#: The load-balancer controller's requests (openstack/loadbalancer/servicestatus.py): GET and PUT on a Service
#: (the finalizer), PUT on its /status, POST of a core/v1 Event in the Service's namespace.
LB_SERVICE_VERBS = ("get", "update")
LB_EVENT_VERBS = ("create",)
#: The Service kind as the provider reads it: the load balancers act on the same objects.
SERVICE_KIND = next(kind for kind in DEFAULT_KINDS if (kind.group, kind.kind) == ("", "Service"))
EVENT_KIND = Kind("", "v1", "Event", "events", namespaced=True)

_RBAC = "rbac.authorization.k8s.io/v1"


def _by_group(pairs: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    groups: dict[str, set[str]] = {}
    for group, resource in pairs:
        groups.setdefault(group, set()).add(resource)
    return [(group, sorted(resources)) for group, resources in sorted(groups.items())]


def cluster_rules(load_balancers: bool = False) -> list[dict[str, Any]]:
    """ClusterRole rules: per API group, one rule for reads, one for re-reads before a status write and one
    for status writes; in a fixed order so the rendering is stable. The load balancers' rules follow as a
    block of their own, so that the base rules (and the default rendering) stay exactly as they are."""
    families: list[tuple[tuple[str, ...], list[tuple[str, str]]]] = [
        (READ_VERBS, [(kind.group, kind.plural) for kind in DEFAULT_KINDS]),
        (STATUS_OBJECT_VERBS, [(kind.group, kind.plural) for kind in STATUS_KINDS.values()]),
        (STATUS_VERBS, [(kind.group, f"{kind.plural}/status") for kind in STATUS_KINDS.values()]),
    ]
    if load_balancers:
        families += [
            (READ_VERBS, [(NODE_KIND.group, NODE_KIND.plural)]),
            (LB_SERVICE_VERBS, [(SERVICE_KIND.group, SERVICE_KIND.plural)]),
            (STATUS_VERBS, [(SERVICE_KIND.group, f"{SERVICE_KIND.plural}/status")]),
            (LB_EVENT_VERBS, [(EVENT_KIND.group, EVENT_KIND.plural)]),
        ]
    return [
        {"apiGroups": [group], "resources": resources, "verbs": list(verbs)}
        for verbs, pairs in families
        for group, resources in _by_group(pairs)
    ]


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
        {
            "apiVersion": _RBAC,
            "kind": "ClusterRole",
            "metadata": meta(cluster_name, False),
            "rules": cluster_rules(options.load_balancers),
        },
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
