"""Reconcile metrics of the load-balancer controller, named like OCCM's so existing dashboards carry over
(``cloudprovider_openstack_reconcile_*`` with ``operation`` = loadbalancer_ensure / loadbalancer_delete)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_SECONDS = Histogram(
    "cloudprovider_openstack_reconcile_duration_seconds",
    "Time to bring one Service's load balancer in line (waits for ACTIVE included).",
    ["operation"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1000),
)
RECONCILES = Counter("cloudprovider_openstack_reconcile_total", "Load-balancer reconciles run.", ["operation"])
RECONCILE_ERRORS = Counter(
    "cloudprovider_openstack_reconcile_errors_total", "Load-balancer reconciles that failed.", ["operation"]
)
SERVICES = Gauge("stackway_loadbalancer_services", "LoadBalancer Services by state of their Octavia LB.", ["state"])
