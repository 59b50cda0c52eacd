"""Cross-namespace references: allowed only when a ReferenceGrant in the target namespace says so."""

from __future__ import annotations

from collections.abc import Mapping

from stackway.resources.gatewayapi import ReferenceGrant

NsName = tuple[str, str]


def granted(
    grants: Mapping[NsName, ReferenceGrant],
    *,
    from_group: str,
    from_kind: str,
    from_namespace: str,
    to_group: str,
    to_kind: str,
    to_namespace: str,
    to_name: str,
) -> bool:
    """True if a reference from (group, kind, namespace) to the named target may be followed."""
    if from_namespace == to_namespace:
        return True
    for (ns, _), grant in grants.items():
        if ns != to_namespace:
            continue
        if not any(
            f.group == from_group and f.kind == from_kind and f.namespace == from_namespace for f in grant.spec.from_
        ):
            continue
        if any(t.group == to_group and t.kind == to_kind and t.name in (None, "", to_name) for t in grant.spec.to):
            return True
    return False
