"""OpenStack integration: narrow clients at the edge, pure planners, idempotent actuators."""
