"""Hostname intersection between Listeners and Routes (Gateway API v1 semantics).

A leading `*.` label is a suffix match over one or more labels, exactly Envoy's virtual-host wildcard,
so an intersection result can be used verbatim as an Envoy domain.
"""

from __future__ import annotations


def covers(wildcard: str, hostname: str) -> bool:
    """Whether `*.suffix` matches `hostname` (which may itself be a narrower wildcard)."""
    suffix = wildcard[1:]  # ".example.com"
    return hostname.endswith(suffix) and len(hostname) > len(suffix)


def intersect(listener: str | None, route: str) -> str | None:
    """The hostnames both accept, as the more specific of the two, or None when disjoint."""
    if listener is None or listener == route:
        return route
    if listener.startswith("*.") and covers(listener, route):
        return route
    if route.startswith("*.") and covers(route, listener):
        return listener
    return None


def effective_hostnames(listener: str | None, route_hostnames: tuple[str, ...]) -> tuple[str, ...]:
    """The hostnames a route serves through one listener; empty means the route does not fit the listener."""
    if not route_hostnames:
        return (listener or "*",)
    out: list[str] = []
    for hostname in route_hostnames:
        hit = intersect(listener, hostname)
        if hit is not None and hit not in out:
            out.append(hit)
    return tuple(out)
