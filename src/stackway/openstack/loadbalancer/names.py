"""Octavia and Neutron names and tags, identical to OCCM's so existing load balancers are adopted."""

from __future__ import annotations

LB_PREFIX = "kube_service_"
FIP_DESCRIPTION_PREFIX = "Floating IP for Kubernetes external service"


def _cut(name: str) -> str:
    """Octavia names are at most 255 characters; OCCM cuts the same way (Sprintf255)."""
    return name[:255]


def lb_name(cluster: str, namespace: str, name: str) -> str:
    return _cut(f"{LB_PREFIX}{cluster}_{namespace}_{name}")


def listener_name(index: int, lb: str) -> str:
    return _cut(f"listener_{index}_{lb}")


def pool_name(index: int, lb: str) -> str:
    return _cut(f"pool_{index}_{lb}")


def monitor_name(index: int, lb: str) -> str:
    return _cut(f"monitor_{index}_{lb}")


def owns_child(child_name: str, lb: str) -> bool:
    """Whether a listener/pool/monitor name is one of ``lb``'s (``listener_3_<lb>``): on a shared LB, only
    these belong to this Service."""
    kind, _, rest = child_name.partition("_")
    index, _, owner = rest.partition("_")
    return kind in ("listener", "pool", "monitor") and index.isdigit() and owner == lb


def fip_description(cluster: str, namespace: str, name: str) -> str:
    return f"{FIP_DESCRIPTION_PREFIX} {namespace}/{name} from cluster {cluster}"


def service_of(lb: str, cluster: str) -> tuple[str, str] | None:
    """(namespace, name) from an LB name of this cluster; namespaces have no ``_``, so the first one splits.

    Kubernetes names cannot contain ``_`` either, so the split is unambiguous.
    """
    prefix = f"{LB_PREFIX}{cluster}_"
    if not lb.startswith(prefix):
        return None
    namespace, sep, name = lb[len(prefix) :].partition("_")
    return (namespace, name) if sep and namespace and name else None
