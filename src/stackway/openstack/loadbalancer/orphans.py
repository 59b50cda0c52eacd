"""Orphan collection: load balancers this cluster made whose Service is gone (OCCM #3145, k8s #53451).

"Ours" is strict — the OCCM name pattern for *this* cluster name **and** the LB tagged with that same name —
so an LB someone else created with a look-alike name, or another cluster's, is never touched.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import structlog

from stackway.openstack.clients.loadbalancer import LoadBalancerAPI
from stackway.openstack.loadbalancer import names
from stackway.openstack.loadbalancer.actuator import Actuator
from stackway.openstack.loadbalancer.spec import FloatingIPSpec

log = structlog.get_logger("stackway.loadbalancer")


@dataclass(frozen=True)
class Orphan:
    lb: dict[str, Any]
    namespace: str
    service: str

    @property
    def name(self) -> str:
        return str(self.lb["name"])


def find_orphans(octavia: LoadBalancerAPI, cluster: str, live: Collection[tuple[str, str]]) -> list[Orphan]:
    """One list call; nothing is deleted here."""
    orphans = []
    for lb in octavia.list_load_balancers():
        name = str(lb.get("name") or "")
        owner = names.service_of(name, cluster)
        if owner is None or name not in (lb.get("tags") or []) or owner in live:
            continue
        if lb.get("provisioning_status") in ("DELETED", "PENDING_DELETE"):
            continue
        orphans.append(Orphan(lb, *owner))
    return sorted(orphans, key=lambda o: o.name)


def collect(actuator: Actuator, cluster: str, live: Collection[tuple[str, str]], *, dry_run: bool) -> list[Orphan]:
    """Delete (or, with ``dry_run``, only log) every orphan, releasing the floating IPs stackway made."""
    orphans = find_orphans(actuator.octavia, cluster, live)
    for orphan in orphans:
        log.info("orphaned load balancer", lb=orphan.name, id=orphan.lb["id"], dry_run=dry_run)
        if not dry_run:
            description = names.fip_description(cluster, orphan.namespace, orphan.service)
            actuator.delete(orphan.name, FloatingIPSpec(wanted=False, keep=False, description=description))
    return orphans
