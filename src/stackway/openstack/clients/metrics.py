"""Prometheus metrics for every OpenStack API call (DESIGN 2.5), labelled by service and operation."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUEST_SECONDS = Histogram(
    "openstack_api_request_duration_seconds",
    "Duration of OpenStack API calls, by service and operation (failed calls included).",
    ["service", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REQUESTS = Counter(
    "openstack_api_requests_total",
    "OpenStack API calls made, by service and operation.",
    ["service", "operation"],
)
ERRORS = Counter(
    "openstack_api_request_errors_total",
    "OpenStack API calls that failed, by service, operation and error class (NotFound, Conflict, ServerError...).",
    ["service", "operation", "error"],
)
