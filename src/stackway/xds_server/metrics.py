"""Prometheus metrics of the xDS server (default registry, so the admin API's /metrics shows them).

Labels use the short type names (CDS, EDS, LDS, RDS, SDS): bounded cardinality, readable dashboards.
Node ids are deliberately not labels: a DaemonSet of Envoys would make every series per-node.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from stackway.xds.snapshot import SHORT_NAMES

CONNECTED_STREAMS = Gauge(
    "stackway_xds_connected_streams", "ADS streams open right now, by protocol variant.", ["kind"]
)
PUSHES = Counter("stackway_xds_pushes_total", "xDS responses sent to Envoy, by resource type.", ["type"])
RESOURCES_SENT = Counter(
    "stackway_xds_resources_sent_total", "Resources carried by xDS responses, by resource type.", ["type"]
)
ACKS = Counter("stackway_xds_acks_total", "xDS responses Envoy accepted, by resource type.", ["type"])
NACKS = Counter("stackway_xds_nacks_total", "xDS responses Envoy rejected, by resource type.", ["type"])
STALE = Counter(
    "stackway_xds_stale_requests_total", "Requests ignored because their nonce was not the latest.", ["type"]
)
PUSH_TO_ACK = Histogram(
    "stackway_xds_push_to_ack_seconds",
    "Time from sending an xDS response to Envoy's ACK or NACK of it.",
    ["type"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
)
SNAPSHOT_VERSION = Info("stackway_snapshot_version", "Version of the snapshot the xDS server currently publishes.")


def short(type_url: str) -> str:
    """Metric label of a type URL (its short name, or the message name for types we do not know)."""
    return SHORT_NAMES.get(type_url) or type_url.rsplit(".", 1)[-1]
