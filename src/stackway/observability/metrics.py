"""Control-plane metrics (the xDS server keeps its own in stackway.xds_server.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRANSLATE_SECONDS = Histogram(
    "stackway_translate_duration_seconds",
    "Time from a resource change to a built snapshot (parse, translate, build xDS).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
TRANSLATIONS = Counter("stackway_translations_total", "Translations run, by result.", ["result"])
PROBLEMS = Gauge("stackway_resource_problems", "Problems with user resources right now, by severity.", ["severity"])
OBJECTS = Gauge("stackway_resources", "Objects known to the control plane, by kind.", ["kind"])
UPDATES = Counter("stackway_updates_total", "Published updates by kind: full translation or endpoints only.", ["kind"])
